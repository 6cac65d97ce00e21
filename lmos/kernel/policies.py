"""Scheduling policies: which runnable processes get the next step's slots.

A policy only *orders* candidates; the scheduler then fills the step in that
order until a driver limit (sequences, tokens, KV blocks) is reached.  Because
the order is recomputed every tick, any policy preempts at token boundaries.

- ``fifo``: first come, first served by request arrival; no preemption of an
  admitted request by a later one.
- ``rr``: round-robin with a token quantum; a process that has been served a
  quantum since its last turn goes to the back of the line.
- ``priority``: lower nice value first; a waiting process gains
  ``aging_per_second`` priority levels per second so nothing starves.
- ``fair``: weighted fair share of tokens (like Linux CFS): the process with the
  smallest ``vruntime = tokens served / weight`` goes first, and a newcomer
  starts at the current minimum so it cannot monopolise the model.

Ordering runs every tick over every runnable process, so it is written to cost
O(n) when the order barely changes (the usual case: Timsort on a sorted run) and
to allocate nothing the garbage collector tracks: ties are broken by pid with a
stable sort on pids first instead of ``(key, pid)`` tuples, whose thousands per
tick set off collections that made a step at 1,024 processes cost more than four
times one at 256.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from operator import attrgetter

from lmos.errors import Errno, SyscallError
from lmos.kernel.process import Process


class Policy:
    name = "base"

    def admit(self, proc: Process, now: float) -> None:
        """A process became runnable (new llm_generate request)."""

    def order(self, cands: Iterable[Process], now: float) -> list[Process]:
        raise NotImplementedError

    def account(self, proc: Process, tokens: int) -> None:
        """``tokens`` were computed for ``proc`` in the last step."""
        proc.served += tokens
        proc.vruntime += tokens / proc.weight


_pid = attrgetter("pid")
_vruntime = attrgetter("vruntime")


def by_key_then_pid(cands: Iterable[Process], key: Callable[[Process], float]) -> list[Process]:
    """``cands`` sorted by ``key``, ties by pid: what ``key=lambda p: (key(p), p.pid)`` gives."""
    out = sorted(cands, key=_pid)
    out.sort(key=key)  # stable: equal keys stay in pid order
    return out


class FIFO(Policy):
    name = "fifo"

    def order(self, cands: Iterable[Process], now: float) -> list[Process]:
        return by_key_then_pid(cands, _arrival)


def _arrival(p: Process) -> float:
    r = p.request
    return r.arrival if r is not None else 0.0


class RoundRobin(Policy):
    name = "rr"

    def __init__(self, quantum: int) -> None:
        self.quantum = max(1, quantum)
        self._turn = itertools.count()
        self._ticket: dict[int, int] = {}

    def admit(self, proc: Process, now: float) -> None:
        if proc.pid not in self._ticket:
            self._ticket[proc.pid] = next(self._turn)
            proc.served = 0

    def account(self, proc: Process, tokens: int) -> None:
        super().account(proc, tokens)
        if proc.served >= self.quantum:  # quantum used: back of the line
            proc.served = 0
            self._ticket[proc.pid] = next(self._turn)

    def order(self, cands: Iterable[Process], now: float) -> list[Process]:
        t = self._ticket
        return sorted(cands, key=lambda p: t.get(p.pid, 0))

    def forget(self, pid: int) -> None:
        self._ticket.pop(pid, None)


class PriorityAging(Policy):
    name = "priority"

    def __init__(self, aging_per_second: float) -> None:
        self.aging = aging_per_second

    def order(self, cands: Iterable[Process], now: float) -> list[Process]:
        aging = self.aging

        def key(p: Process) -> float:
            waited = now - p.ready_since if p.state.value == "ready" else 0.0
            return p.priority - aging * waited

        return by_key_then_pid(cands, key)


class FairShare(Policy):
    name = "fair"

    def __init__(self) -> None:
        self.min_vruntime = 0.0

    def admit(self, proc: Process, now: float) -> None:
        # A newcomer (or a process back from a long block) starts at the floor so
        # it neither starves others nor is starved for the time it was away.
        proc.vruntime = max(proc.vruntime, self.min_vruntime)

    def order(self, cands: Iterable[Process], now: float) -> list[Process]:
        ordered = by_key_then_pid(cands, _vruntime)
        if ordered:
            self.min_vruntime = max(self.min_vruntime, ordered[0].vruntime)
        return ordered


def make_policy(name: str, *, quantum: int = 16, aging_per_second: float = 4.0) -> Policy:
    if name == "fifo":
        return FIFO()
    if name == "rr":
        return RoundRobin(quantum)
    if name == "priority":
        return PriorityAging(aging_per_second)
    if name == "fair":
        return FairShare()
    raise SyscallError(Errno.EINVAL, f"unknown policy {name!r} (fifo, rr, priority, fair)")
