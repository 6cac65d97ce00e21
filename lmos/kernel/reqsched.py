"""The scheduler loop of a request-level driver: whole requests, in the policy's order.

A model behind a server (:mod:`lmos.drivers.remote`) runs whole generation
requests and batches them itself, so there is no step to plan.  What stays with
the kernel is *who* generates: the runnable processes are ordered by the same
policy as a step-level driver's (fifo, rr, priority, fair share) and at most
``max_in_flight`` requests run at once *per server*, so the kernel's order,
not the server's queue, decides who waits.  Models served by one server (the
drivers' ``server``: scheme, host and port) share one limit
(:class:`ServerSlots`): the smallest ``max_in_flight`` of their tables.
Each running request is a task
that streams its tokens into the process's :class:`GenRequest` exactly as a
step's results are applied (stop strings, stop tokens, token quota, token
events), charging each token to the process's share as it arrives.

Cancellation is the stream's: a process killed or interrupted is withdrawn
from the scheduler, which cancels its task, which closes the HTTP stream, so
the server stops generating for it.  A request that has started runs to its
end; preemption happens between requests.  A process stopped (SIGSTOP) while its
request runs still gets its request finished, but its program sees the result
only once it is continued, as with a local model.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

import anyio
from anyio.abc import TaskGroup

from lmos.drivers.base import RequestDriver, RequestResult, RequestSpec
from lmos.errors import Errno, SyscallError
from lmos.kernel.process import Process, State

if TYPE_CHECKING:
    from lmos.kernel.request import GenRequest
    from lmos.kernel.scheduler import Scheduler

log = logging.getLogger("lmos.scheduler")


class ServerSlots:
    """The in-flight limit of one server, shared by the runners of every model it serves.

    A server's queue is one queue whatever model a request names, so the limit that keeps
    the ordering with the kernel must count all of them.  When a request ends, the other
    runners that share the server are woken before the one whose request ended, so that a
    freed slot does not always go back to the same model (each runner still picks *which*
    of its processes goes by its own policy)."""

    def __init__(self, server: str | None, limit: int) -> None:
        self.server = server  # None: a driver that names no server shares with nobody
        self.limit = limit
        self.used = 0
        self.runners: list[RequestRunner] = []

    def room(self) -> int:
        return self.limit - self.used

    def release(self, runner: RequestRunner) -> None:
        self.used -= 1
        for r in self.runners:
            if r is not runner:
                r.sched.kick()
        runner.sched.kick()


class RequestRunner:
    """Starts and streams the requests of one request-level driver's scheduler."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.driver = cast(RequestDriver, sched.driver)
        self.scopes: dict[int, anyio.CancelScope] = {}  # pid -> its running request's task
        self.held: dict[int, tuple[Process, GenRequest]] = {}  # finished while STOPPED: done on CONT
        self.started = 0  # requests started (statistics)
        self.slots = ServerSlots(getattr(self.driver, "server", None), self.driver.max_in_flight)
        self.slots.runners.append(self)
        self._tg: TaskGroup | None = None  # the task group of run(), while it runs

    def join(self, others: list[RequestRunner]) -> None:
        """Share the in-flight limit of the runners (of this kernel) whose driver is on the same server."""
        if self.slots.server is None or self.slots.used:
            return
        for o in others:
            if o is not self and o.slots.server == self.slots.server:
                o.slots.limit = min(o.slots.limit, self.slots.limit)
                o.slots.runners.append(self)
                self.slots = o.slots
                return

    def cancel(self, pid: int) -> None:
        self.held.pop(pid, None)
        scope = self.scopes.pop(pid, None)
        if scope is not None:
            scope.cancel()

    async def run(self) -> None:
        s = self.sched
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                while True:
                    self._start(tg)
                    if s.on_flush is not None:
                        s.on_flush(True)
                    await s._wakeup.wait()
                    s._wakeup = anyio.Event()
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                await self.driver.aclose()

    def submitted(self) -> None:
        """A process became runnable: if the server has room, its request starts now, a turn of the
        event loop sooner than when the runner's loop, woken, starts it (with 16 requests arriving
        at once every turn waits behind all of their work).  With no room it waits for the runner
        to rank it against the others (``Scheduler.submit`` kicks the loop in any case)."""
        if self._tg is not None:
            self._start(self._tg)

    def _start(self, tg: TaskGroup) -> None:
        """Start the best-ranked waiting requests while the driver has room for them."""
        s = self.sched
        for pid, (q, done) in list(self.held.items()):
            if q.state is not State.STOPPED:  # continued: now its program may see the result
                del self.held[pid]
                if q.request is done:
                    s._complete(q, done, time.monotonic())
        room = min(self.driver.max_in_flight - len(self.scopes), self.slots.room())
        if room <= 0:
            return
        scopes, stopped = self.scopes, State.STOPPED
        held = self.held
        cands = [p for p in s.runnable.values()
                 if p.state is not stopped and p.pid not in scopes and p.pid not in held]
        if not cands:
            return
        now = time.monotonic()
        for p in s.policy.order(cands, now)[:room]:
            req = p.request
            if req is None:
                continue
            scope = anyio.CancelScope()
            scopes[p.pid] = scope
            self.slots.used += 1
            s.running.add(p.pid)
            if p.state is State.READY:
                p.set_state(State.RUNNING, now)
            self.started += 1
            tg.start_soon(self._serve, p, req, scope)

    async def _serve(self, p: Process, req: GenRequest, scope: anyio.CancelScope) -> None:
        s, pid = self.sched, p.pid
        result = RequestResult()
        pushed = 0
        error: SyscallError | None = None
        try:
            with scope:
                done = False
                stream = self.driver.generate(pid, RequestSpec(max_tokens=req.max_tokens - len(req.out)),
                                              result)
                try:
                    async for tok in stream:
                        if p.request is not req:
                            break
                        pushed += 1
                        done = self._push(p, req, tok)
                        if done:
                            break
                finally:
                    with anyio.CancelScope(shield=True):
                        await stream.aclose()  # closes the HTTP stream if it is still open
                if p.request is req:
                    self._charge(p, result, pushed)
                    if not done:  # the server ended the request
                        req.finish_reason = "length" if result.finish_reason == "length" else "eos"
                    if p.state is State.STOPPED:
                        self.held[pid] = (p, req)
                    else:
                        s._complete(p, req, time.monotonic())
        except SyscallError as exc:
            error = exc
        except Exception as exc:  # a driver bug must not take the kernel down
            log.exception("request-level driver failed")
            error = SyscallError(Errno.EIO, f"remote generation failed: {type(exc).__name__}: {exc}")
        finally:
            if self.scopes.get(pid) is scope:
                del self.scopes[pid]
            s.running.discard(pid)
            if error is not None and p.request is req:
                s.fail(p, error)
            if s.on_flush is not None:
                s.on_flush(False)
            self.slots.release(self)  # (kicks this scheduler and the others on the same server)

    def _push(self, p: Process, req: GenRequest, tok: int) -> bool:
        """One streamed token: what ``Scheduler._apply`` does for a step's token."""
        s = self.sched
        s.policy.account(p, 1)
        s.tokens += 1
        stats = p.stats
        stats.generated_tokens += 1
        hook = s.on_token
        if hook is not None and p.pid in s.streamed:
            before = len(req.decoded)
            done = req.push(tok)
            hook(p.pid, tok, req.decoded[before:] if req.stop else req.new_text(), time.time())
            if s.on_flush is not None:
                s.on_flush(False)
        else:
            done = req.push(tok)
        if not done and p.token_quota is not None and stats.generated_tokens >= p.token_quota:
            req.finish_reason = "quota"
            done = True
        return done

    def _charge(self, p: Process, result: RequestResult, pushed: int) -> None:
        """The server's own count of the tokens it generated (``usage``) replaces the streamed
        count in the process's accounting: quotas and fair share are in the server's tokens."""
        if result.completion_tokens is None:
            return
        extra = result.completion_tokens - pushed
        if extra:
            p.stats.generated_tokens = max(0, p.stats.generated_tokens + extra)
            if extra > 0:
                self.sched.policy.account(p, extra)
