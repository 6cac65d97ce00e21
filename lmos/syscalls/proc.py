"""Process syscalls: getpid, exit, spawn, wait, kill, ps, sleep, time, trace."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel.kernel import INIT_PID, ProcessExit
from lmos.kernel.process import Process, Signal
from lmos.syscalls.access import check_observe, may_observe
from lmos.syscalls.audit import decision_for
from lmos.syscalls.caps import subset
from lmos.syscalls.confirm import taint
from lmos.syscalls.mem import add_spawn_pins, spawn_pins
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import (
    Audit,
    Empty,
    Exit,
    GetPid,
    Kill,
    PidInfo,
    ProcInfo,
    Ps,
    PsReply,
    Sleep,
    Spawn,
    SpawnReply,
    Time,
    TimeReply,
    Trace,
    TraceReply,
    Usage,
    Wait,
    WaitReply,
)

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx


def usage(p: Process) -> Usage:
    s = p.stats
    return Usage(prompt_tokens=s.prompt_tokens, completion_tokens=s.generated_tokens, syscalls=s.syscalls,
                 wall_seconds=s.wall, ready_seconds=s.time_ready, running_seconds=s.time_running,
                 blocked_seconds=s.time_blocked)


@syscall(0, "getpid", GetPid, PidInfo)
async def sys_getpid(ctx: Ctx, req: GetPid) -> PidInfo:
    """The caller's pid, parent pid and uid."""
    p = ctx.proc
    return PidInfo(pid=p.pid, ppid=p.ppid, uid=p.uid)


@syscall(1, "exit", Exit, Empty)
async def sys_exit(ctx: Ctx, req: Exit) -> Empty:
    """End the calling process with ``status`` and an optional JSON ``result``."""
    if ctx.proc.pid == INIT_PID:
        raise SyscallError(Errno.EPERM, "init cannot exit")
    raise ProcessExit(req.status, req.result)


@syscall(2, "spawn", Spawn, SpawnReply, cap="spawn")
async def sys_spawn(ctx: Ctx, req: Spawn) -> SpawnReply:
    """Start app ``app`` as a child process; returns its pid.

    The child's capabilities are ``caps`` or the app's own, and must all be
    granted by the caller's (no escalation; a ``net:`` pattern must be provably
    within one of the caller's).  The child runs as the caller's uid; init's
    children (the embedding API) as the host's (``KernelCore.host_uid``, never
    root by accident).  Only root may choose another uid.  Priority, weight,
    token quota and wall time are clamped to the caller's (see ``KernelCore.spawn``).
    ``pin``: texts the child's paged context starts with, pinned (a system prompt); ENOSPC,
    before any process exists, when they do not fit its model's window.
    """
    parent = ctx.proc
    spec = ctx.sys.programs.take(req.app, parent.pid)
    caps = frozenset(req.caps) if req.caps is not None else spec.caps
    if "origin" in spec.extra and subset(caps, spec.caps):
        # an app from the app store (built-in, installed or loaded) runs with what it was granted, never more
        raise SyscallError(Errno.EPERM, f"{req.app} was granted only: {', '.join(sorted(spec.caps))}")
    missing = subset(caps, parent.caps)
    if missing:
        lacking = ", ".join(sorted(missing))
        raise SyscallError(Errno.EPERM, f"cannot grant capabilities the caller lacks: {lacking}")
    uid = parent.uid  # init's is the host's (KernelCore.host_uid): never root by accident
    if req.uid is not None and req.uid != uid:
        if parent.uid != 0 and parent.pid != INIT_PID:
            raise SyscallError(Errno.EPERM, "only root may spawn as another uid")
        uid = req.uid
    sys = ctx.sys
    main = spec.main

    async def entry(proc: Process) -> Any:
        return await main(sys.client(proc.pid), proc.argv)

    quotas = [q for q in (req.token_quota, spec.token_quota) if q is not None]
    quota = min(quotas) if quotas else None  # asking for more than the app's own quota gets the app's
    model = req.model or spec.model
    pins = await spawn_pins(ctx, model, req.pin) if req.pin else []  # ENOSPC here: no process made
    child = ctx.kernel.spawn(entry, parent=parent, app=spec.name, argv=list(req.argv),
                             model=model, uid=uid, caps=caps, priority=req.priority,
                             weight=req.weight, token_quota=quota, max_children=spec.max_children,
                             wall_seconds=spec.wall_seconds, spawn_pages=len(pins))
    child.tainted = parent.tainted  # untrusted content in the parent's context may steer the child
    if req.stream:
        from lmos.syscalls.io import subscribe

        subscribe(sys, parent.pid, child.pid)
    if pins:
        try:
            # (no await since the spawn: the child has not run, and its paged syscalls wait for these)
            await add_spawn_pins(ctx, child, pins)
        except BaseException:
            child.adopted = True  # the spawn failed: nobody waits for it, it is reaped as it ends
            ctx.kernel.signal(child.pid, Signal.KILL)
            raise
    return SpawnReply(pid=child.pid)


