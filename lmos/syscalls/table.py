"""The one dispatch path: decode, check capability, run, trace, audit.

Every syscall, whether made by a program in the kernel's process, by the
embedding API (as init, pid 1), by sandboxed code over a worker's pipe, or by
the HTTP API, goes through :meth:`Syscalls.dispatch`.  It never raises for a
bad request: the result is ``Ok(value)`` or ``Err(errno, name, message)``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from lmos.errors import Errno, SyscallError
from lmos.kernel.counters import SyscallCounters
from lmos.kernel.events import Subscription
from lmos.kernel.kernel import INIT_PID, KernelCore, ProcessExit
from lmos.kernel.process import Process
from lmos.syscalls import apps, audit_query, chat, fs, io, ipc, kv, llm, mem, mount, proc, replay, tool  # noqa: F401  (registers the families)
from lmos.syscalls import checkpoint as _checkpoint  # noqa: F401  (registers checkpoint and restore)
from lmos.syscalls import history as _history  # noqa: F401  (registers proc_history: lmos ps --all)
from lmos.syscalls.caps import grants
from lmos.syscalls.confirm import ConfirmPolicy
from lmos.syscalls.journaled import append as journal_append
from lmos.syscalls.journaled import encode_payload, is_effect, is_session
from lmos.syscalls.journaled import intent as journal_intent
from lmos.syscalls.recovery import Cursor
from lmos.syscalls.recovery import answer as recovery_answer
from lmos.syscalls.registry import BY_NR, TABLE, SyscallDef
from lmos.syscalls.tool import ToolRegistry
from lmos.syscalls.types import Err, Ok, Req, Resp, Result, TraceEntry

log = logging.getLogger("lmos.syscalls")

Main = Callable[[Any, list[str]], Awaitable[Any]]  # (Sys, argv) -> result
MAX_TRACED = 4096  # processes whose recent trace is kept in memory


@dataclass(frozen=True)
class AppSpec:
    """What ``spawn`` needs to start an app: its entry and what it may do."""

    name: str
    main: Main
    caps: frozenset[str] = frozenset({"llm"})
    model: str | None = None
    description: str = ""
    token_quota: int | None = None
    max_children: int | None = None
    wall_seconds: float | None = None  # the kernel ends the process after this long (and its children)
    extra: dict[str, Any] = field(default_factory=dict)


class ProgramRegistry:
    """Name -> app.  The facade registers built-in apps and Python callables."""

    def __init__(self) -> None:
        self.apps: dict[str, AppSpec] = {}
        self.temp: dict[str, tuple[int, AppSpec]] = {}  # loaded, not installed: name -> (loader pid, spec)

    def register(self, spec: AppSpec) -> None:
        self.apps[spec.name] = spec

    def add_temp(self, spec: AppSpec, loader: int) -> None:
        """An app only process ``loader`` may spawn, once (``app_load``); it replaces the loader's last."""
        for name, (pid, _) in list(self.temp.items()):
            if pid == loader:
                del self.temp[name]
        self.temp[spec.name] = (loader, spec)

    def take(self, name: str, pid: int) -> AppSpec:
        """The app ``pid`` may spawn under ``name``: a temporary one of its own is used up here."""
        held = self.temp.get(name)
        if held is not None and held[0] == pid:
            del self.temp[name]
            return held[1]
        return self.get(name)

    def get(self, name: str) -> AppSpec:
        spec = self.apps.get(name)
        if spec is None:
            raise SyscallError(Errno.ENOENT, f"no such app: {name}")
        return spec

    def unregister(self, name: str) -> None:
        self.apps.pop(name, None)


@dataclass(slots=True)
class Ctx:
    """What a handler sees: the system, the kernel and the calling process."""

    sys: Syscalls
    kernel: KernelCore
    proc: Process


