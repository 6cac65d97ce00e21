"""``checkpoint`` and ``restore``: compact a process's syscall journal (docs/durability.md).

A long-lived program (an agent that runs for hours) would replay its whole
history after a crash.  Instead it saves what it needs to go on with
``checkpoint(state)`` (JSON) at a point where it would start over, for example
at the end of each turn, and begins with ``restore()``::

    state = (await sys.call("restore")).state or {"turn": 0}
    while ...:
        ...                                    # one turn: generations, tools
        await sys.call("checkpoint", state=state)

``checkpoint`` journals the state together with the process's context tokens
(what the model has seen so far), and the journal before it is deleted: the
checkpoint is the process's new start.  On recovery
(:mod:`lmos.syscalls.recovery`) the program runs from its start again, its
``restore`` is answered with the latest checkpoint's state and the context goes
back to the driver from the checkpoint, and the steps after the checkpoint are
replayed as usual, so recovery takes time proportional to one turn.
``restore`` in a process that never checkpointed gives ``state=None``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from lmos.errors import Errno, SyscallError
from lmos.kernel.sysjournal import Entry
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

MAX_STATE = 1 << 20  # bytes of JSON: a checkpoint is a place to start from, not a store


class Checkpoint(Req):
    state: Any = None


class CheckpointReply(Resp):
    bytes: int  # the state's size as JSON


class Restore(Req):
    pass


class RestoreReply(Resp):
    state: Any = None  # the latest checkpoint's state; None if the process never checkpointed
    step: int | None = None  # the journal step of that checkpoint


@syscall(101, "checkpoint", Checkpoint, CheckpointReply)
async def sys_checkpoint(ctx: Ctx, req: Checkpoint) -> CheckpointReply:
    """Save ``state`` as the process's new start: its journal before this step is deleted, and
    recovery after a crash answers ``restore`` with it (journaling off: only the size is checked)."""
    n = len(msgspec.json.encode(req.state))
    if n > MAX_STATE:
        raise SyscallError(Errno.E2BIG, f"checkpoint state of {n} bytes; the limit is {MAX_STATE}")
    return CheckpointReply(bytes=n)


@syscall(102, "restore", Restore, RestoreReply)
async def sys_restore(ctx: Ctx, req: Restore) -> RestoreReply:
    """The state of this process's latest checkpoint (None if it never made one)."""
    journal = ctx.kernel.journal
    rows = await anyio.to_thread.run_sync(
        journal.query, "SELECT step, request FROM sysjournal WHERE pid=? AND name='checkpoint' AND errno=0 "
        "ORDER BY step DESC LIMIT 1", (ctx.proc.pid,))
    if not rows:
        return RestoreReply()
    return RestoreReply(state=json.loads(rows[0][1]).get("state"), step=int(rows[0][0]))


def starts_at_checkpoint(entries: list[Entry]) -> bool:
    """A compacted journal: it begins with a checkpoint, the program's first call must be restore."""
    return bool(entries) and entries[0].name == "checkpoint" and entries[0].errno == 0 and entries[0].step > 0


def restore_reply(e: Entry) -> RestoreReply:
    return RestoreReply(state=json.loads(e.request).get("state"), step=e.step)