@syscall(3, "wait", Wait, WaitReply, blocking=True)
async def sys_wait(ctx: Ctx, req: Wait) -> WaitReply:
    """Wait for a child (``pid`` or any) to end, reap it, return its status and usage.

    The result of a tainted child (or one of another uid) taints the caller.
    """
    async with ctx.kernel.blocking(ctx.proc, "wait"):
        child = await ctx.kernel.wait(ctx.proc, req.pid, req.timeout)
    if child.tainted or child.uid != ctx.proc.uid:
        taint(ctx.proc)  # its result may carry what it read (or another user's words) to the parent
    return WaitReply(pid=child.pid, state=child.state.value, exit_status=child.exit_status or 0,
                     result=child.result, error=child.error, errno=child.errno, usage=usage(child))


def parse_signal(value: str | int) -> Signal:
    try:
        if isinstance(value, int):
            return Signal(value)
        name = value.upper().removeprefix("SIG")
        return Signal[name]
    except (KeyError, ValueError):
        raise SyscallError(Errno.EINVAL, f"unknown signal {value!r} (TERM, KILL, INT, STOP, CONT)") from None


@syscall(4, "kill", Kill, Empty)
async def sys_kill(ctx: Ctx, req: Kill) -> Empty:
    """Send a signal (TERM, KILL, INT, STOP, CONT) to a process.

    Always to the caller's own descendants; with ``proc``, to any process of the
    same uid (uid 0 with ``proc``: any).
    """
    sig = parse_signal(req.signal)
    target = ctx.kernel.get(req.pid)
    check_observe(ctx.kernel, ctx.proc, target, "kill")
    ctx.kernel.signal(req.pid, sig)
    return Empty()


@syscall(5, "ps", Ps, PsReply)
async def sys_ps(ctx: Ctx, req: Ps) -> PsReply:
    """The processes the caller may see (zombies included), in pid order.

    Without ``proc``: itself and its descendants.  With it: every process of its
    uid (uid 0: all).  Other users' processes, their argv included, are not listed.
    """
    me, kernel = ctx.proc, ctx.kernel
    out = [ProcInfo(pid=p.pid, ppid=p.ppid, uid=p.uid, app=p.app, argv=p.argv, model=p.model,
                    state=p.state.value, priority=p.priority, weight=p.weight, exit_status=p.exit_status,
                    blocked_on=p.blocked_on, usage=usage(p))
           for p in sorted(kernel.live(), key=lambda q: q.pid) if may_observe(kernel, me, p.pid, p.uid)]
    return PsReply(procs=out)


@syscall(6, "sleep", Sleep, Empty, blocking=True)
async def sys_sleep(ctx: Ctx, req: Sleep) -> Empty:
    """Block for ``seconds`` (interruptible by SIGINT: EINTR)."""
    async with ctx.kernel.blocking(ctx.proc, "sleep"):
        await anyio.sleep(req.seconds)
    return Empty()


@syscall(7, "time", Time, TimeReply)
async def sys_time(ctx: Ctx, req: Time) -> TimeReply:
    """Wall-clock time (Unix seconds) and a monotonic clock."""
    return TimeReply(wall=time.time(), monotonic=time.monotonic())


@syscall(13, "audit", Audit, Empty)
async def sys_audit(ctx: Ctx, req: Audit) -> Empty:
    """Record an event of the caller's program in the audit log, named ``app.<its app>.<event>``.

    Kernel and sandbox events cannot be written this way (EPERM): see :mod:`lmos.syscalls.audit`.
    """
    p = ctx.proc
    decision = decision_for(p.app, req.event)
    errno = int(Errno.EPERM) if decision == "violation" else 0
    ctx.kernel.journal.post(
        "INSERT INTO audit(ts, pid, uid, name, cap, decision, errno, duration_us, digest) "
        "VALUES(?,?,?,?,?,?,?,?,?)", (time.time(), p.pid, p.uid, req.event, req.detail[:500], decision,
                                      errno, 0, ""))
    return Empty()


@syscall(8, "trace", Trace, TraceReply)
async def sys_trace(ctx: Ctx, req: Trace) -> TraceReply:
    """The recent syscall trace of a process: the caller's own, or one it may see as in ``ps``.

    A process that was reaped is read back from the audit table, under the same
    owner check (its uid and parent from the processes table).
    """
    me = ctx.proc
    pid = me.pid if req.pid is None else req.pid
    target = ctx.kernel.procs.get(pid)
    if target is not None:
        check_observe(ctx.kernel, me, target, "trace")
        return TraceReply(entries=ctx.sys.trace(pid, req.limit))
    found = await ctx.sys.audited(pid, req.limit)
    if found is None:
        raise SyscallError(Errno.ESRCH, f"no such process {pid}")
    entries, uid, ppid = found
    if ppid != me.pid and not may_observe(ctx.kernel, me, pid, uid):
        raise SyscallError(Errno.EPERM, f"process {pid} belongs to another user" if uid != me.uid
                           else f"trace of process {pid} needs capability 'proc'")
    return TraceReply(entries=entries)
