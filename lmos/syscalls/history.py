"""``proc_history`` (``lmos ps --all``): every process the state directory remembers.

``ps`` lists the live process table of the running kernel.  The processes
table in the database also remembers the ones that ended, those a crash left
unfinished and that recovery brought back (:mod:`lmos.syscalls.recovery`: an
audit row "recovered at step N" each time), and those it reported lost, with
the reason.  A user sees their own uid's processes; the operator everyone's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import anyio
from msgspec import Meta

from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

_STEP = re.compile(r"recovered at step (\d+)")


class ProcHistory(Req):
    limit: Annotated[int, Meta(ge=1, le=100_000)] = 200  # the newest processes


class ProcRecord(Resp):
    pid: int
    ppid: int
    uid: int
    app: str
    state: str  # new ... exited, killed, or lost (recovery could not bring it back)
    exit_status: int | None
    error: str
    created: float
    ended: float | None
    recovered: int  # how many times recovery brought it back after a crash
    recovered_at: int | None  # the step of the latest recovery
    steps: int  # rows in its syscall journal (0 once its retention expired)


class ProcHistoryReply(Resp):
    procs: list[ProcRecord]


@syscall(103, "proc_history", ProcHistory, ProcHistoryReply, cap="proc")
async def sys_proc_history(ctx: Ctx, req: ProcHistory) -> ProcHistoryReply:
    """Every process the state directory remembers, newest first: ended, recovered and lost ones too."""
    me, kernel = ctx.proc, ctx.kernel
    journal = kernel.journal
    await journal.flush()
    mine = not kernel.is_operator(me.uid, me.pid)
    rows = await anyio.to_thread.run_sync(
        journal.query,
        "SELECT p.pid, COALESCE(p.ppid, 0), COALESCE(p.uid, -1), COALESCE(p.app, ''), COALESCE(p.state, ''), "
        "p.exit_status, COALESCE(p.error, ''), COALESCE(p.created, 0), p.ended, "
        "(SELECT group_concat(a.cap, '|') FROM audit a WHERE a.pid = p.pid AND a.name = 'recovered'), "
        "(SELECT count(*) FROM sysjournal s WHERE s.pid = p.pid) "
        f"FROM processes p {'WHERE p.uid = ?' if mine else ''} ORDER BY p.pid DESC LIMIT ?",
        (me.uid, req.limit) if mine else (req.limit,))
    out = []
    for r in rows:
        steps = [int(m) for m in _STEP.findall(r[9] or "")]
        live = kernel.procs.get(r[0])  # the table row's state is written when a process ends
        state = live.state.value if live is not None else r[4]
        out.append(ProcRecord(pid=r[0], ppid=r[1], uid=r[2], app=r[3], state=state, exit_status=r[5],
                              error=r[6], created=r[7], ended=r[8], recovered=len(steps),
                              recovered_at=steps[-1] if steps else None, steps=r[10]))
    return ProcHistoryReply(procs=out)
