"""Who an HTTP request is inside the kernel: one session process per principal.

HTTP is a user, not init.  Each principal (the uid an API key maps to) gets
one long-lived process in the kernel, ``http`` in ``ps``, running as that
uid; every request of that principal makes its syscalls *as that process*.
So the kernel's own rules apply to HTTP with nothing re-implemented here:
``wait`` reaches only the session's children, ``kill``/``events``/``ps`` are
checked against the session's uid, quotas and the audit log count the user.
Processes spawned over HTTP are the session's children.

A child's result outlives the child: once it is read (``wait``, ``result``,
the end of a stream) the zombie is reaped and its reply kept in a bounded
cache (``keep_results`` and ``keep_bytes`` per principal, ``keep_for``
seconds), so it can be read again; a result nobody reads is reaped after ``reap_after`` seconds and
cached the same way, so the process table does not fill with zombies.

An event stream is subscribed through the ``events`` syscall (which checks
that the caller may watch the target) and then handed to the request that
asked for it, like a file descriptor: concurrent streams of one principal on
one pid each get their own copy and lose nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec

from lmos.errors import Errno, SyscallError
from lmos.kernel.events import Subscription
from lmos.syscalls.client import Sys
from lmos.syscalls.types import WaitReply
from lmos.system import AppSpec, Kernel

SESSION_APP = "http"


async def _session_main(sys: Sys, argv: list[str]) -> None:
    """The session process does nothing itself: requests make syscalls in its name."""
    await anyio.sleep_forever()


class Session:
    """One principal's process; ``call`` makes a syscall as it."""

    def __init__(self, sessions: Sessions, uid: int, pid: int) -> None:
        self.sessions, self.k, self.uid, self.pid = sessions, sessions.k, uid, pid
        self.results: OrderedDict[int, tuple[float, int, WaitReply]] = OrderedDict()  # pid -> (at, size, w)
        self.held = 0  # bytes of the kept results

    async def call(self, name: str, /, **args: Any) -> Any:
        sys = self.k.sys
        if sys is None:
            raise SyscallError(Errno.EAGAIN, "kernel is not running")
        return await sys.call(self.pid, name, args)

    # -- results -------------------------------------------------------------
    def cached(self, pid: int) -> WaitReply | None:
        got = self.results.get(pid)
        return got[2] if got is not None else None

    def keep(self, w: WaitReply) -> WaitReply:
        size = len(msgspec.json.encode(w))
        self.forget(w.pid)
        self.results[w.pid] = (time.monotonic(), size, w)
        self.held += size
        limits = self.sessions
        while self.results and (len(self.results) > limits.keep_results or self.held > limits.keep_bytes):
            self.forget(next(iter(self.results)))
        return w

    def forget(self, pid: int) -> None:
        got = self.results.pop(pid, None)
        if got is not None:
            self.held -= got[1]

    async def wait(self, pid: int, timeout: float | None = None, *, keep: bool = True) -> WaitReply:
        """The result of child ``pid``: reaps it on first read, answers from the cache after
        (``keep=False``: the caller hands the result on itself, as a completion's response does)."""
        w = self.cached(pid)
        if w is not None:
            return w
        try:
            w = await self.call("wait", pid=pid, timeout=timeout)
        except SyscallError as exc:
            w = self.cached(pid)  # reaped meanwhile by a concurrent request or the reaper
            if w is not None:
                return w
            if exc.errno == Errno.ECHILD:
                raise SyscallError(Errno.ECHILD, f"process {pid} was not started by this key (or its "
                                   "result has expired)") from None
            raise
        return self.keep(w) if keep else w

    async def kill_and_reap(self, pid: int) -> None:
        """End child ``pid`` for a client that went away; shielded, errors ignored."""
        with anyio.CancelScope(shield=True):
            try:
                await self.call("kill", pid=pid, signal="KILL")
            except SyscallError:
                pass
            with anyio.move_on_after(30):
                try:
                    await self.wait(pid, keep=False)
                except SyscallError:
                    pass

    def expire(self, now: float) -> None:
        keep_for = self.sessions.keep_for
        while self.results:
            pid, (at, _, _) = next(iter(self.results.items()))
            if now - at <= keep_for:
                break
            self.forget(pid)

    # -- events ----------------------------------------------------------------
    async def watch(self, pid: int) -> AsyncIterator[Any]:
        """Events of ``pid`` from now on, ending with its ``exit`` (checked by the ``events`` syscall)."""
        r = await self.call("events", pid=pid, timeout=0)
        return self._follow(pid, list(r.events), None if r.ended else self._claim(pid), ended=r.ended)

    def watched(self, pid: int) -> AsyncIterator[Any]:
        """Events of a child spawned with ``stream=True`` (subscribed inside ``spawn``).

        Call it right after the spawn, with no await between: the subscription is
        claimed here, before another request of this principal could share it.
        """
        return self._follow(pid, [], self._claim(pid), ended=False)

    def _claim(self, pid: int) -> Subscription | None:
        """Take the session's subscription to ``pid`` for one request (None: it stays the session's)."""
        sys = self.k.sys
        return sys.subs.pop((self.pid, pid), None) if sys is not None else None

    async def _follow(self, pid: int, first: list[Any], recv: Subscription | None, *,
                      ended: bool) -> AsyncIterator[Any]:
        try:
            for ev in first:
                yield ev
            if ended:
                return
            if recv is not None:  # ours alone now: read it directly
                async for ev in recv:
                    yield ev
                    if ev.kind in ("exit", "overflow"):
                        return
                return
            while True:  # the subscription stayed with the session: long-poll it
                r = await self.call("events", pid=pid, timeout=None)
                for ev in r.events:
                    yield ev
                if r.ended:
                    return
        finally:
            if recv is not None:
                recv.close()


