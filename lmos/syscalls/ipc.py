"""IPC syscalls: named bounded channels between processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from lmos.errors import Errno, SyscallError
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import ChanClose, ChanOpen, ChanReply, Empty, Recv, RecvReply, Send

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

MAX_MESSAGE = 1 << 20


@syscall(30, "chan_open", ChanOpen, ChanReply, cap="ipc")
async def sys_chan_open(ctx: Ctx, req: ChanOpen) -> ChanReply:
    """Open (creating if needed) the channel ``name``; returns its id."""
    ch = ctx.kernel.channels.open(req.name, ctx.proc.pid, ctx.proc.uid, req.capacity)
    if ch.owner_uid != ctx.proc.uid and ctx.proc.uid != 0:
        ch.openers.discard(ctx.proc.pid)
        raise SyscallError(Errno.EACCES, f"channel {req.name!r} belongs to another user")
    return ChanReply(chan=ch.chan_id)


@syscall(31, "send", Send, Empty, cap="ipc", blocking=True)
async def sys_send(ctx: Ctx, req: Send) -> Empty:
    """Send a JSON value; blocks while the channel is full (``timeout``: ETIMEDOUT)."""
    if len(msgspec.json.encode(req.data)) > MAX_MESSAGE:
        raise SyscallError(Errno.E2BIG, f"message larger than {MAX_MESSAGE} bytes")
    ch = ctx.kernel.channels.get(req.chan, ctx.proc.pid)
    async with ctx.kernel.blocking(ctx.proc, "send"):
        await ch.send(req.data, req.timeout)
    return Empty()


@syscall(32, "recv", Recv, RecvReply, cap="ipc", blocking=True)
async def sys_recv(ctx: Ctx, req: Recv) -> RecvReply:
    """Receive the next value; blocks while the channel is empty (``timeout``: ETIMEDOUT)."""
    ch = ctx.kernel.channels.get(req.chan, ctx.proc.pid)
    async with ctx.kernel.blocking(ctx.proc, "recv"):
        data = await ch.recv(req.timeout)
    return RecvReply(data=data)


@syscall(33, "chan_close", ChanClose, Empty, cap="ipc")
async def sys_chan_close(ctx: Ctx, req: ChanClose) -> Empty:
    """Close a channel for everyone: blocked senders and receivers get EPIPE."""
    ctx.kernel.channels.close(req.chan, ctx.proc.pid)
    return Empty()
