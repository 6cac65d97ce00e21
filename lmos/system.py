"""``lmos.Kernel``: boot, wire and embed the whole system.

The facade is the host side of the system, acting as init (pid 1).  Init acts
as the host program's user, and so do the processes it starts unless ``uid=``
names another: the embedder's uid (``os.getuid()``), or ``users.root_runs_as``
(default nobody) when that is root, unless the kernel was made with
``as_root=True`` (see :func:`lmos.kernel.identity.resolve_host_uid`).  Init's
kernel powers (spawn as any uid, see and signal every process, operator
actions) come from being pid 1, not from uid 0.
Everything it does goes through the same syscall dispatch as any program:
``complete`` spawns a process running the ``llm.complete`` program and waits
for it, so embedding users get scheduling, quotas, tracing and audit for free.

    async with lmos.Kernel(model="path/to/model", policy="fair") as k:
        r = await k.complete("Hello", max_tokens=32, temperature=0)
        print(r.text, r.token_ids, r.pid, r.usage)
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import anyio
import msgspec
from anyio.abc import TaskGroup

from lmos.config import Config, default_home, load_config
from lmos.drivers.base import Driver
from lmos.errors import Errno, SyscallError
from lmos.kernel.events import Event, Subscription
from lmos.kernel.identity import resolve_host_uid
from lmos.kernel.journal import Journal
from lmos.kernel.kernel import INIT_PID, KernelCore
from lmos.kernel.process import Signal
from lmos.syscalls import confirm as _confirm
from lmos.syscalls import tool as _tool
from lmos.syscalls.client import Sys
from lmos.syscalls.recovery import recover
from lmos.syscalls.table import AppSpec, ProgramRegistry, Syscalls
from lmos.syscalls.types import ProcInfo, Usage, WaitReply
from lmos.system_boot import ModelArg, _open_app_store, _register_userland, load_driver
from lmos.userland import sandbox as _sandbox
from lmos.userland.coreutils import APPS as COREUTILS
from lmos.userland.tools import builtin_tools

log = logging.getLogger("lmos")
Main = Callable[[Sys, list[str]], Awaitable[Any]]


class Completion(msgspec.Struct, kw_only=True):
    """What :meth:`Kernel.complete` returns."""

    text: str
    token_ids: list[int]  # generated ids; ends with EOS when generation stopped on it
    finish_reason: str
    pid: int
    usage: Usage
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatResult(msgspec.Struct, kw_only=True):
    """What :meth:`Kernel.chat` returns: the final message and the tool calls made on the way."""

    text: str
    calls: list[dict[str, Any]]  # {"tool", "args", "result", "ok"} in order
    steps: int
    finish_reason: str  # "answer" | "max_steps" | "length" | "quota"
    pid: int
    usage: Usage


async def _complete_main(sys: Sys, argv: list[str]) -> Any:
    """The ``llm.complete`` program: one generation, returned as the exit result."""
    args = json.loads(argv[0]) if argv else {}
    r = await sys.llm_generate(**args)
    return msgspec.to_builtins(r)


class Kernel:
    """The embedding API.  Use as ``async with Kernel(...) as k``."""

    def __init__(self, model: ModelArg | Literal[False] = None, *, policy: str | None = None,
                 state_dir: str | None = None,
                 config: Config | None = None, model_name: str = "default",
                 confirm: _confirm.ConfirmPolicy | None = None, plugins: bool = True,
                 as_root: bool = False, **settings: Any) -> None:
        if config is None:
            config = load_config(policy=policy, state_dir=state_dir, **settings)
        else:
            given = dict(policy=policy, state_dir=state_dir, **settings)
            config = msgspec.structs.replace(config, **{k: v for k, v in given.items() if v is not None})
        self.config = config
        self.as_root = as_root  # a root host's processes run as root, not users.root_runs_as
        self._model = model
        self._model_name = model_name
        self._tg: TaskGroup | None = None
        self._seq = itertools.count(1)
        self.core: KernelCore | None = None
        self.recovered: list[dict[str, Any]] = []  # what became of the previous run's unfinished processes
        self.sys: Syscalls | None = None
        self.programs = ProgramRegistry()
        self.programs.register(AppSpec("llm.complete", _complete_main, frozenset({"llm"}),
                                       description="one generation (Kernel.complete)"))
        for spec in COREUTILS:
            self.programs.register(spec)
        # Irreversible actions need the user's yes; with no policy they are refused
        # (see lmos.syscalls.confirm for why that is the safe default).
        self.confirm = confirm
        self.tools = _tool.ToolRegistry()
        for t in builtin_tools():
            self.tools.register(t)
        _register_userland(self.programs, self.tools, plugins)

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> Kernel:
        state_dir = self.config.state_dir or str(default_home())
        # a kernel with no model (the storage commands: lmos replay, lmos audit ...) may read a read-only
        # state directory; one that runs programs must write it (EROFS at start)
        journal = Journal.open(state_dir, read_only_ok=self._model is False)
        _sandbox.configure(self.config.sandbox)  # [sandbox]: weak isolation allowed? worker caps
        try:
            uid = resolve_host_uid(self.config, as_root=self.as_root)
            core = KernelCore(self.config, journal, host_uid=uid)
            self.sys = Syscalls(core, self.programs, trace_len=self.config.trace_per_process,
                                tools=self.tools, confirm_policy=self.confirm)
            _open_app_store(self.sys)
            driver = self._model if isinstance(self._model, Driver) else None
            self._owned: list[Driver] = []  # drivers this kernel loaded (and so closes)
            # model=False: no model at all, for front-end commands that only touch storage
            # (lmos cp, lmos app ...); generating then fails with ENOENT "no model is loaded".
            if driver is None and self._model is not False:
                driver = await anyio.to_thread.run_sync(load_driver, self._model, self.config)
                self._owned.append(driver)
            tg = anyio.create_task_group()
            await tg.__aenter__()
        except BaseException:
            journal.close()
            raise
        self._tg = tg
        self.core = core
        core.attach(tg)
        if driver is not None:
            core.add_driver(self._model_name, driver)
            # the processes a crashed kernel left unfinished go on (docs/durability.md); a kernel with
            # no model (a front end's storage command) leaves them for the next real one
            self.recovered = await recover(self.sys)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kill and reap every process, stop the schedulers, close drivers and storage."""
        core, tg = self.core, self._tg
        if core is None or tg is None:
            return
        self._tg = None
        core.kill_all()
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            while core._scopes:  # every process's cleanup (free KV, reparent) has run
                await anyio.sleep(0.002)
        # The task group must be exited in the scope it was entered in, so no
        # shield around this; the schedulers and the journal flusher end here.
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                for sched in core.schedulers.values():
                    if any(sched.driver is d for d in self._owned):
                        await anyio.to_thread.run_sync(sched.driver.close)
                core.events.close_all()
                core.journal.close()

    def _core(self) -> tuple[KernelCore, Syscalls]:
        if self.core is None or self.sys is None or self._tg is None:
            raise SyscallError(Errno.EAGAIN, "kernel is not running (use `async with Kernel(...)`)")
        return self.core, self.sys

    async def load_model(self, name: str, model: ModelArg) -> None:
        """Load another model under ``name``; apps select it with ``model=name``."""
        core, _ = self._core()
        driver = await anyio.to_thread.run_sync(load_driver, model, self.config)
        if not isinstance(model, Driver):
            self._owned.append(driver)
        core.add_driver(name, driver)

    # -- syscalls as init --------------------------------------------------------
    async def syscall(self, call: str | int, /, **args: Any) -> Any:
        """Make any syscall as init (pid 1)."""
        _, sys = self._core()
        return await sys.call(INIT_PID, call, args)

    async def complete(self, prompt: str | list[int], *, max_tokens: int = 256,
                       temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                       repetition_penalty: float | None = None, seed: int | None = None,
                       stop: list[str] | None = None, stop_token_ids: list[int] | None = None,
                       model: str | None = None, priority: int = 0, weight: float = 1.0,
                       uid: int | None = None) -> Completion:
        """Generate from ``prompt`` (text or token ids) as a fresh process and return the result."""
        gen: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                               "top_k": top_k, "repetition_penalty": repetition_penalty, "seed": seed,
                               "stop": stop or [], "stop_token_ids": stop_token_ids}
        if isinstance(prompt, str):
            gen["prompt"] = prompt
        else:
            gen["token_ids"] = list(prompt)
        gen = {k: v for k, v in gen.items() if v is not None}
        pid = await self.spawn("llm.complete", [json.dumps(gen)], model=model, priority=priority,
                               weight=weight, uid=uid)
        w = await self.wait(pid)
        if w.exit_status != 0:
            raise SyscallError(w.errno or Errno.EIO, _strip_errno(w.error or f"exit status {w.exit_status}"))
        r = w.result
        return Completion(text=r["text"], token_ids=r["token_ids"], finish_reason=r["finish_reason"],
                          pid=pid, usage=w.usage, prompt_tokens=r["prompt_tokens"],
                          completion_tokens=r["completion_tokens"])

    async def chat(self, messages: list[dict[str, Any]], tools: list[str] | None = None, *,
                   max_steps: int = 8,
                   max_tokens: int = 256, caps: list[str] | None = None, model: str | None = None,
                   uid: int | None = None, **sampling: Any) -> ChatResult:
        """Run the agent loop on ``messages`` as a fresh process; ``tools`` are the tools it may call.

        The process gets ``llm``, ``tool:NAME`` for each tool and, unless ``caps``
        says otherwise, whole-tree ``fs.read``/``fs.write`` when a file tool is
        asked for and ``kv`` when a kv tool is.  ``sampling`` (temperature, top_p,
        seed ...) goes to every step.
        """
        from lmos.userland.agent import run_agent

        names = list(tools or [])
        for n in names:
            self.tools.get(n)  # ENOENT for an unknown tool, before anything runs
        asked = set(names)
        granted = set(caps) if caps is not None else {"llm"} | (
            {"fs.read", "fs.write"} if {"fs_read", "fs_write", "fs_list", "search"} & asked else set()) | (
            {"kv"} if {"kv_get", "kv_set"} & asked else set())
        granted |= {f"tool:{n}" for n in names}
        spec = {"messages": messages, "tools": names, "max_steps": max_steps, "max_tokens": max_tokens,
                "sampling": sampling}

        async def chat_main(sys: Sys, argv: list[str]) -> Any:
            a = json.loads(argv[0])
            r = await run_agent(sys, a["messages"], tools=a["tools"], max_steps=a["max_steps"],
                                max_tokens=a["max_tokens"], **a["sampling"])
            return msgspec.to_builtins(r)

        name = f"chat#{next(self._seq)}"
        self.programs.register(AppSpec(name, chat_main, frozenset(granted), description="Kernel.chat"))
        try:
            pid = await self.syscall("spawn", app=name, argv=[json.dumps(spec)], model=model, uid=uid)
        finally:
            self.programs.unregister(name)
        w = await self.wait(int(pid.pid))
        if w.exit_status != 0:
            raise SyscallError(w.errno or Errno.EIO, _strip_errno(w.error or f"exit status {w.exit_status}"))
        r = w.result
        return ChatResult(text=r["text"], calls=r["calls"], steps=r["steps"],
                          finish_reason=r["finish_reason"], pid=int(pid.pid), usage=w.usage)

    async def spawn(self, app: str | Main, argv: list[str] | None = None, *, model: str | None = None,
                    caps: list[str] | None = None, priority: int = 0, weight: float = 1.0,
                    token_quota: int | None = None, uid: int | None = None,
                    pin: list[str] | None = None) -> int:
        """Start an app by name, or a Python coroutine function ``main(sys, argv)``, as a process.

        It is a child of init and runs as ``uid``; without one, as the host's user
        (:attr:`KernelCore.host_uid`: never root unless ``as_root=True``).  ``pin``: texts its
        paged context starts with, pinned (ENOSPC here if they do not fit its model's window).
        """
        temp = None
        if callable(app):
            # A Python callable becomes a one-off app: registered for this spawn only.
            temp = f"py:{getattr(app, '__name__', 'main')}#{next(self._seq)}"
            self.programs.register(AppSpec(temp, app, frozenset(caps or {"llm", "spawn", "ipc", "mem"})))
            app = temp
        try:
            r = await self.syscall("spawn", app=app, argv=list(argv or []), model=model, caps=caps,
                                   priority=priority, weight=weight, token_quota=token_quota, uid=uid,
                                   pin=list(pin or []))
        finally:
            if temp is not None:
                self.programs.unregister(temp)
        return int(r.pid)

    async def wait(self, pid: int, timeout: float | None = None) -> WaitReply:
        """Wait for ``pid`` to end and reap it.  Cancelling the wait kills the process."""
        try:
            w: WaitReply = await self.syscall("wait", pid=pid, timeout=timeout)
        except SyscallError:
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._kill_and_reap(pid)
            raise
        return w

    async def kill_and_reap(self, pid: int) -> None:
        """Kill ``pid`` and reap it, even from a cancelled caller (the work is shielded)."""
        with anyio.CancelScope(shield=True):
            await self._kill_and_reap(pid)

    async def _kill_and_reap(self, pid: int) -> None:
        core, sys = self._core()
        if pid not in core.procs:
            return
        core.signal(pid, Signal.KILL)
        try:
            await sys.call(INIT_PID, "wait", {"pid": pid, "timeout": 30.0})
        except SyscallError:
            pass

    async def kill(self, pid: int) -> None:
        await self.signal(pid, "KILL")

    async def signal(self, pid: int, sig: str | int) -> None:
        await self.syscall("kill", pid=pid, signal=sig)

    async def ps(self) -> list[ProcInfo]:
        r = await self.syscall("ps")
        return list(r.procs)

    def stream(self, pid: int) -> AsyncIterator[Event]:
        """Events of ``pid`` from this call on (tokens, state changes, exit); ends at exit.

        The subscription is made here, not at the first iteration, so calling
        this right after ``spawn`` (with no await between) sees every token,
        and an unknown pid raises ``ESRCH`` at once.
        """
        core, _ = self._core()
        p = core.get(pid)
        if p.ended:
            return _ended(Event(pid=pid, kind="exit", exit_status=p.exit_status, state=p.state.value,
                                data=p.result))
        recv = core.events.subscribe(pid)
        core.watch(pid)
        return _drain(recv)


async def _ended(ev: Event) -> AsyncIterator[Event]:
    yield ev


async def _drain(recv: Subscription) -> AsyncIterator[Event]:
    async with recv:
        while batch := await recv.batch():  # all that is waiting, [] once the stream has ended
            for ev in batch:
                yield ev
                if ev.kind == "exit":
                    return


def _strip_errno(msg: str) -> str:
    name, sep, rest = msg.partition(": ")
    return rest if sep and name in Errno.__members__ else msg
