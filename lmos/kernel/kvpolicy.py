"""Where a sequence's KV lives while it is not computing: keep, swap or drop.

Two moments need a choice.  When a process BLOCKS in a syscall (a tool, IPC,
sleep) its KV sits idle; and when the next step does not fit in the free blocks,
some sequence outside the step must give its blocks up.  Keeping costs device
memory for as long as the process waits; swapping costs two copies over the
host link; dropping costs a recompute (a prefill of every token) on return.

The adaptive rule follows the InferCept idea of counting waste in
memory x time.  Keeping wastes the process's own blocks for as long as the
syscall lasts, estimated from what calls of that name took before (an
exponential moving average per syscall name).  A move wastes the memory of the
whole running batch for as long as the move stalls the step: the copy out and
back for a swap, the re-prefill for a drop.  The cheaper waste wins.  With no
pressure on the pool nothing is moved at all, because idle memory that nobody
wants costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from lmos.drivers.base import Driver, KVCost, KVLocation, StepPlan, is_request_level
from lmos.kernel.process import Process

Mode = Literal["adaptive", "keep", "swap", "drop"]
Move = Literal["swap", "drop"]


class KVAdvisor:
    """Tracks each sequence's KV location and decides moves for one driver."""

    def __init__(self, driver: Driver, mode: Mode = "adaptive", *, pressure: float = 0.25,
                 prior_seconds: float = 0.05, alpha: float = 0.3) -> None:
        self.driver = driver
        self.mode: Mode = mode
        self.pressure = pressure  # below this fraction of free blocks the pool is "under pressure"
        self.prior = prior_seconds
        self.alpha = alpha
        self.expected: dict[str, float] = {}  # syscall name -> EMA of its blocking time
        self.loc: dict[int, str] = {}  # pid -> "device" | "host" | "none"
        self.blocked: dict[int, str] = {}  # pid -> syscall it is blocked in
        self._moves: dict[int, Move] = {}
        self.counts = {"keep": 0, "swap": 0, "drop": 0, "evict_swap": 0, "evict_drop": 0}
        self._swap_full = False  # a swap out failed for lack of host space; cleared once all are back
        # A request-level driver (a model behind a server) holds no KV the kernel could keep or
        # swap: each request sends the whole context, so its sequences are always "dropped".
        self.request_level = is_request_level(driver)
        if self.request_level:
            self.mode = "drop"

    # -- bookkeeping -------------------------------------------------------
    def track(self, pid: int) -> None:
        self.loc[pid] = "none" if self.request_level else "device"

    def forget(self, pid: int) -> None:
        self.loc.pop(pid, None)
        self.blocked.pop(pid, None)
        self._moves.pop(pid, None)

    def location(self, pid: int) -> str:
        return self.loc.get(pid, "device")

    def resync(self, pid: int) -> None:
        """Read ``pid``'s KV location back from the driver (after a failed step)."""
        if pid not in self.loc:
            return
        try:
            where = self.driver.cost(pid).location
        except Exception:
            return
        self.loc[pid] = {KVLocation.DEVICE: "device", KVLocation.HOST: "host"}.get(where, "none")

    @property
    def swap_ok(self) -> bool:
        """Swap is usable unless host space ran out and some sequence still holds it."""
        if self._swap_full and not any(where == "host" for where in self.loc.values()):
            self._swap_full = False  # every swapped sequence came back: the space is free again
        return not self._swap_full

    def swap_failed(self) -> None:
        self._swap_full = True

    def _pick(self, c: KVCost) -> Move:
        if self.mode == "swap" and self.swap_ok:
            return "swap"
        if self.mode in ("swap", "drop") or not self.swap_ok:
            return "drop"
        return "swap" if c.swap_seconds <= c.recompute_seconds else "drop"

    def mark(self, pid: int, where: str) -> None:
        if pid in self.loc:
            self.loc[pid] = where

    def has_moves(self) -> bool:
        return bool(self._moves)

    def cancel_move(self, pid: int) -> None:
        self._moves.pop(pid, None)

    def expect(self, name: str) -> float:
        return self.expected.get(name, self.prior)

    # -- blocking ----------------------------------------------------------
    def on_block(self, pid: int, name: str) -> None:
        """Decide what to do with ``pid``'s KV while it waits in syscall ``name``."""
        if pid not in self.loc or self.loc[pid] != "device":
            return
        self.blocked[pid] = name
        move = self._choose(pid, self.expect(name), blocked=True)
        if move is None:
            self.counts["keep"] += 1
        else:
            self._moves[pid] = move
            self.counts[move] += 1

    def on_unblock(self, pid: int, name: str, seconds: float) -> None:
        self.blocked.pop(pid, None)
        self._moves.pop(pid, None)  # not applied yet: the process is back, keep it
        old = self.expected.get(name)
        self.expected[name] = seconds if old is None else old + self.alpha * (seconds - old)

    def _choose(self, pid: int, seconds: float, *, blocked: bool) -> Move | None:
        if self.mode == "swap" and self.swap_ok:
            return "swap"
        if self.mode in ("swap", "drop"):
            return "drop"
        if self.mode == "keep" and blocked:
            return None
        drv = self.driver
        c = drv.cost(pid)
        if c.location is not KVLocation.DEVICE or c.exclusive_blocks == 0:
            return None
        if blocked:
            total = max(1, drv.limits.num_blocks)
            if drv.kv_free() / total >= self.pressure:
                return None  # nobody is short of memory: keeping is free
            if not self._worth_moving(c, seconds):
                return None  # back before a move would pay for itself
        return self._pick(c)

    def _worth_moving(self, c: KVCost, seconds: float) -> bool:
        """InferCept's comparison: blocks idle while kept against the batch's blocks stalled by the move."""
        move = self._pick(c)
        stall = c.swap_seconds if move == "swap" else c.recompute_seconds
        in_use = self.driver.limits.num_blocks - self.driver.kv_free()
        return seconds * c.exclusive_blocks > stall * max(in_use, 1)

    # -- applying moves inside a plan -------------------------------------
    def fill_moves(self, plan: StepPlan) -> None:
        self._freed = 0
        for pid, move in self._moves.items():
            if self.loc.get(pid) != "device":
                continue
            self._freed += self.driver.cost(pid).exclusive_blocks
            self._put(plan, pid, move)
        self._moves.clear()

    def freed_by(self, plan: StepPlan) -> int:
        return self._freed

    def _put(self, plan: StepPlan, pid: int, move: Move) -> None:
        if move == "swap":
            plan.swap_out.append(pid)
            self.loc[pid] = "host"
        else:
            plan.drop.append(pid)
            self.loc[pid] = "none"

    def make_room(self, need: int, plan: StepPlan, chosen: set[int], later: Sequence[Process],
                  runnable: dict[int, Process]) -> int:
        """Free at least ``need`` blocks from sequences outside this step.

        Victims, in order: sequences of processes that are not runnable (blocked
        or idle), then runnable ones the policy ranked last.  Victims join
        ``chosen`` so the planner does not schedule them in the same step.
        """
        freed = 0
        victims: list[int] = [pid for pid, where in self.loc.items()
                              if where == "device" and pid not in runnable and pid not in chosen]
        if self.mode == "keep":
            victims = [pid for pid in victims if pid not in self.blocked]
        elif self.mode == "adaptive":  # a process due back before a move pays off is not worth moving
            victims = [pid for pid in victims if pid not in self.blocked
                       or self._worth_moving(self.driver.cost(pid), self.expect(self.blocked[pid]))]
        victims.sort(key=lambda pid: -self.expect(self.blocked.get(pid, "")))
        victims += [p.pid for p in reversed(later) if self.loc.get(p.pid) == "device"]
        for pid in victims:
            if freed >= need:
                break
            c = self.driver.cost(pid)
            if c.exclusive_blocks == 0:
                continue
            move = self._pick(c)
            self._put(plan, pid, move)
            self.counts["evict_" + move] += 1
            chosen.add(pid)
            freed += c.exclusive_blocks
        return freed

    def held(self, pids: Iterable[int]) -> int:
        return sum(1 for p in pids if self.loc.get(p) == "device")
