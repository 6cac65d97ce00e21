"""Signals: KILL/TERM as a cancellation, STOP/CONT, INT as EINTR in a blocking syscall.

The kernel's ``signal``, ``checkpoint`` and ``blocking`` methods are these
functions on its process table (see :class:`lmos.kernel.kernel.KernelCore`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel.process import Process, Signal, State

if TYPE_CHECKING:
    from lmos.kernel.kernel import KernelCore

INIT_PID = 1  # as lmos.kernel.kernel.INIT_PID (the kernel imports this module)


def deliver(core: KernelCore, pid: int, sig: Signal) -> None:
    """Send ``sig`` to ``pid``: KILL/TERM cancel, STOP/CONT park and resume, INT interrupts a block."""
    p = core.get(pid)
    if pid == INIT_PID:
        raise SyscallError(Errno.EPERM, "cannot signal init")
    if p.ended:
        return
    if sig in (Signal.KILL, Signal.TERM):
        core._kill.setdefault(pid, sig)
        scope = core._scopes.get(pid)
        if scope is not None:
            scope.cancel()
    elif sig is Signal.STOP:
        if p.state is not State.STOPPED:
            p.stopped_from = p.state
            p.set_state(State.STOPPED)
            core._cont[pid] = anyio.Event()
            sched = core.schedulers.get(p.model)
            if sched is not None:
                sched.running.discard(pid)
    elif sig is Signal.CONT:
        if p.state is State.STOPPED:
            back = p.stopped_from or State.RUNNING
            if back is State.RUNNING and p.request is not None:
                back = State.READY
            p.set_state(back)
            p.stopped_from = None
            ev = core._cont.pop(pid, None)
            if ev is not None:
                ev.set()
            sched = core.schedulers.get(p.model)
            if sched is not None:
                sched.kick()
    elif sig is Signal.INT:
        scope = core._intr.get(pid)
        if scope is not None:
            scope.cancel()
        else:
            p.pending_signals.append(sig)
    core.events.publish(pid, kind="state", state=p.state.value, data=f"SIG{sig.name}")

async def checkpoint(core: KernelCore, p: Process) -> None:
    """Syscall entry: wait while STOPPED; deliver a pending INT as EINTR."""
    while p.state is State.STOPPED:
        ev = core._cont.get(p.pid)
        if ev is None:
            break
        await ev.wait()
    if p.pending_signals:
        sig = p.pending_signals.pop(0)
        raise SyscallError(Errno.EINTR, f"interrupted by SIG{sig.name}")

@asynccontextmanager
async def blocking(core: KernelCore, p: Process, name: str) -> AsyncIterator[None]:
    """Run the body as a BLOCKED, interruptible (SIGINT -> EINTR) syscall."""
    await core.checkpoint(p)
    if p.pid == INIT_PID:
        yield
        return
    sched = core.schedulers.get(p.model)
    p.set_state(State.BLOCKED)
    p.blocked_on = name
    if sched is not None and p.has_seq:
        sched.kv.on_block(p.pid, name)
        sched.kick()
    t0 = time.monotonic()
    interrupted = False
    try:
        with anyio.CancelScope() as scope:
            core._intr[p.pid] = scope
            yield
        interrupted = scope.cancelled_caught
    finally:
        core._intr.pop(p.pid, None)
        p.blocked_on = ""
        if sched is not None and p.has_seq:
            sched.kv.on_unblock(p.pid, name, time.monotonic() - t0)
        if p.state is State.BLOCKED:
            p.set_state(State.RUNNING)
        elif p.state is State.STOPPED:
            p.stopped_from = State.RUNNING
    if interrupted:
        raise SyscallError(Errno.EINTR, f"{name} interrupted by SIGINT")
