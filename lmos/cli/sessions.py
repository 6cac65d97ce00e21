"""Session processes: a front end's place in the process table.

Every attached front end (an lmosh, an ``lmos run``, an ``lmos ps``) is a
process in the kernel, spawned by init with the front end's uid: its syscalls
are dispatched as that pid, so the caller's uid applies to everything it does,
its apps are its children (ppid = the session), and ``ps`` shows who is
attached.  The process runs no code of its own in the kernel: its ``main``
waits until the front end goes away.

When a front end goes away (Ctrl-D, a closed terminal, a killed client) its
session hangs up like a Unix terminal: the processes it started are killed and
reaped, then the session process ends.  Other sessions' work is untouched.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio

from lmos.errors import SyscallError
from lmos.kernel.kernel import INIT_PID
from lmos.kernel.process import Signal
from lmos.syscalls.table import AppSpec
from lmos.system import Kernel

KINDS = ("lmosh", "lmos", "lmos.connect")  # what a session shows as in ps (its app name)


class SessionApps:
    """The session apps of one kernel and the events that end each session."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.ends: dict[int, anyio.Event] = {}
        for kind in KINDS:
            k.programs.register(AppSpec(kind, self._main, frozenset({"*"}),
                                        description="a front end attached to the kernel (session)"))

    async def _main(self, sys: Any, argv: list[str]) -> int:
        ev = self.ends.setdefault(sys.pid, anyio.Event())
        if argv[:1] != ["session"]:  # spawned by hand (run lmosh): nothing to attach to
            self.ends.pop(sys.pid, None)
            return 0
        await ev.wait()
        return 0

    async def open(self, uid: int, kind: str) -> int:
        """Start a session process for a front end of ``uid``; its pid."""
        app = kind if kind in KINDS else "lmos"
        pid = await self.k.spawn(app, ["session"], uid=uid)
        self.ends.setdefault(pid, anyio.Event())
        return pid

    def is_session(self, pid: int) -> bool:
        return pid in self.ends

    async def close(self, pid: int) -> None:
        """Hang up: kill and reap the session's children, end the session, reap it (shielded)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            core, sys = self.k.core, self.k.sys
            if core is None or sys is None:
                return
            p = core.procs.get(pid)
            if p is not None:
                for child in list(p.children):
                    with contextlib.suppress(SyscallError):
                        c = core.procs.get(child)
                        if c is not None and not c.ended:
                            core.signal(child, Signal.KILL)
                        await sys.call(pid, "wait", {"pid": child, "timeout": 10.0})
            ev = self.ends.pop(pid, None)
            if ev is not None:
                ev.set()
            with contextlib.suppress(SyscallError):
                if pid in core.procs:
                    await sys.call(INIT_PID, "wait", {"pid": pid, "timeout": 10.0})

    def running(self) -> list[Any]:
        """Live processes that are not init and not sessions: the kernel's work."""
        core = self.k.core
        if core is None:
            return []
        return [p for p in core.procs.values()
                if p.pid != INIT_PID and not p.ended and p.pid not in self.ends]

