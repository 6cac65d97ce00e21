"""One scheduler loop per driver: every tick, one batched forward step.

Each tick the policy orders the runnable processes; the scheduler fills a
:class:`StepPlan` in that order while the driver's limits allow (sequences,
tokens, free KV blocks), chunking long prefills so a newcomer cannot stall the
running decodes, and runs the step in a worker thread so the event loop keeps
serving syscalls.  A program waiting on ``llm_generate`` is woken once, when
its request completes; per-token events are produced only for processes that
somebody streams, queued on each subscriber while the step's results are
applied, and their readers are woken after the tick (``on_flush``): at most
once per tick each, never once per token (see :mod:`lmos.kernel.events`).

A step at a thousand processes costs what four at 256 do only if the tick
allocates nothing the garbage collector counts per process: a tracked object per
sequence per tick set off collections on every tick, including full ones over
the whole heap (see ``StepItem`` and :mod:`lmos.kernel.policies`).

Memory pressure is resolved here too: when the next candidate does not fit in
the free blocks, sequences that are not in this step give theirs up, BLOCKED
ones first, by swap or drop according to :mod:`lmos.kernel.kvpolicy`.

A request-level driver (a model behind a server) has no steps: its loop is
:class:`lmos.kernel.reqsched.RequestRunner`, which starts whole requests in the
policy's order, at most the driver's ``max_in_flight`` at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from lmos.drivers.base import Driver, StepItem, StepPlan, is_request_level
from lmos.errors import Errno, SyscallError
from lmos.kernel.counters import STEP_BUCKETS, Histogram
from lmos.kernel.kvpolicy import KVAdvisor
from lmos.kernel.placement import StepPlacement
from lmos.kernel.policies import Policy
from lmos.kernel.process import Process, State

if TYPE_CHECKING:
    from lmos.kernel.reqsched import RequestRunner
    from lmos.kernel.request import GenRequest

log = logging.getLogger("lmos.scheduler")
TokenSink = Callable[[int, int, str, float], None]  # (pid, token id, its text, the tick's time)


class Scheduler:
    """Owns one driver: its run queue, its lock and its step loop."""

    def __init__(self, name: str, driver: Driver, policy: Policy, advisor: KVAdvisor,
                 *, threaded: bool = True, inline_below: float = 0.0) -> None:
        self.name = name
        self.driver = driver
        self.policy = policy
        self.kv = advisor
        self.threaded = threaded  # False: every step on the loop thread (trivial drivers only)
        self.placement = StepPlacement(inline_below)  # when threaded: which steps may still run inline
        # serialises every call into the driver; a request-level driver's calls are quick and on the
        # loop, so taking it free does not yield (a turn of the loop, twice per request, under load)
        self.lock = anyio.Lock(fast_acquire=is_request_level(driver))
        self.runnable: dict[int, Process] = {}
        self.running: set[int] = set()
        self.on_token: TokenSink | None = None  # the kernel's event bus (EventBus.token)
        self.streamed: Container[int] = set()  # pids with a subscriber (the kernel's event bus)
        # End of a tick (False) or before waiting for work (True): wake the readers of the tick's
        # token events, once per tick at most, never once per token (see kernel/events.py).
        self.on_flush: Callable[[bool], None] | None = None
        self._wakeup = anyio.Event()
        # statistics
        self.steps = 0
        self.step_seconds = 0.0  # inside driver.step
        self.tick_seconds = 0.0  # whole ticks, scheduling included
        # The scheduler's own work (planning, applying results, waking readers), in wall and in
        # this thread's CPU time: the CPU figure holds on a loaded machine, where ticks stretch.
        self.sched_seconds = 0.0
        self.sched_cpu = 0.0
        self.step_hist, self.tick_hist = Histogram(STEP_BUCKETS), Histogram(STEP_BUCKETS)  # for /metrics
        self.tokens = 0
        self.requests: RequestRunner | None = None  # the loop of a request-level driver
        if is_request_level(driver):
            from lmos.kernel.reqsched import RequestRunner

            self.requests = RequestRunner(self)

    # -- run queue ---------------------------------------------------------
    def submit(self, proc: Process) -> None:
        """Make ``proc`` (which has a request) runnable."""
        self.kv.cancel_move(proc.pid)
        self.policy.admit(proc, time.monotonic())
        self.runnable[proc.pid] = proc
        if proc.state is not State.STOPPED:
            proc.set_state(State.READY)
        if self.requests is not None:
            self.requests.submitted()
        self.kick()

    def withdraw(self, proc: Process) -> None:
        self.runnable.pop(proc.pid, None)
        self.running.discard(proc.pid)
        if self.requests is not None:
            self.requests.cancel(proc.pid)  # closes its request's stream to the server

    def kick(self) -> None:
        self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self.runnable)

    # -- the loop ----------------------------------------------------------
    async def run(self) -> None:
        if self.requests is not None:
            await self.requests.run()
            return
        while True:
            if not self._has_work():
                if self.on_flush is not None:
                    self.on_flush(True)
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                continue
            t0 = time.perf_counter()
            async with self.lock:
                w0, c0 = time.perf_counter(), time.thread_time()
                plan, picked = self._plan()
                self.sched_seconds += time.perf_counter() - w0
                self.sched_cpu += time.thread_time() - c0
                if not plan.items and not (plan.swap_out or plan.drop or plan.swap_in):
                    stalled = True
                else:
                    stalled = False
                    seqs = len(plan.items)
                    tokens = sum(item.num_tokens for item in plan.items)
                    inline = not self.threaded or self.placement.inline(seqs, tokens)
                    t1 = time.perf_counter()
                    try:
                        if inline:
                            results = self.driver.step(plan)
                        else:
                            results = await anyio.to_thread.run_sync(self.driver.step, plan)
                    except Exception as exc:  # a driver failure must not take the kernel down
                        self._step_failed(plan, picked, exc)
                        continue
                    finally:
                        dt = time.perf_counter() - t1
                        self.step_seconds += dt
                        self.step_hist.observe(dt)
                        self.placement.record(seqs, tokens, dt, inline)
            if stalled:
                # Nothing fits (all stopped, or KV exhausted by pinned sequences):
                # wait until something changes instead of spinning.
                if self.on_flush is not None:
                    self.on_flush(True)
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            w0, c0 = time.perf_counter(), time.thread_time()
            self._apply(plan, picked, results)
            if self.on_flush is not None:
                self.on_flush(False)
            self.sched_seconds += time.perf_counter() - w0
            self.sched_cpu += time.thread_time() - c0
            self.steps += 1
            tick = time.perf_counter() - t0
            self.tick_seconds += tick
            self.tick_hist.observe(tick)
            await anyio.lowlevel.checkpoint()  # let woken programs queue their next request

    def _has_work(self) -> bool:
        return bool(self.runnable) or self.kv.has_moves()

    # -- planning ----------------------------------------------------------
    def _plan(self) -> tuple[StepPlan, list[Process]]:
        """Choose this step's sequences and token counts.

        The policy order decides who gets the ``max_seqs`` slots.  Within the
        step, decodes (one pending token) are budgeted first and prefill chunks
        share what is left of ``max_tokens``, so a long prompt arriving never
        stalls the processes that are already generating.
        """
        drv = self.driver
        lim = drv.limits
        now = time.monotonic()
        stopped = State.STOPPED
        cands = [p for p in self.runnable.values() if p.state is not stopped]
        ordered = self.policy.order(cands, now)
        plan = StepPlan()
        self.kv.fill_moves(plan)
        free = drv.kv_free() + self.kv.freed_by(plan)
        slots = lim.max_seqs
        # Parallel lists, not (process, pending) pairs: a tuple per process per tick is enough
        # garbage to set off collections at 1,024 processes (see policies.py).
        wanted: list[Process] = []
        pends: list[int] = []
        decodes = 0
        pending = drv.pending
        add_wanted, add_pend = wanted.append, pends.append
        for p in ordered:
            if slots <= 0:
                break
            pend = pending(p.pid)
            if pend > 0:
                add_wanted(p)
                add_pend(pend)
                slots -= 1
                if pend == 1:
                    decodes += 1
        budget = lim.max_tokens
        prefill_budget = max(budget - decodes, 1)
        picked: list[Process] = []
        skipped: list[Process] = []
        # This step's pids and the victims evicted for it; built at the first eviction only
        # (a set add and lookup per process per tick otherwise, for nothing).
        chosen: set[int] | None = None
        loc, items = self.kv.loc.get, plan.items  # (KVAdvisor.location inlined: it runs per process)
        kv_needed, num_blocks = drv.kv_needed, lim.num_blocks
        add_item, add_picked = items.append, picked.append
        for i, (p, pend) in enumerate(zip(wanted, pends, strict=True)):
            pid = p.pid
            if (chosen is not None and pid in chosen) or budget <= 0:
                continue  # made a victim to fit an earlier candidate
            n = 1 if pend == 1 else min(pend, prefill_budget, budget)
            if n <= 0:
                continue  # this step's token budget is spent
            where = loc(pid, "device")
            decoding = pend == 1 and where == "device"
            # An admission (prefill, recompute, swap-in) reserves blocks for ALL its pending
            # tokens, so two half-admitted sequences can never wait on each other forever.
            need = kv_needed(pid, n if decoding else pend)
            if need > num_blocks:
                self.fail(p, SyscallError(Errno.ENOMEM, f"context needs {need} KV blocks; the pool "
                                          f"has {lim.num_blocks}"))
                continue
            if need > free:
                # A running decode may preempt lower-ranked runnable sequences; an admission
                # only takes blocks from blocked or idle ones, so runnable processes never
                # thrash each other's KV out.
                # Victims, best first: the lowest-ranked, then higher-ranked ones that could not
                # be scheduled anyway (without those a low-ranked decode and waiting admissions
                # could hold each other's blocks forever).
                later = skipped + wanted[i + 1:] + ordered[len(wanted):] if decoding else []
                if chosen is None:
                    chosen = {item.seq_id for item in items}
                free += self.kv.make_room(need - free, plan, chosen, later, self.runnable)
            if need > free:
                skipped.append(p)
                continue
            if where != "device":  # swapped: bring it back; dropped: its recompute starts now
                if where == "host":
                    plan.swap_in.append(pid)
                self.kv.mark(pid, "device")
            free -= need
            budget -= n
            if n > 1:
                prefill_budget -= n
            add_item(StepItem(pid, n, n == pend))
            add_picked(p)
            if chosen is not None:
                chosen.add(pid)
        if not plan.items and skipped:
            # Nothing fits and only runnable sequences hold the blocks: let the best-ranked
            # waiter take them, or every waiter would wait for another forever.
            p = skipped[0]
            pend = drv.pending(p.pid)
            n = max(1, min(pend, prefill_budget, budget))
            need = drv.kv_needed(p.pid, pend)
            others = [q for q in ordered if q is not p]
            free += self.kv.make_room(need - free, plan, chosen if chosen is not None else set(), others,
                                      self.runnable)
            if need <= free:
                if self.kv.location(p.pid) == "host":
                    plan.swap_in.append(p.pid)
                self.kv.mark(p.pid, "device")
                plan.items.append(StepItem(p.pid, n, n == pend))
                picked.append(p)
        return plan, picked

    # -- results -----------------------------------------------------------
    def _apply(self, plan: StepPlan, picked: list[Process], results: dict[int, int | None]) -> None:
        now = time.monotonic()
        account = self.policy.account
        hook = self.on_token
        streamed = self.streamed
        ts = time.time()  # one timestamp for the tick's token events
        new_running: set[int] = set()
        computed = 0
        runnable = self.runnable
        ready, running = State.READY, State.RUNNING
        for item, p in zip(plan.items, picked, strict=True):
            n = item.num_tokens
            computed += n
            account(p, n)
            req = p.request
            pid = p.pid
            if req is None or pid not in runnable:
                continue  # killed or interrupted while the step ran
            tok = results.get(pid)
            if tok is None:
                new_running.add(pid)
                if p.state is ready:
                    p.set_state(running, now)
                continue
            stats = p.stats
            stats.generated_tokens += 1
            if hook is not None and pid in streamed:
                # The token's text: with stop strings push decodes it (and cuts a stop string
                # off); otherwise it is decoded here, only for processes somebody watches.
                before = len(req.decoded)
                done = req.push(tok)
                hook(pid, tok, req.decoded[before:] if req.stop else req.new_text(), ts)
            else:
                done = req.push(tok)
            if not done and p.token_quota is not None and stats.generated_tokens >= p.token_quota:
                req.finish_reason = "quota"
                done = True
            if done:
                self._complete(p, req, now)
            else:
                new_running.add(pid)
                if p.state is ready:
                    p.set_state(running, now)
        self.tokens += computed
        # Left out of this step: back to READY.  The set difference runs in C; the loop below only
        # sees the processes that left, not every one that keeps running.
        for pid in self.running - new_running:
            q = runnable.get(pid)
            if q is not None and q.state is running:
                q.set_state(ready, now)
        self.running = new_running

    def _step_failed(self, plan: StepPlan, picked: list[Process], exc: Exception) -> None:
        """Recover from a failed step: re-read KV locations; fail requests only if the
        forward pass itself failed (a failed move is retried with the move disabled)."""
        err = exc if isinstance(exc, SyscallError) else SyscallError(Errno.EIO, f"driver step failed: {exc}")
        moved = plan.swap_out + plan.swap_in + plan.drop
        for pid in moved:
            self.kv.resync(pid)
        if moved and err.errno is Errno.ENOMEM and plan.swap_out:
            log.warning("swap failed (%s); evicting by recompute until swapped sequences return",
                        err.message)
            self.kv.swap_failed()
            return
        log.error("driver step failed: %s", err)
        for p in picked:
            self.fail(p, err)

    def _complete(self, p: Process, req: GenRequest, now: float) -> None:
        self.runnable.pop(p.pid, None)
        p.request = None
        if p.state is not State.STOPPED:
            p.set_state(State.RUNNING, now)  # back in its own program code
        else:
            p.stopped_from = State.RUNNING
        req.done.set()

    def fail(self, p: Process, err: SyscallError) -> None:
        req = p.request
        self.withdraw(p)
        p.request = None
        if req is not None:
            req.fail(err)

    def stats(self) -> dict[str, float]:
        steps = max(1, self.steps)
        return {
            "steps": self.steps,
            "tokens": self.tokens,
            "step_us": 1e6 * self.step_seconds / steps,
            "overhead_us": 1e6 * (self.tick_seconds - self.step_seconds) / steps,
            "sched_us": 1e6 * self.sched_seconds / steps,
            "sched_cpu_us": 1e6 * self.sched_cpu / steps,
            "runnable": len(self.runnable),
            "inline_steps": self.placement.inline_steps,
        }


def no_driver(name: str) -> SyscallError:
    return SyscallError(Errno.ENOENT, f"no such model: {name}")