class Syscalls:
    """The syscall layer of one kernel.

    It owns the per-kernel state of the syscalls: the apps (``programs``), the
    tools ``tool_call`` runs (``tools``) and the host callback that confirms
    irreversible actions (``confirm_policy``; None refuses them, see
    :mod:`lmos.syscalls.confirm`).
    """

    def __init__(self, kernel: KernelCore, programs: ProgramRegistry | None = None,
                 trace_len: int = 256, *, tools: ToolRegistry | None = None,
                 confirm_policy: ConfirmPolicy | None = None) -> None:
        self.kernel = kernel
        self.programs = programs or ProgramRegistry()
        self.tools = tools if tools is not None else ToolRegistry()
        self.confirm_policy = confirm_policy
        self.trace_len = trace_len
        self.traces: dict[int, deque[TraceEntry]] = {}
        self.counters = SyscallCounters()  # by name and errno, with latency (lmos.server.metrics)
        self.subs: dict[tuple[int, int], Subscription] = {}  # (watcher, target)
        self.client_factory: Callable[[Syscalls, int], Any] | None = None
        self.apps: apps.AppService | None = None  # the app store, set by the facade (lmos.system)
        self.recovering: dict[int, Cursor] = {}  # pids replaying their journal after a restart
        kernel.on_reap.append(self._reaped)

    # -- dispatch ------------------------------------------------------------
    def lookup(self, call: str | int) -> SyscallDef:
        d = BY_NR.get(call) if isinstance(call, int) and not isinstance(call, bool) else TABLE.get(str(call))
        if d is None:
            raise SyscallError(Errno.ENOSYS, f"no such syscall: {call!r}")
        return d

    @staticmethod
    def decode(d: SyscallDef, payload: Any) -> Req:
        try:
            if payload is None:
                return d.req()
            if isinstance(payload, d.req):
                return payload
            if isinstance(payload, bytes | bytearray | memoryview):
                return msgspec.json.decode(payload, type=d.req)
            return msgspec.convert(payload, d.req)
        except msgspec.ValidationError as exc:
            raise SyscallError(Errno.EINVAL, f"{d.name}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise SyscallError(Errno.EFAULT, f"{d.name}: undecodable payload: {exc}") from None
        except TypeError as exc:
            raise SyscallError(Errno.EINVAL, f"{d.name}: {exc}") from None

    async def dispatch(self, pid: int, call: str | int, payload: Any = None) -> Result:
        """Run one syscall for ``pid``; never raises except to end the caller (exit)."""
        t0 = time.perf_counter()
        name, digest, cap = str(call), "", None
        p: Process | None = None
        req: Req | None = None
        data = b""
        step: int | None = None  # an effect's step, journaled as in flight before it runs
        sj = self.kernel.sysjournal
        caller = self.kernel.procs.get(pid)
        if sj is not None and caller is not None and is_session(caller.app, caller.argv):
            sj = None  # a front end's session: audited, not journaled (lmos.syscalls.journaled)
        try:
            d = self.lookup(call)
            name = d.name
            p = self.kernel.procs.get(pid)
            if p is None or p.ended:
                raise SyscallError(Errno.ESRCH, f"no such process {pid}")
            p.stats.syscalls += 1
            req = self.decode(d, payload)
            data, digest = await _encoded(req)
            cap = d.needed_cap(req)
            if self.recovering and pid in self.recovering:  # answered from its journal (syscalls/recovery.py)
                replayed = await recovery_answer(self, p, d, req, data, cap, t0)
                if replayed is not None:
                    return replayed
            if cap is not None and not grants(p.caps, cap):
                raise SyscallError(Errno.EPERM, f"{name} needs capability {cap!r}")
            if sj is not None and pid != INIT_PID and is_effect(name, req):
                step = await journal_intent(sj, p, name, data, cap)
            value = await d.handler(Ctx(self, self.kernel, p), req)
            result: Result = Ok(value)
        except ProcessExit as e:
            self._record(p, pid, name, digest, cap, 0, "", t0)
            if sj is not None and p is not None and pid != INIT_PID and e.error is None:
                with anyio.CancelScope(shield=True):  # the exit is the journal's last step
                    await journal_append(sj, self.kernel, p, name, data, req,
                                           Ok({"status": e.status, "result": e.result}), cap, t0)
            raise
        except SyscallError as exc:
            result = Err(int(exc.errno), exc.errno.name, exc.message)
        except Exception as exc:  # a handler bug: report it, keep the kernel alive
            log.exception("syscall %s failed", name)
            result = Err(int(Errno.EIO), "EIO", f"{name}: internal error: {type(exc).__name__}: {exc}")
        errno = result.errno if isinstance(result, Err) else 0
        self._record(p, pid, name, digest, cap, errno, result.message if isinstance(result, Err) else "", t0)
        if sj is not None and p is not None and pid != INIT_PID and not p.ended:
            # the durability point: the program sees the result once its journal row is committed
            data = data or encode_payload(payload)
            result = await journal_append(sj, self.kernel, p, name, data, req, result, cap, t0, step)
        return result

    async def call(self, pid: int, call: str | int, payload: Any = None, /, **args: Any) -> Any:
        """Dispatch and unwrap: return the response or raise :class:`SyscallError`."""
        res = await self.dispatch(pid, call, args if payload is None and args else payload)
        if isinstance(res, Err):
            raise SyscallError(res.errno, res.message)
        return res.value

    # -- trace and audit -----------------------------------------------------
    def _record(self, p: Process | None, pid: int, name: str, digest: str, cap: str | None,
                errno: int, error: str, t0: float) -> None:
        seconds = time.perf_counter() - t0
        dur = int(seconds * 1e6)
        # an unknown name (ENOSYS) is the caller's string: one label for all, not one per typo
        self.counters.record(name if name in TABLE else "?", errno, seconds)
        uid = p.uid if p is not None else -1
        now = time.time()
        entry = TraceEntry(ts=now, pid=pid, uid=uid, name=name, digest=digest, ok=errno == 0,
                           errno=errno, error=error, duration_us=dur)
        ring = self.traces.get(pid)
        if ring is None and p is not None and not p.reaped:  # no buffer for a pid that is gone
            if len(self.traces) >= MAX_TRACED:  # forget the oldest; the audit table keeps everything
                del self.traces[next(iter(self.traces))]
            ring = self.traces[pid] = deque(maxlen=self.trace_len)
        if ring is not None:
            ring.append(entry)
        decision = "allow" if errno == 0 else ("deny" if errno == Errno.EPERM else "error")
        self.kernel.journal.post(
            "INSERT INTO audit(ts, pid, uid, name, cap, decision, errno, duration_us, digest) "
            "VALUES(?,?,?,?,?,?,?,?,?)", (now, pid, uid, name, cap, decision, errno, dur, digest))

    def trace(self, pid: int, limit: int = 100) -> list[TraceEntry]:
        ring = self.traces.get(pid)
        return list(ring)[-limit:] if ring else []

    def forget(self, pid: int) -> None:
        self.traces.pop(pid, None)

    def _reaped(self, p: Process) -> None:
        """A process left the table: free its trace ring and the event watches it held.

        Its trace stays readable from the audit table (``audited``), under the same
        owner checks as a live process's.
        """
        self.forget(p.pid)
        for key in [k for k in self.subs if k[0] == p.pid]:
            self.subs.pop(key).close()

    async def audited(self, pid: int, limit: int) -> tuple[list[TraceEntry], int, int] | None:
        """A reaped process's trace from the durable audit table, with its uid and parent pid.

        None when the journal never saw ``pid``.  The caller checks ownership, as
        for a live process (the uid and parent come from the processes table).
        """
        journal = self.kernel.journal
        await journal.flush()
        owner = await journal.aquery("SELECT uid, ppid FROM processes WHERE pid=?", (pid,))
        if not owner:
            return None
        rows = await journal.aquery(
            "SELECT ts, pid, uid, name, digest, errno, duration_us FROM audit WHERE pid=? "
            "ORDER BY id DESC LIMIT ?", (pid, limit))
        return [TraceEntry(ts=r[0], pid=r[1], uid=r[2], name=r[3], digest=r[4] or "", ok=r[5] == 0,
                           errno=r[5], error="", duration_us=r[6]) for r in reversed(rows)], owner[0][0], \
            owner[0][1]

    # -- programs --------------------------------------------------------------
    def client(self, pid: int) -> Any:
        """The object a program uses to make syscalls (``lmos.syscalls.client.Sys``)."""
        if self.client_factory is None:
            from lmos.syscalls.client import Sys

            return Sys(self, pid)
        return self.client_factory(self, pid)


_HASH_INLINE = 1 << 16  # larger arguments (a 16 MB prompt) are hashed in a thread: hashlib releases the GIL


async def _encoded(req: Req | Resp) -> tuple[bytes, str]:
    """The request as JSON (what the syscall journal stores) and its short digest (what audit keeps)."""
    data = msgspec.json.encode(req)
    if len(data) <= _HASH_INLINE:
        return data, hashlib.blake2b(data, digest_size=6).hexdigest()
    return data, await anyio.to_thread.run_sync(lambda: hashlib.blake2b(data, digest_size=6).hexdigest())
