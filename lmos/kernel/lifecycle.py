"""How a process ends and leaves the table, and who may start one: the kernel's process lifecycle.

Split from :mod:`lmos.kernel.kernel` (which calls these from ``spawn``, ``_run`` and ``wait``):
admission checks the per-uid and table limits, ``finish`` frees what a process held (its
driver sequence, channels, pages) and records its end, ``reap`` drops it from the table.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel.process import Process, State

if TYPE_CHECKING:
    from lmos.kernel.kernel import KernelCore

INIT_PID = 1  # init, the host program: orphans are adopted by it


def admit(core: KernelCore, uid: int) -> None:
    """May ``uid`` have one more process?  EAGAIN if not (zombies count until reaped).

    Per-uid limits come before the global one.  The last ``procs_reserve``
    slots of the table (at most a quarter of it) are kept for uids with fewer than
    ``procs_reserved_per_uid`` processes, so users who together fill the rest
    of the table cannot lock a third one out.
    """
    cfg = core.config
    mine = core._per_uid.get(uid, 0)
    if mine >= cfg.max_procs_per_uid:
        raise SyscallError(Errno.EAGAIN, f"uid {uid} has too many processes ({cfg.max_procs_per_uid})")
    used = len(core.procs) - 1
    reserve = min(cfg.procs_reserve, cfg.max_procs // 4)
    if mine >= cfg.procs_reserved_per_uid and used >= cfg.max_procs - reserve:
        raise SyscallError(Errno.EAGAIN, f"uid {uid} has used its share of the process table "
                                         f"({used} of {cfg.max_procs} slots in use)")
    if used >= cfg.max_procs:
        raise SyscallError(Errno.EAGAIN, f"process table full ({cfg.max_procs})")


async def finish(core: KernelCore, p: Process, status: int, error: str | None, result: Any, *,
                 killed: bool) -> None:
    """``p``'s program is over: free what it held, record its end, reap it unless a parent waits."""
    core._scopes.pop(p.pid, None)
    core._intr.pop(p.pid, None)
    cont = core._cont.pop(p.pid, None)
    if cont is not None:
        cont.set()
    sched = core.schedulers.get(p.model)
    if sched is not None:
        sched.withdraw(p)
        if p.request is not None:
            p.request.fail(SyscallError(Errno.ESRCH, "process ended"))
            p.request = None
        if p.has_seq:
            async with sched.lock:
                sched.driver.free(p.pid)
            sched.kv.forget(p.pid)
            p.has_seq = False
        sched.kick()
    core.channels.release(p.pid)
    await core.memory.release(p.pid)  # its pages leave RAM, and the store unless kept
    try:
        stored = json.dumps(result)  # (once: the journal row below stores this text)
    except (TypeError, ValueError):
        result = repr(result)
        stored = json.dumps(result)
    p.result, p.error, p.exit_status = result, error, status
    p.set_state(State.KILLED if killed else State.EXITED)
    for cpid in list(p.children):  # orphans go to init, which reaps them as they end
        child = core.procs.get(cpid)
        if child is None:
            continue
        child.ppid = INIT_PID
        child.adopted = True
        if child.ended:
            reap(core, child)
        else:
            core.init.children.add(cpid)
    p.children.clear()
    core.events.publish(p.pid, kind="exit", exit_status=status, state=p.state.value, data=result)
    core.events.close(p.pid)
    core.journal.post("UPDATE processes SET state=?, exit_status=?, error=?, ended=?, result=? "
                      "WHERE pid=?",
                      (p.state.value, status, error, time.time(), stored, p.pid))
    core._exited.set()
    core._exited = anyio.Event()
    ended = core._exit_events.pop(p.pid, None)
    if ended is not None:
        ended.set()
    parent = core.procs.get(p.ppid)
    if parent is None or parent.ended or p.adopted:
        reap(core, p)


def reap(core: KernelCore, p: Process) -> None:
    """Drop an ended process from the table: its slot, its uid's count, what others kept for it."""
    if p.reaped:
        return
    p.reaped = True
    if core.procs.pop(p.pid, None) is not None:
        core._per_uid[p.uid] = core._per_uid.get(p.uid, 1) - 1
    parent = core.procs.get(p.ppid)
    if parent is not None:
        parent.children.discard(p.pid)
    if core.sysjournal is not None:
        core.sysjournal.reaped(p.pid, p.uid)
    for hook in core.on_reap:
        hook(p)
