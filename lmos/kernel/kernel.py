"""The kernel core: process table, drivers with their schedulers, services.

The kernel runs programs it is handed and offers service methods (spawn,
signal, wait, generate, blocking, channels).  It never imports the syscall
layer or userland: capability checks, request types and audit live above it.
Every process runs as a task in the kernel's task group, inside its own cancel
scope, so KILL/TERM are a cancellation and shutdown reaps everything.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from lmos.config import Config
from lmos.drivers.base import Driver, SamplingParams
from lmos.errors import Errno, SyscallError
from lmos.kernel import generation, lifecycle, signals
from lmos.kernel.counters import KernelCounters
from lmos.kernel.events import EventBus
from lmos.kernel.files import FileStore
from lmos.kernel.identity import operator_uid_of, resolve_host_uid
from lmos.kernel.ipc import ChannelTable
from lmos.kernel.journal import Journal
from lmos.kernel.kvpolicy import KVAdvisor
from lmos.kernel.lifecycle import INIT_PID as INIT_PID  # pid 1, the host program
from lmos.kernel.memmanager import MemoryManager
from lmos.kernel.pagestore import PageStore
from lmos.kernel.policies import make_policy
from lmos.kernel.process import Process, Signal, State
from lmos.kernel.quota import StoreQuota
from lmos.kernel.request import GenRequest
from lmos.kernel.scheduler import Scheduler, no_driver
from lmos.kernel.sysjournal import SysJournal, enabled

Program = Callable[[Process], Awaitable[Any]]


class ProcessExit(Exception):
    """Raised by the ``exit`` syscall to end the calling program."""

    def __init__(self, status: int, result: Any = None, error: SyscallError | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.result = result
        self.error = error  # why the kernel ended the program (a recovery that could not replay)


class KernelCore:
    def __init__(self, config: Config, journal: Journal, *, host_uid: int | None = None) -> None:
        self.config = config
        self.journal = journal
        self.procs: dict[int, Process] = {}
        self.schedulers: dict[str, Scheduler] = {}
        self.default_model: str | None = None
        self.channels = ChannelTable(per_uid=config.ipc_channels_per_uid,
                                     channel_bytes=config.ipc_channel_bytes,
                                     bytes_per_uid=config.ipc_bytes_per_uid)
        self.events = EventBus()
        self.counters = KernelCounters()  # what nothing else keeps, for monitoring (lmos.server.metrics)
        quota = StoreQuota()  # one per-uid budget for files, kv values and context pages (kernel/quota.py)
        self.memory = MemoryManager(PageStore(journal, quota), config.keep_ended_pages)  # kernel/memory.py
        self.files = FileStore(journal, quota=quota)  # the per-user file and kv store (kernel/files.py)
        self.quota = quota
        # the syscall journal (kernel/sysjournal.py): every completed syscall of a process, durable
        self.sysjournal = SysJournal(journal, quota, config.journal_keep_seconds) \
            if enabled(config.journal, journal.path) and not journal.read_only else None
        # Init is the host program (the embedding API): it acts as the host's user, so what it
        # writes its apps can read, and the processes it starts run as that user, never as root
        # by accident.  Its kernel powers (any uid, every process) come from being pid 1, not uid 0.
        # Its children are bounded by the per-uid limits and the table, not by a count of its own.
        self.host_uid = resolve_host_uid(config) if host_uid is None else host_uid
        self.init = Process(pid=INIT_PID, ppid=0, uid=self.host_uid, app="init", argv=[], model="",
                            caps=frozenset({"*"}), state=State.RUNNING, max_children=config.max_procs)
        self.procs[INIT_PID] = self.init
        self._per_uid: dict[int, int] = {}  # processes in the table (zombies too) per uid
        self.on_reap: list[Callable[[Process], None]] = []  # the syscall layer frees traces and watches
        self._exited = anyio.Event()  # set when any process ends: wakes waits for any child
        # per pid: set when that process ends, so that a wait for one pid is woken by its end only
        # (with one event for all, N waits and N ends made N * N wake-ups, each through the whole
        # syscall stack: a burst of 16 requests spent more on that than on spawning)
        self._exit_events: dict[int, anyio.Event] = {}
        self._tg: TaskGroup | None = None
        self._scopes: dict[int, anyio.CancelScope] = {}
        self._intr: dict[int, anyio.CancelScope] = {}
        self._cont: dict[int, anyio.Event] = {}
        self._kill: dict[int, Signal] = {}
        self.operator_uid = operator_uid_of(journal.path)
        # uids that operate this kernel for its owner: on a root host the front ends act as
        # [users] root_runs_as (lmos.cli.identity), and that uid installs apps and mounts folders
        self.operator_aliases: set[int] = set()

    def is_operator(self, uid: int, pid: int = 0) -> bool:
        """Init (the host program), root, or the user who owns the state directory.

        Who may install apps and mount folders.  Pass the caller's ``pid`` so init
        counts as the operator whatever uid it acts as.
        """
        return pid == INIT_PID or uid == 0 or uid == self.operator_uid or uid in self.operator_aliases

    # -- wiring ------------------------------------------------------------
    def attach(self, tg: TaskGroup) -> None:
        self._tg = tg
        tg.start_soon(self.journal.run_flusher)
        if self.sysjournal is not None:
            tg.start_soon(self.sysjournal.run)

    def add_driver(self, name: str, driver: Driver, *, threaded: bool | None = None) -> Scheduler:
        if name in self.schedulers:
            raise SyscallError(Errno.EEXIST, f"model {name!r} is already loaded")
        cfg = self.config
        policy = make_policy(cfg.policy, quantum=cfg.quantum_tokens, aging_per_second=cfg.aging_per_second)
        advisor = KVAdvisor(driver, cfg.kv_policy)
        inline_below = cfg.inline_step_ms / 1000 if getattr(driver, "inline_step", False) else 0.0
        sched = Scheduler(name, driver, policy, advisor, threaded=threaded is not False,
                          inline_below=inline_below)
        sched.on_token = self.events.token
        sched.streamed = self.events.subs  # token events only for processes somebody subscribes to
        sched.on_flush = self.events.flush
        if sched.requests is not None:  # models on one server share its in-flight limit (kernel/reqsched.py)
            sched.requests.join([s.requests for s in self.schedulers.values() if s.requests is not None])
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
    def descends(self, pid: int, ancestor: int) -> bool:
        """Is ``pid`` a (live or zombie) descendant of ``ancestor``?  Orphans belong to init."""
        p = self.procs.get(pid)
        seen = 0
        while p is not None and p.ppid and seen < len(self.procs):
            if p.ppid == ancestor:
                return True
            p = self.procs.get(p.ppid)
            seen += 1
        return False

    def get(self, pid: int) -> Process:
        p = self.procs.get(pid)
        if p is None:
            raise SyscallError(Errno.ESRCH, f"no such process {pid}")
        return p

    def spawn(self, program: Program, *, parent: Process, app: str, argv: list[str], model: str | None,
              uid: int, caps: frozenset[str], priority: int = 0, weight: float = 1.0,
              token_quota: int | None = None, max_children: int | None = None,
              wall_seconds: float | None = None, pid: int | None = None, spawn_pages: int = 0) -> Process:
        """Start ``program`` as a child of ``parent``.

        Limits are checked narrowest first, so the error names who is at fault: the
        uid's own count, then the uid's share of the table, then the table itself.
        A child never gets more than its parent: priority (nice) no lower, weight
        no higher, a token quota no larger than what the parent has left (and the
        child's tokens are charged to the parent's quota too), a deadline no later.
        Asking for more is clamped, not refused, so an app written for a generous
        parent still runs under a strict one.  Init's children are the operator's
        (the embedding API, front ends' sessions): only the request's own range
        applies; a uid-0 parent may also give better priority and weight.
        ``pid`` is for recovery only (lmos.syscalls.recovery): a process of the previous run
        goes on under its own pid.  ``spawn_pages``: the pinned pages the spawn gives it (their
        number is kept with the process for recovery: syscalls/mem.py spawn_pins).
        """
        cfg = self.config
        if self._tg is None:
            raise SyscallError(Errno.EAGAIN, "kernel is not running")
        if not -20 <= priority <= 19:
            raise SyscallError(Errno.EINVAL, "priority must be in -20..19")
        if not weight > 0:
            raise SyscallError(Errno.EINVAL, "weight must be positive")
        self._admit(uid)
        own = [c for c in parent.children if c in self.procs and not self.procs[c].adopted]
        if len(own) >= parent.max_children:
            raise SyscallError(Errno.EAGAIN,
                               f"pid {parent.pid} has too many children ({parent.max_children})")
        # no model loaded at all (model=False: storage commands) and none asked for: the process
        # has none, like init, and its llm calls fail with "no model is loaded"
        name = self.resolve_model(model) if model or self.schedulers else ""
        deadline = anyio.current_time() + wall_seconds if wall_seconds is not None else None
        quota_parent: Process | None = None
        if parent.pid != INIT_PID:
            if parent.uid != 0:  # as in Unix, root (started as root on purpose) may renice
                priority, weight = max(priority, parent.priority), min(weight, parent.weight)
            if parent.deadline is not None and (deadline is None or parent.deadline < deadline):
                deadline, wall_seconds = parent.deadline, parent.wall_seconds
            quota_parent = parent if parent.token_quota is not None else parent.quota_parent
            left = parent.tokens_left()
            if left is not None:
                token_quota = max(0, left if token_quota is None else min(token_quota, left))
        recovered = pid is not None
        pid = self.journal.alloc_pid() if pid is None else pid
        p = Process(pid=pid, ppid=parent.pid, uid=uid, app=app, argv=list(argv), model=name, caps=caps,
                    priority=priority, weight=weight, token_quota=token_quota,
                    max_children=cfg.max_children if max_children is None else max_children,
                    deadline=deadline, wall_seconds=wall_seconds, quota_parent=quota_parent)
        self.procs[pid] = p
        parent.children.add(pid)
        self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        if recovered:
            self.journal.post("UPDATE processes SET ppid=?, state=? WHERE pid=?",
                              (p.ppid, p.state.value, pid))
        else:
            limits = {"token_quota": token_quota, "priority": priority, "weight": weight,
                      "wall_seconds": wall_seconds, "max_children": p.max_children}
            if spawn_pages:
                limits["spawn_pages"] = spawn_pages
            self.journal.post("INSERT INTO processes(pid, ppid, uid, app, argv, model, state, created, caps, "
                              "limits) VALUES(?,?,?,?,?,?,?,?,?,?)",
                              (pid, p.ppid, uid, app, json.dumps(p.argv), name, p.state.value, time.time(),
                               json.dumps(sorted(caps)), json.dumps(limits)))
        p.set_state(State.READY)
        self._tg.start_soon(self._run, p, program, name=f"pid {pid} {app}")
        return p

    def restore_zombie(self, p: Process, parent: Process) -> None:
        """Recovery (lmos.syscalls.recovery): a child that ended before a crash and that its recovered
        parent had not waited for goes back into the table as a zombie, for that wait."""
        self.procs[p.pid] = p
        parent.children.add(p.pid)
        self._per_uid[p.uid] = self._per_uid.get(p.uid, 0) + 1

    def _admit(self, uid: int) -> None:
        lifecycle.admit(self, uid)

    async def _run(self, p: Process, program: Program) -> None:
        status, error, result = 0, None, None
        with anyio.CancelScope(deadline=p.deadline if p.deadline is not None else math.inf) as scope:
            self._scopes[p.pid] = scope
            if p.pid in self._kill:
                scope.cancel()
            # killed (or out of time, or the kernel stopping) before it started: it never runs;
            # otherwise no yield here (each one is a turn of the loop behind every other task)
            await anyio.lowlevel.checkpoint_if_cancelled()
            if p.state is State.READY:
                p.set_state(State.RUNNING)
            try:
                result = await program(p)
            except ProcessExit as e:
                status, result = e.status, e.result
                if e.error is not None:
                    error, p.errno = str(e.error), int(e.error.errno)
            except SyscallError as e:
                status, error = 1, str(e)
                p.errno = int(e.errno)
            except Exception as e:  # a bug in the program must not take the kernel down
                status, error = 1, f"{type(e).__name__}: {e}"
        sig = self._kill.pop(p.pid, None)
        timed_out = p.deadline is not None and anyio.current_time() >= p.deadline
        if scope.cancelled_caught and sig is None and timed_out:
            exc = SyscallError(Errno.EDQUOT, f"{p.app}: wall-time quota of {p.wall_seconds or 0:g}s exceeded")
            status, error, p.errno = 1, str(exc), int(exc.errno)
        elif scope.cancelled_caught or sig is not None:
            sig = sig or Signal.KILL
            status, error = -int(sig), error or f"killed by SIG{sig.name}"
        with anyio.CancelScope(shield=True):
            await self._finish(p, status, error, result, killed=sig is not None)

    async def _finish(self, p: Process, status: int, error: str | None, result: Any, *, killed: bool) -> None:
        await lifecycle.finish(self, p, status, error, result, killed=killed)

    def _reap(self, p: Process) -> None:
        lifecycle.reap(self, p)

    async def wait(self, caller: Process, pid: int | None = None, timeout: float | None = None) -> Process:
        """Wait for a child (or, for init, any process) to end; reap and return it."""
        try:
            with anyio.fail_after(timeout) if timeout is not None else _null():
                while True:
                    found = self._find_zombie(caller, pid)
                    if found is not None:
                        self._reap(found)
                        return found
                    if pid is None:
                        await self._exited.wait()
                    else:
                        ev = self._exit_events.get(pid)
                        if ev is None:
                            ev = self._exit_events[pid] = anyio.Event()
                        await ev.wait()
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

    # -- signals (kernel/signals.py) --------------------------------------
    def signal(self, pid: int, sig: Signal) -> None:
        signals.deliver(self, pid, sig)

    async def checkpoint(self, p: Process) -> None:
        """Syscall entry: wait while STOPPED; deliver a pending INT as EINTR."""
        await signals.checkpoint(self, p)

    def blocking(self, p: Process, name: str) -> AbstractAsyncContextManager[None]:
        """Run the body as a BLOCKED, interruptible (SIGINT -> EINTR) syscall."""
        return signals.blocking(self, p, name)

    # -- generation --------------------------------------------------------
    async def generate(self, p: Process, token_ids: list[int], *, reset: bool, sampling: SamplingParams,
                       max_tokens: int, stop: tuple[str, ...] = (),
                       stop_token_ids: frozenset[int] = frozenset(),
                       context: list[int] | None = None) -> GenRequest:
        """Append ``token_ids`` to the process context and generate; wait for the end.

        With ``context`` (a paged process's window, see kernel/memory.py) the driver
        sequence is made equal to it instead, keeping the KV of the common prefix;
        ``token_ids`` is then only the new prompt, for accounting.  The process's and
        its ancestors' token quotas bound it (see :mod:`lmos.kernel.generation`).
        """
        return await generation.generate(self, p, token_ids, reset=reset, sampling=sampling,
                                         max_tokens=max_tokens, stop=stop, stop_token_ids=stop_token_ids,
                                         context=context)

    async def generate_n(self, p: Process, token_ids: list[int], *, n: int, reset: bool,
                         sampling: SamplingParams, max_tokens: int, stop: tuple[str, ...] = (),
                         stop_token_ids: frozenset[int] = frozenset(),
                         on_fork: Callable[[list[int]], None] | None = None) -> list[GenRequest]:
        """``n`` choices from one prefill of ``token_ids``, forks of one context (see
        :func:`lmos.kernel.generation.generate_n`)."""
        return await generation.generate_n(self, p, token_ids, n=n, reset=reset, sampling=sampling,
                                           max_tokens=max_tokens, stop=stop, stop_token_ids=stop_token_ids,
                                           on_fork=on_fork)

    def watch(self, pid: int) -> None:
        """Somebody subscribed to ``pid``: its scheduler emits token events while the
        subscription lasts (the schedulers read the event bus's subscribers directly)."""

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
