"""Run untrusted Python in isolated worker processes: the ``Sandbox`` pool and ``execute``.

Code that arrives with an app or is written by a user never runs in the
kernel's process or one of its threads.  It runs in a worker process
(``sandbox_worker.py``) compiled by RestrictedPython under the guards of
``sandbox_policy.py``, with rlimits, no-new-privileges, an unprivileged uid
and, where the system allows, no network.  Behind the restricted language is
a second wall (``sandbox_wall.py``): the worker can open no file outside the
standard library (Landlock, or an empty mount namespace) and make no socket,
so a program that escaped still cannot read the user's files, the state
database or the kernel's secret, nor attach to the control socket.  Where the
system offers no file wall, workers run code only if the operator allowed
weak isolation (``[sandbox]`` in the config, applied by :func:`configure`).

This module is the host side: it keeps a pool of warm workers, sends each run
as one JSON line, serves the syscalls the program makes while it runs
(awaiting the kernel's callback, which checks capabilities), enforces the wall
clock by killing the worker's process group, and turns every way a program can
fail into a :class:`Result`.

The request and result formats and the types callers use (``Limits``,
``Result``, ``Extras``) live in ``sandbox_protocol.py``.  ``Extras`` is what
code apps (``lmos.userland.codeapp``) add to a run: the program's own modules,
the ``ask``/``agent`` helpers (lmos's agent loop inside the worker, over the
program's own syscalls; workers started with ``agent=True``), printed output
streamed as ``write`` syscalls, and just the ``result`` reported back.  None
of it widens what a program can reach: modules are compiled under the same
policy and imported as read-only namespaces, and only plain JSON data crosses
between a program and the helpers.

Nothing here blocks the event loop: pipe I/O goes through anyio's process
streams.  A worker is reused only after a run that ended normally; one that
died, timed out, ran out of memory or broke the protocol is killed and
replaced, so no state leaks from one run into the next.  Workers are treated as
hostile: every message is size-bounded and schema-checked.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import anyio
import msgspec

from lmos.config import SandboxConfig
from lmos.errors import Errno, SyscallError
from lmos.userland.sandbox_protocol import (
    MAX_SOURCE,
    MIN_MEMORY,
    SPAWN_TIMEOUT,
    VIOLATION_MARKS,
    WORKER_SCRIPT,
    Extras,
    Isolation,
    Limits,
    Result,
    encode_request,
    restricted_python_path,
    violation,
    violations,
)
from lmos.userland.sandbox_run import SyscallHandler, _ProtocolError, _Run, _Worker
from lmos.userland.sandbox_slots import worker_slot
from lmos.userland.sandbox_wall import WALLS

__all__ = [
    "MAX_SOURCE",
    "MIN_MEMORY",
    "VIOLATION_MARKS",
    "WORKER_SCRIPT",
    "Extras",
    "Isolation",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxConfig",
    "SyscallHandler",
    "configure",
    "execute",
    "violation",
    "violations",
]

WEAK = ("the sandbox worker has no file wall on this system (no Landlock, no mount namespaces), so a "
        "program that escaped could read this user's files; set [sandbox] allow_weak_isolation = true "
        "to run untrusted code anyway")
_settings = SandboxConfig()


def configure(settings: SandboxConfig) -> None:
    """Apply a kernel's ``[sandbox]`` settings to the sandboxes of this process (the
    kernel calls this when it starts; ``execute`` and pools without explicit arguments
    follow them)."""
    global _settings
    _settings = settings


def settings() -> SandboxConfig:
    """The ``[sandbox]`` settings in force in this process."""
    return _settings


async def _spawn(ceiling: Limits, agent: bool = False, wall: str = "auto",
                 allow_weak: bool | None = None) -> _Worker:
    """Start a worker and read its ``ready`` report; one without a file wall is refused
    (EPERM) unless weak isolation is allowed (``allow_weak`` None: the settings')."""
    config = {"cpu_ceiling": ceiling.cpu_seconds, "cpu_lifetime": max(300.0, 20 * ceiling.cpu_seconds),
              "memory_ceiling": ceiling.memory_bytes, "agent": agent, "wall": wall}
    cmd = [sys.executable, "-I", "-S", "-B", "-X", "utf8", str(WORKER_SCRIPT), restricted_python_path(),
           msgspec.json.encode(config).decode()]
    stderr = None if os.environ.get("LMOS_SANDBOX_DEBUG") else subprocess.DEVNULL
    process = await anyio.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                       env={}, cwd="/", start_new_session=True)
    worker = _Worker(process)
    try:
        with anyio.fail_after(SPAWN_TIMEOUT):
            line = await worker.recv(1 << 16)
        if line is None:
            raise SyscallError(Errno.EIO, "sandbox worker exited during startup")
        ready = msgspec.json.decode(line)
        if type(ready) is not dict or ready.pop("op", None) != "ready":
            raise SyscallError(Errno.EIO, "sandbox worker sent no ready message")
        worker.info = msgspec.convert(ready, Isolation)
        worker.cpu = worker.info.cpu
        if worker.info.weak and not (_settings.allow_weak_isolation if allow_weak is None else allow_weak):
            raise SyscallError(Errno.EPERM, WEAK)
    except BaseException as exc:
        await worker.kill()
        if isinstance(exc, (msgspec.MsgspecError, TimeoutError, _ProtocolError)):
            raise SyscallError(Errno.EIO, f"sandbox worker failed to start: {exc}") from None
        raise
    return worker