class Sessions:
    """The session processes of one HTTP server, by uid, and the reaper of their children."""

    def __init__(self, k: Kernel, *, reap_after: float = 600.0, keep_results: int = 1024,
                 keep_bytes: int = 64 << 20, keep_for: float = 3600.0) -> None:
        self.k = k
        self.reap_after, self.keep_results, self.keep_for = reap_after, keep_results, keep_for
        self.keep_bytes = keep_bytes
        self.by_uid: dict[int, Session] = {}
        self._lock = anyio.Lock()

    def pids(self) -> set[int]:
        return {s.pid for s in self.by_uid.values()}

    async def get(self, uid: int) -> Session:
        """The live session of ``uid``, started on first use (or again if it was killed)."""
        s = self.by_uid.get(uid)
        if s is not None and self._alive(s.pid):
            return s
        async with self._lock:
            s = self.by_uid.get(uid)
            if s is not None and self._alive(s.pid):
                return s
            pid = await self._start(uid)
            fresh = Session(self, uid, pid)
            if s is not None:  # a killed session's cached results still belong to this user
                fresh.results, fresh.held = s.results, s.held
            self.by_uid[uid] = fresh
            return fresh

    def _alive(self, pid: int) -> bool:
        core = self.k.core
        p = core.procs.get(pid) if core is not None else None
        return p is not None and not p.ended

    async def _start(self, uid: int) -> int:
        sys = self.k.sys
        if sys is None:
            raise SyscallError(Errno.EAGAIN, "kernel is not running")
        # Offered to init alone, for this one spawn: no other process can start a session,
        # and an installed app of the same name is not touched.
        spec = AppSpec(SESSION_APP, _session_main, frozenset({"*"}),
                       description="the HTTP requests of one API key's user")
        programs = sys.programs
        held = programs.temp.get(SESSION_APP)
        programs.temp[SESSION_APP] = (1, spec)
        try:
            r = await self.k.syscall("spawn", app=SESSION_APP, argv=[f"uid={uid}"], uid=uid)
        finally:
            if held is not None:
                programs.temp[SESSION_APP] = held
            else:
                programs.temp.pop(SESSION_APP, None)
        return int(r.pid)

    async def run(self, period: float = 1.0) -> None:
        """Reap children whose result nobody read within ``reap_after``; expire old results."""
        while True:
            await anyio.sleep(min(period, max(self.reap_after / 4, 0.05)))
            await self.sweep()

    async def sweep(self) -> None:
        core = self.k.core
        if core is None:
            return
        now = time.monotonic()
        by_pid = {s.pid: s for s in self.by_uid.values()}
        for s in by_pid.values():
            s.expire(now)
        due = [(by_pid[p.ppid], p.pid) for p in list(core.procs.values())
               if p.ppid in by_pid and p.ended and now - (p.stats.ended or now) >= self.reap_after]
        for s, pid in due:
            try:
                await s.wait(pid, timeout=0)
            except SyscallError:
                pass

    async def close(self) -> None:
        """End the session processes (their children live on, re-parented to init)."""
        with anyio.CancelScope(shield=True):
            for s in list(self.by_uid.values()):
                if self._alive(s.pid):
                    try:
                        await self.k.kill_and_reap(s.pid)
                    except SyscallError:
                        pass
            self.by_uid.clear()


async def reaped(me: Session, pid: int) -> WaitReply:
    """Wait for child ``pid``; a cancelled wait (the client left) kills and reaps it."""
    try:
        return await me.wait(pid, keep=False)
    except BaseException:
        await me.kill_and_reap(pid)
        raise


def completion(pid: int, w: WaitReply) -> dict[str, Any]:
    """A finished ``llm.complete`` child as :class:`lmos.system.Completion` fields (or its error)."""
    if w.exit_status != 0:
        raise SyscallError(Errno(w.errno) if w.errno else Errno.EIO, _strip(w.error or
                                                                         f"exit status {w.exit_status}"))
    r = w.result
    return {"text": r["text"], "token_ids": r["token_ids"], "finish_reason": r["finish_reason"], "pid": pid,
            "usage": msgspec.to_builtins(w.usage), "prompt_tokens": r["prompt_tokens"],
            "completion_tokens": r["completion_tokens"]}


def _strip(msg: str) -> str:
    name, sep, rest = msg.partition(": ")
    return rest if sep and name in Errno.__members__ else msg
