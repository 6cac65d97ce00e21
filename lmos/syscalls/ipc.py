"""IPC syscalls: named bounded channels between processes.

Names live in a namespace per uid, so another user can neither open nor
pre-create a name you use.  A process that gathers answers from its children
opens a *private* channel instead: the kernel picks an unguessable name and
only the creator and its descendants may open it (see :mod:`lmos.kernel.ipc`).
A message from another uid, or from a tainted process, taints its receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from lmos.errors import Errno, SyscallError
from lmos.syscalls.confirm import taint
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import ChanClose, ChanOpen, ChanReply, Empty, Recv, RecvReply, Send

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

MAX_MESSAGE = 1 << 20


@dataclass(frozen=True, slots=True)
class Sent:
    """A queued message and where it came from: a message from another uid, or from a
    process that read untrusted content, taints its receiver (:mod:`lmos.syscalls.confirm`)."""

    data: Any
    uid: int
    tainted: bool


@syscall(30, "chan_open", ChanOpen, ChanReply, cap="ipc")
async def sys_chan_open(ctx: Ctx, req: ChanOpen) -> ChanReply:
    """Open the channel ``name`` of the caller's uid (creating it if needed); returns its id and name.

    ``private``: create a new channel named ``name.<random>`` instead, which only
    the caller and its descendants may open (by that name).  A name that a
    private channel holds opens it, for those processes only (EACCES for others).
    A uid may hold a limited number of channels (EAGAIN past it).
    """
    me = ctx.proc
    channels = ctx.kernel.channels
    if req.private:
        ch = channels.open_private(req.name, me.pid, me.uid, req.capacity)
        return ChanReply(chan=ch.chan_id, name=ch.name)
    held = channels.find_private(req.name)
    if held is not None:
        if me.pid != held.owner_pid and not ctx.kernel.descends(me.pid, held.owner_pid):
            raise SyscallError(Errno.EACCES, f"channel {req.name!r} is private to process {held.owner_pid}")
        channels.attach(held, me.pid)
        return ChanReply(chan=held.chan_id, name=held.name)
    ch = channels.open(req.name, me.pid, me.uid, req.capacity)
    return ChanReply(chan=ch.chan_id, name=ch.name)


@syscall(31, "send", Send, Empty, cap="ipc", blocking=True)
async def sys_send(ctx: Ctx, req: Send) -> Empty:
    """Send a JSON value; blocks while the channel is full (``timeout``: ETIMEDOUT; 0: EAGAIN at once).

    A channel holds a bounded number of messages and bytes; a uid's channels
    together hold a bounded number of bytes (EAGAIN past it).
    """
    size = len(msgspec.json.encode(req.data))
    if size > MAX_MESSAGE:
        raise SyscallError(Errno.E2BIG, f"message larger than {MAX_MESSAGE} bytes")
    ch = ctx.kernel.channels.get(req.chan, ctx.proc.pid)
    async with ctx.kernel.blocking(ctx.proc, "send"):
        await ch.send(Sent(req.data, ctx.proc.uid, ctx.proc.tainted), req.timeout, size,
                      ctx.kernel.channels.bytes_per_uid)
    return Empty()


@syscall(32, "recv", Recv, RecvReply, cap="ipc", blocking=True)
async def sys_recv(ctx: Ctx, req: Recv) -> RecvReply:
    """Receive the next value; blocks while the channel is empty (``timeout``: ETIMEDOUT)."""
    ch = ctx.kernel.channels.get(req.chan, ctx.proc.pid)
    async with ctx.kernel.blocking(ctx.proc, "recv"):
        item = await ch.recv(req.timeout)
    if not isinstance(item, Sent):
        return RecvReply(data=item)
    if item.tainted or item.uid != ctx.proc.uid:
        taint(ctx.proc)  # a message is data someone else (or something untrusted) chose
    return RecvReply(data=item.data)


@syscall(33, "chan_close", ChanClose, Empty, cap="ipc")
async def sys_chan_close(ctx: Ctx, req: ChanClose) -> Empty:
    """Close a channel for everyone: blocked senders and receivers get EPIPE."""
    ctx.kernel.channels.close(req.chan, ctx.proc.pid)
    return Empty()