class Sandbox:
    """A pool of ``size`` warm workers, owned by the running system.

    ``async with Sandbox(size=2, limits=Limits(...)) as sb: await sb.run(src)``.
    ``limits`` are the defaults for each run and the ceiling a run may not
    exceed for CPU and memory (the workers' hard rlimits are set from them).
    ``agent=True`` starts workers that also load lmos's agent loop (and with it
    msgspec) before locking down, for runs that ask for the ask/agent helpers
    (:class:`Extras`); plain workers load only the standard library and
    RestrictedPython.  ``allow_weak_isolation`` (None: the ``[sandbox]``
    settings, see :func:`configure`) lets workers without a file wall run code;
    ``wall`` forces the worker's file wall (``"landlock"``, ``"mountns"``, or
    ``"none"`` to behave like a system that has neither; tests use it).
    ``owner``: the uid the runs are for; each run then holds one of that uid's
    worker slots (:mod:`lmos.userland.sandbox_slots`) and its worker lives only
    inside it: started on demand, never kept idle or replaced.  ``parent``: the pid
    of the parent of the process the runs are for (a parked parent lends its slot).
    """

    def __init__(self, size: int = 2, limits: Limits | None = None, *, max_runs_per_worker: int = 1000,
                 replace: bool = True, agent: bool = False, allow_weak_isolation: bool | None = None,
                 wall: str = "auto", owner: int | None = None, parent: int | None = None) -> None:
        if size < 1:
            raise SyscallError(Errno.EINVAL, "sandbox pool size must be at least 1")
        if wall not in WALLS:
            raise SyscallError(Errno.EINVAL, f"sandbox wall must be one of {', '.join(WALLS)}")
        self.size = size
        self.limits = limits or Limits()
        self.max_runs_per_worker = max_runs_per_worker
        self.replace = replace
        self.agent = agent
        self.allow_weak_isolation = allow_weak_isolation
        self.wall = wall
        self.owner = owner
        self.parent = parent
        self.isolation: Isolation | None = None
        self._idle: list[_Worker] = []
        self._slots: anyio.Semaphore | None = None
        self._closed = False

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the workers (concurrently); ``run`` calls this if needed."""
        if self._slots is not None:
            return
        self._slots = anyio.Semaphore(self.size)
        if self.owner is not None:
            return  # a uid's workers start inside its runs' slots, so every live one is counted

        async def one() -> None:
            await self._add(await self._new_worker())

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.size):
                    tg.start_soon(one)
        except BaseExceptionGroup as group:  # the first refusal, as the SyscallError it is
            errors = [e for e in group.exceptions if isinstance(e, SyscallError)]
            if not errors:
                raise
            raise errors[0] from None

    def _new_worker(self) -> Awaitable[_Worker]:
        return _spawn(self.limits, self.agent, self.wall, self.allow_weak_isolation)

    async def _add(self, worker: _Worker) -> None:
        """Park a fresh worker, unless the pool is closed or already full (runs that
        raced ``start`` spawned their own)."""
        if self._closed or len(self._idle) >= self.size:
            await worker.kill()
            return
        self.isolation = worker.info
        self._idle.append(worker)

    async def run(self, source: str, *, limits: Limits | None = None, syscalls: SyscallHandler | None = None,
                  syscall_names: Sequence[str] | None = None, inputs: Mapping[str, Any] | None = None,
                  seed: int | None = None, extras: Extras | None = None, clock: bool = False) -> Result:
        """Run ``source`` in a worker.  ``syscall_names`` become functions in the
        program (``name(**args)``) and bound ``sys_call(name, /, **args)``; None
        exposes only ``sys_call``, for any name ``syscalls`` accepts.  ``extras``:
        modules, the ask/agent helpers and echoed output (:class:`Extras`).
        ``clock``: the seed of ``random`` and the time ``datetime`` reads come from a
        ``time`` syscall through ``syscalls`` (see :func:`_clock`)."""
        if self._closed:
            raise SyscallError(Errno.EPIPE, "the sandbox is closed")
        limits = limits or self.limits
        if limits.cpu_seconds > self.limits.cpu_seconds or limits.memory_bytes > self.limits.memory_bytes:
            raise SyscallError(Errno.EINVAL, "per-run cpu/memory limits exceed the sandbox's ceiling")
        names = None if syscall_names is None else frozenset(syscall_names)
        now: float | None = None
        if clock and syscalls is not None and seed is None:
            seed, now = await _clock(syscalls)
        request = encode_request(source, limits, names, inputs, seed, extras, now)
        await self.start()
        assert self._slots is not None
        async with self._slots, worker_slot(self.owner, self.parent):
            worker = self._idle.pop() if self._idle else await self._new_worker()
            keep = False
            try:
                result, keep = await _Run(worker, request, limits, syscalls, names).drive()
            finally:
                await self._release(worker, keep)
        return result

    async def _release(self, worker: _Worker, keep: bool) -> None:
        with anyio.CancelScope(shield=True):
            owned = self.owner is not None  # an owned worker never outlives its run's slot
            if keep and not owned and not self._closed and worker.runs < self.max_runs_per_worker:
                self._idle.append(worker)
                return
            await worker.kill()
            if self.replace and not owned and not self._closed:
                try:
                    with anyio.fail_after(SPAWN_TIMEOUT):
                        await self._add(await self._new_worker())
                except (SyscallError, TimeoutError):
                    pass  # the next run spawns one itself

    async def aclose(self) -> None:
        """Kill every idle worker; runs still in flight finish and kill theirs."""
        self._closed = True
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for worker in idle:
                    tg.start_soon(worker.kill)


async def _clock(syscalls: SyscallHandler) -> tuple[int | None, float | None]:
    """The run's seed and clock from a ``time`` syscall of the program it runs for.

    So the sandbox's ``random`` and ``datetime.now()`` follow from a syscall result that the
    syscall journal holds, and recovery by replay re-runs the code to the same outputs
    (docs/durability.md).  A handler that refuses ``time`` leaves both to the worker's own."""
    try:
        t = await syscalls("time", {})
    except SyscallError:
        return None, None
    wall = t.get("wall") if isinstance(t, dict) else getattr(t, "wall", None)
    if not isinstance(wall, int | float):
        return None, None
    digest = hashlib.blake2b(repr(float(wall)).encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big"), float(wall)


async def execute(source: str, *, limits: Limits | None = None, syscalls: SyscallHandler | None = None,
                  syscall_names: Sequence[str] | None = None, inputs: Mapping[str, Any] | None = None,
                  seed: int | None = None, extras: Extras | None = None, owner: int | None = None,
                  clock: bool = False, parent: int | None = None) -> Result:
    """Run once in a fresh worker and leave nothing behind (convenient, not fast).

    ``owner``: the uid the run is for; it waits for one of that uid's worker slots.
    ``parent``: the pid of its process's parent (see :class:`Sandbox`).
    ``clock``: see :meth:`Sandbox.run`."""
    agent = extras is not None and extras.agent is not None
    async with Sandbox(size=1, limits=limits, replace=False, agent=agent, owner=owner,
                       parent=parent) as sandbox:
        return await sandbox.run(source, syscalls=syscalls, syscall_names=syscall_names, inputs=inputs,
                                 seed=seed, extras=extras, clock=clock)
