"""Reading the audit log back: ``audit_query`` (``lmos audit``).

Every syscall is a row of the audit table (written by the dispatcher, see
:mod:`lmos.syscalls.table`), so "who did what, and what was refused" is a
query, not a log to grep.  Rows are joined with the processes table for the
app each pid ran, because a pid alone means nothing once the process is gone.

Who sees what follows ``ps`` and ``trace`` (:mod:`lmos.syscalls.access`):
the ``proc`` capability is needed to look beyond one's own process at all;
with it a user sees the rows of their own uid only (asking for another uid
is EPERM, not an empty answer that would look like "nothing happened"), and
the operator (init, root, or the owner of the state directory: ``is_operator``)
sees every row, those of unknown pids (uid -1) included.  The query is itself
a syscall, so it is audited like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Pid, Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

DENIED = ("deny", "violation")  # a capability refused (EPERM), a sandbox guard tripped


class AuditQuery(Req):
    pid: Pid | None = None
    uid: Annotated[int, Meta(ge=-1, le=2**32)] | None = None  # None: the caller's (the operator: all)
    syscall: Annotated[str, Meta(min_length=1, max_length=160)] | None = None  # a name or a glob: fs_*
    denied: bool = False  # only refusals: capability denials and sandbox violations
    since: float | None = None  # Unix seconds
    until: float | None = None
    limit: Annotated[int, Meta(ge=1, le=100_000)] = 100  # the newest rows that match, oldest first


class AuditRow(Resp):
    id: int
    ts: float
    pid: int
    uid: int
    app: str  # what the pid ran ("" when the processes table never saw it)
    name: str  # the syscall, or an app's or the sandbox's event
    cap: str  # the capability checked ("" when none); an app event's detail
    decision: str  # allow, deny, error, app, violation
    errno: int
    errname: str
    duration_us: int
    digest: str


class AuditReply(Resp):
    rows: list[AuditRow]
    more: bool  # older rows matched beyond ``limit``


def _errname(n: int) -> str:
    try:
        return Errno(n).name if n else ""
    except ValueError:
        return str(n)


@syscall(14, "audit_query", AuditQuery, AuditReply, cap="proc")
async def sys_audit_query(ctx: Ctx, req: AuditQuery) -> AuditReply:
    """Rows of the audit log, filtered by pid, uid, syscall name (glob), refusals and time.

    A user sees only their own uid's rows; the operator sees all (see the module doc).
    """
    me, kernel = ctx.proc, ctx.kernel
    uid = req.uid
    if not kernel.is_operator(me.uid, me.pid):
        if uid is not None and uid != me.uid:
            raise SyscallError(Errno.EPERM, f"the audit rows of uid {uid} are the operator's to read "
                                            f"(you are uid {me.uid})")
        uid = me.uid
    where, args = ["1"], list[Any]()
    for cond, value in (("a.pid = ?", req.pid), ("a.uid = ?", uid), ("a.name GLOB ?", req.syscall),
                        ("a.ts >= ?", req.since), ("a.ts < ?", req.until)):
        if value is not None:
            where.append(cond)
            args.append(value)
    if req.denied:
        where.append(f"a.decision IN ({','.join('?' * len(DENIED))})")
        args += DENIED
    journal = kernel.journal
    await journal.flush()  # rows are queued, then committed in batches: see every call up to this one
    rows = await journal.aquery(
        "SELECT a.id, a.ts, a.pid, a.uid, COALESCE(p.app, CASE a.pid WHEN 1 THEN 'init' ELSE '' END), "
        "a.name, COALESCE(a.cap, ''), a.decision, a.errno, a.duration_us, COALESCE(a.digest, '') "
        f"FROM audit a LEFT JOIN processes p ON p.pid = a.pid WHERE {' AND '.join(where)} "
        "ORDER BY a.id DESC LIMIT ?", (*args, req.limit + 1))
    more = len(rows) > req.limit
    out = [AuditRow(id=r[0], ts=r[1], pid=r[2], uid=r[3], app=r[4], name=r[5], cap=r[6], decision=r[7] or "",
                    errno=r[8] or 0, errname=_errname(r[8] or 0), duration_us=r[9] or 0, digest=r[10])
           for r in reversed(rows[:req.limit])]
    return AuditReply(rows=out, more=more)
