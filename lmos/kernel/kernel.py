"""The kernel core: process table, drivers with their schedulers, services.

The kernel runs programs it is handed and offers service methods (spawn,
signal, wait, generate, blocking, channels).  It never imports the syscall
layer or userland: capability checks, request types and audit live above it.
Every process runs as a task in the kernel's task group, inside its own cancel
scope, so KILL/TERM are a cancellation and shutdown reaps everything.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from lmos.config import Config
from lmos.drivers.base import Driver, SamplingParams
from lmos.errors import Errno, SyscallError
from lmos.kernel.events import EventBus
from lmos.kernel.files import FileStore
from lmos.kernel.ipc import ChannelTable
from lmos.kernel.journal import Journal
from lmos.kernel.kvpolicy import KVAdvisor
from lmos.kernel.memory import MemoryManager
from lmos.kernel.pagestore import PageStore
from lmos.kernel.policies import make_policy
from lmos.kernel.process import Process, Signal, State
from lmos.kernel.request import GenRequest
from lmos.kernel.scheduler import Scheduler, no_driver

INIT_PID = 1
Program = Callable[[Process], Awaitable[Any]]


class ProcessExit(Exception):
    """Raised by the ``exit`` syscall to end the calling program."""

    def __init__(self, status: int, result: Any = None) -> None:
        super().__init__(status)
        self.status = status
        self.result = result


class KernelCore:
    def __init__(self, config: Config, journal: Journal) -> None:
        self.config = config
        self.journal = journal
        self.procs: dict[int, Process] = {}
        self.schedulers: dict[str, Scheduler] = {}
        self.default_model: str | None = None
        self.channels = ChannelTable()
        self.events = EventBus()
        self.memory = MemoryManager(PageStore(journal))  # context paging (kernel/memory.py)
        self.files = FileStore(journal)  # the per-user file and kv store (kernel/files.py)
        self.init = Process(pid=INIT_PID, ppid=0, uid=0, app="init", argv=[], model="",
                            caps=frozenset({"*"}), state=State.RUNNING)
        self.procs[INIT_PID] = self.init
        self._per_uid: dict[int, int] = {}
        self._exited = anyio.Event()
        self._tg: TaskGroup | None = None
        self._scopes: dict[int, anyio.CancelScope] = {}
        self._intr: dict[int, anyio.CancelScope] = {}
        self._cont: dict[int, anyio.Event] = {}
        self._kill: dict[int, Signal] = {}
        self.operator_uid = _operator_uid(journal.path)

    def is_operator(self, uid: int) -> bool:
        """Root, or the user who owns the state directory: who may install apps and mount folders."""
        return uid == 0 or uid == self.operator_uid

    # -- wiring ------------------------------------------------------------
    def attach(self, tg: TaskGroup) -> None:
        self._tg = tg
        tg.start_soon(self.journal.run_flusher)

    def add_driver(self, name: str, driver: Driver, *, threaded: bool | None = None) -> Scheduler:
        if name in self.schedulers:
            raise SyscallError(Errno.EEXIST, f"model {name!r} is already loaded")
        cfg = self.config
        policy = make_policy(cfg.policy, quantum=cfg.quantum_tokens, aging_per_second=cfg.aging_per_second)
        advisor = KVAdvisor(driver, cfg.kv_policy)
        inline_below = cfg.inline_step_ms / 1000 if getattr(driver, "inline_step", False) else 0.0
        sched = Scheduler(name, driver, policy, advisor, threaded=threaded is not False,
                          inline_below=inline_below)
        sched.on_token = self._on_token
        self.schedulers[name] = sched
        if self.default_model is None:
            self.default_model = name
        if self._tg is not None:
            self._tg.start_soon(sched.run, name=f"scheduler {name}")
        return sched

    def scheduler(self, model: str) -> Scheduler:
        sched = self.schedulers.get(model)
        if sched is None:
            if not self.schedulers:  # a kernel booted with model=False (front-end storage commands)
                raise SyscallError(Errno.ENOENT, "no model is loaded")
            raise no_driver(model)
        return sched

    def resolve_model(self, model: str | None) -> str:
        name = model or self.default_model
        if name is None:
            raise SyscallError(Errno.ENOENT, "no model is loaded")
        self.scheduler(name)
        return name

    # -- processes ---------------------------------------------------------
    def get(self, pid: int) -> Process:
        p = self.procs.get(pid)
        if p is None:
            raise SyscallError(Errno.ESRCH, f"no such process {pid}")
        return p

    def spawn(self, program: Program, *, parent: Process, app: str, argv: list[str], model: str | None,
              uid: int, caps: frozenset[str], priority: int = 0, weight: float = 1.0,
              token_quota: int | None = None, max_children: int | None = None) -> Process:
        cfg = self.config
        if self._tg is None:
            raise SyscallError(Errno.EAGAIN, "kernel is not running")
        if len(self.procs) - 1 >= cfg.max_procs:
            raise SyscallError(Errno.EAGAIN, f"process table full ({cfg.max_procs})")
        if self._per_uid.get(uid, 0) >= cfg.max_procs_per_uid:
            raise SyscallError(Errno.EAGAIN, f"uid {uid} has too many processes ({cfg.max_procs_per_uid})")
        if len(parent.children) >= parent.max_children:
            raise SyscallError(Errno.EAGAIN, f"pid {parent.pid} has too many children")
        if not -20 <= priority <= 19:
            raise SyscallError(Errno.EINVAL, "priority must be in -20..19")
        if not weight > 0:
            raise SyscallError(Errno.EINVAL, "weight must be positive")
        name = self.resolve_model(model)
        pid = self.journal.alloc_pid()
        p = Process(pid=pid, ppid=parent.pid, uid=uid, app=app, argv=list(argv), model=name, caps=caps,
                    priority=priority, weight=weight, token_quota=token_quota,
                    max_children=cfg.max_children if max_children is None else max_children)
        self.procs[pid] = p
        parent.children.add(pid)
        self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        self.journal.post("INSERT INTO processes(pid, ppid, uid, app, argv, model, state, created) "
                          "VALUES(?,?,?,?,?,?,?,?)",
                          (pid, p.ppid, uid, app, json.dumps(p.argv), name, p.state.value, time.time()))
        p.set_state(State.READY)
        self._tg.start_soon(self._run, p, program, name=f"pid {pid} {app}")
        return p

    async def _run(self, p: Process, program: Program) -> None:
        status, error, result = 0, None, None
        with anyio.CancelScope() as scope:
            self._scopes[p.pid] = scope
            if p.pid in self._kill:
                scope.cancel()
            await anyio.lowlevel.checkpoint()
            if p.state is State.READY:
                p.set_state(State.RUNNING)
            try:
                result = await program(p)
            except ProcessExit as e:
                status, result = e.status, e.result
            except SyscallError as e:
                status, error = 1, str(e)
                p.errno = int(e.errno)
            except Exception as e:  # a bug in the program must not take the kernel down
                status, error = 1, f"{type(e).__name__}: {e}"
        sig = self._kill.pop(p.pid, None)
        if scope.cancelled_caught or sig is not None:
            sig = sig or Signal.KILL
            status, error = -int(sig), error or f"killed by SIG{sig.name}"
        with anyio.CancelScope(shield=True):
            await self._finish(p, status, error, result, killed=sig is not None)

    async def _finish(self, p: Process, status: int, error: str | None, result: Any, *, killed: bool) -> None:
        self._scopes.pop(p.pid, None)
        self._intr.pop(p.pid, None)
        cont = self._cont.pop(p.pid, None)
        if cont is not None:
            cont.set()
        sched = self.schedulers.get(p.model)
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
        self.channels.release(p.pid)
        self.memory.release(p.pid)
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            result = repr(result)
        p.result, p.error, p.exit_status = result, error, status
        p.set_state(State.KILLED if killed else State.EXITED)
        self._per_uid[p.uid] = self._per_uid.get(p.uid, 1) - 1
        for cpid in list(p.children):  # orphans go to init, which reaps the dead ones
            child = self.procs.get(cpid)
            if child is not None:
                child.ppid = INIT_PID
                self.init.children.add(cpid)
        p.children.clear()
        self.events.publish(p.pid, kind="exit", exit_status=status, state=p.state.value, data=result)
        self.events.close(p.pid)
        self.journal.post("UPDATE processes SET state=?, exit_status=?, error=?, ended=? WHERE pid=?",
                          (p.state.value, status, error, time.time(), p.pid))
        self._exited.set()
        self._exited = anyio.Event()
        parent = self.procs.get(p.ppid)
        if parent is None or parent.ended:
            self._reap(p)

    def _reap(self, p: Process) -> None:
        p.reaped = True
        self.procs.pop(p.pid, None)
        parent = self.procs.get(p.ppid)
        if parent is not None:
            parent.children.discard(p.pid)

    async def wait(self, caller: Process, pid: int | None = None, timeout: float | None = None) -> Process:
        """Wait for a child (or, for init, any process) to end; reap and return it."""
        try:
            with anyio.fail_after(timeout) if timeout is not None else _null():
                while True:
                    found = self._find_zombie(caller, pid)
                    if found is not None:
                        self._reap(found)
                        return found
                    await self._exited.wait()
        except TimeoutError:
            raise SyscallError(Errno.ETIMEDOUT, "wait timed out") from None

    def _find_zombie(self, caller: Process, pid: int | None) -> Process | None:
        if pid is not None:
            c = self.procs.get(pid)
            if c is None or (c.ppid != caller.pid and caller.pid != INIT_PID) or c.pid == caller.pid:
                raise SyscallError(Errno.ECHILD, f"process {pid} is not a child of {caller.pid}")
            return c if c.ended else None
        kids = [self.procs[c] for c in caller.children if c in self.procs]
        if not kids:
            raise SyscallError(Errno.ECHILD, f"process {caller.pid} has no children")
        return next((c for c in kids if c.ended), None)

    # -- signals -----------------------------------------------------------
    def signal(self, pid: int, sig: Signal) -> None:
        p = self.get(pid)
        if pid == INIT_PID:
            raise SyscallError(Errno.EPERM, "cannot signal init")
        if p.ended:
            return
        if sig in (Signal.KILL, Signal.TERM):
            self._kill.setdefault(pid, sig)
            scope = self._scopes.get(pid)
            if scope is not None:
                scope.cancel()
        elif sig is Signal.STOP:
            if p.state is not State.STOPPED:
                p.stopped_from = p.state
                p.set_state(State.STOPPED)
                self._cont[pid] = anyio.Event()
                sched = self.schedulers.get(p.model)
                if sched is not None:
                    sched.running.discard(pid)
        elif sig is Signal.CONT:
            if p.state is State.STOPPED:
                back = p.stopped_from or State.RUNNING
                if back is State.RUNNING and p.request is not None:
                    back = State.READY
                p.set_state(back)
                p.stopped_from = None
                ev = self._cont.pop(pid, None)
                if ev is not None:
                    ev.set()
                sched = self.schedulers.get(p.model)
                if sched is not None:
                    sched.kick()
        elif sig is Signal.INT:
            scope = self._intr.get(pid)
            if scope is not None:
                scope.cancel()
            else:
                p.pending_signals.append(sig)
        self.events.publish(pid, kind="state", state=p.state.value, data=f"SIG{sig.name}")

    async def checkpoint(self, p: Process) -> None:
        """Syscall entry: wait while STOPPED; deliver a pending INT as EINTR."""
        while p.state is State.STOPPED:
            ev = self._cont.get(p.pid)
            if ev is None:
                break
            await ev.wait()
        if p.pending_signals:
            sig = p.pending_signals.pop(0)
            raise SyscallError(Errno.EINTR, f"interrupted by SIG{sig.name}")

    @asynccontextmanager
    async def blocking(self, p: Process, name: str) -> AsyncIterator[None]:
        """Run the body as a BLOCKED, interruptible (SIGINT -> EINTR) syscall."""
        await self.checkpoint(p)
        if p.pid == INIT_PID:
            yield
            return
        sched = self.schedulers.get(p.model)
        p.set_state(State.BLOCKED)
        p.blocked_on = name
        if sched is not None and p.has_seq:
            sched.kv.on_block(p.pid, name)
            sched.kick()
        t0 = time.monotonic()
        interrupted = False
        try:
            with anyio.CancelScope() as scope:
                self._intr[p.pid] = scope
                yield
            interrupted = scope.cancelled_caught
        finally:
            self._intr.pop(p.pid, None)
            p.blocked_on = ""
            if sched is not None and p.has_seq:
                sched.kv.on_unblock(p.pid, name, time.monotonic() - t0)
            if p.state is State.BLOCKED:
                p.set_state(State.RUNNING)
            elif p.state is State.STOPPED:
                p.stopped_from = State.RUNNING
        if interrupted:
            raise SyscallError(Errno.EINTR, f"{name} interrupted by SIGINT")

    # -- generation --------------------------------------------------------
    async def generate(self, p: Process, token_ids: list[int], *, reset: bool, sampling: SamplingParams,
                       max_tokens: int, stop: tuple[str, ...] = (),
                       stop_token_ids: frozenset[int] = frozenset(),
                       context: list[int] | None = None) -> GenRequest:
        """Append ``token_ids`` to the process context and generate; wait for the end.

        With ``context`` (a paged process's window, see kernel/memory.py) the driver
        sequence is made equal to it instead, keeping the KV of the common prefix;
        ``token_ids`` is then only the new prompt, for accounting.
        """
        await self.checkpoint(p)
        sched = self.scheduler(p.model)
        drv = sched.driver
        if max_tokens < 1:
            raise SyscallError(Errno.EINVAL, "max_tokens must be >= 1")
        if p.token_quota is not None:
            left = p.token_quota - p.stats.generated_tokens
            if left <= 0:
                raise SyscallError(Errno.EDQUOT, f"token quota of {p.token_quota} used up")
            max_tokens = min(max_tokens, left)
        if sched.queued >= self.config.max_queue:
            raise SyscallError(Errno.EAGAIN, f"model {p.model!r} run queue is full")
        async with sched.lock:
            if not p.has_seq:
                if not (token_ids if context is None else context):
                    raise SyscallError(Errno.EINVAL, "empty prompt")
                drv.add(p.pid, token_ids if context is None else context, sampling)
                p.has_seq = True
                sched.kv.track(p.pid)
            else:
                if reset:
                    drv.truncate(p.pid, 0)
                drv.set_sampling(p.pid, sampling)
                if context is not None:
                    self.memory.sync(p.pid, drv, context)
                elif token_ids:
                    drv.append(p.pid, token_ids)
                if drv.pending(p.pid) == 0:
                    raise SyscallError(Errno.EINVAL, "empty prompt")
            room = drv.limits.max_model_len - drv.length(p.pid)
        if room <= 0:
            raise SyscallError(Errno.E2BIG, f"context of {drv.limits.max_model_len} tokens is full")
        req = GenRequest(pid=p.pid, max_tokens=min(max_tokens, room), stop=stop,
                         stop_token_ids=stop_token_ids, tokenizer=drv.tokenizer,
                         prompt_tokens=len(token_ids))
        p.stats.prompt_tokens += len(token_ids)
        p.request = req
        sched.submit(p)
        interrupted = False
        try:
            with anyio.CancelScope() as scope:
                self._intr[p.pid] = scope
                await req.done.wait()
            interrupted = scope.cancelled_caught
        finally:
            self._intr.pop(p.pid, None)
            if p.request is req:  # cancelled or interrupted before completion
                sched.withdraw(p)
                p.request = None
                if p.state is State.READY:
                    p.set_state(State.RUNNING)
        if interrupted:
            raise SyscallError(Errno.EINTR, "llm_generate interrupted by SIGINT")
        if req.error is not None:
            raise req.error
        quota = p.token_quota
        if req.finish_reason == "length" and quota is not None and p.stats.generated_tokens >= quota:
            req.finish_reason = "quota"
        return req

    def _on_token(self, p: Process, req: GenRequest, token: int, before: int) -> None:
        text = req.decoded[before:] if req.needs_text else req.new_text()
        self.events.publish(p.pid, kind="token", token_id=token, text=text)

    def watch(self, pid: int) -> None:
        """Somebody subscribed to ``pid``: make its scheduler emit token events."""
        p = self.procs.get(pid)
        if p is not None and p.model in self.schedulers:
            self.schedulers[p.model].streamed.add(pid)

    # -- shutdown ----------------------------------------------------------
    def kill_all(self) -> None:
        for pid in list(self._scopes):
            self._kill.setdefault(pid, Signal.KILL)
            self._scopes[pid].cancel()

    def live(self) -> list[Process]:
        return [p for p in self.procs.values() if p.pid != INIT_PID]


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _operator_uid(db_path: str) -> int:
    """The owner of the state directory (this process's user for an in-memory kernel)."""
    if db_path == ":memory:":
        return os.getuid()
    try:
        return os.stat(os.path.dirname(db_path) or ".").st_uid
    except OSError:
        return os.getuid()
