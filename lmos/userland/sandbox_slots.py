"""Caps on live sandbox workers: one per uid and one for the whole kernel.

Every code-app run and sandboxed tool call starts a worker process that may
grow to its memory ceiling (512 MiB for code apps).  Without a cap, one user
starting many runs at once could exhaust the machine's memory for everyone.
So a run takes a *slot* before its worker exists and gives it back when the
worker is gone: at most ``workers_per_uid`` slots per uid and ``workers_total``
in all (the ``[sandbox]`` settings, sized to the machine's memory by default;
see ``lmos.config.SandboxConfig``).  A run past a cap waits for a slot, and the
wait counts against its process's wall time like any other.  Runs without an
owner (the embedding API's own pools) count toward the total only.

*Parking* keeps nested apps from deadlocking on the per-uid cap: a code app
that waits for another process (``wait``, ``recv``: the ``team`` planner
waiting for its workers) parks its slot for that time.  Its worker still
exists and still counts toward the total, but not toward the uid's *active*
slots, and a run of a child of a parked process needs only a free active slot.
Every other run needs the uid's active *and* parked slots below the cap, so a
user with many planners at once starts as many as the cap allows and their
workers still get slots.  At most ``PARK_FACTOR`` times the cap are parked per
uid (deeper waiting chains keep their slots active), so parking never lets one
user hold more than that many idle workers.

Slots belong to one event loop (the kernel's); the counts are plain ints.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel

DEFAULT_PER_UID = 2
DEFAULT_TOTAL = 8
PARK_FACTOR = 3
PARKING_CALLS = frozenset({"wait", "recv"})  # syscalls that wait for another process


class WorkerSlots:
    """Live workers by owner (uid, or None), and the most each owner ever held at once."""

    def __init__(self) -> None:
        self.live: dict[int | None, int] = {}
        self.total = 0
        self.peak: dict[int | None, int] = {}
        self.peak_total = 0
        self.parked: dict[int, int] = {}  # uid -> slots parked by their runs
        self.parked_pids: set[int] = set()
        self._changed = anyio.Event()

    def free(self, owner: int | None, per_uid: int, total: int, parent: int | None = None) -> bool:
        if self.total >= total:
            return False
        if owner is None:
            return True
        live = self.live.get(owner, 0)
        if parent is not None and parent in self.parked_pids:
            return live - self.parked.get(owner, 0) < per_uid  # a parked planner's worker
        return live < per_uid

    def take(self, owner: int | None) -> None:
        n = self.live[owner] = self.live.get(owner, 0) + 1
        self.total += 1
        self.peak[owner] = max(self.peak.get(owner, 0), n)
        self.peak_total = max(self.peak_total, self.total)

    def give(self, owner: int | None) -> None:
        n = self.live.get(owner, 0) - 1
        if n > 0:
            self.live[owner] = n
        else:
            self.live.pop(owner, None)
        self.total -= 1
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    @asynccontextmanager
    async def parking(self, owner: int, pid: int) -> AsyncIterator[None]:
        """Park ``pid``'s slot (of uid ``owner``) while it waits for another process."""
        per_uid, _ = caps()
        if pid in self.parked_pids or self.parked.get(owner, 0) >= PARK_FACTOR * per_uid:
            yield  # already parked by an outer wait, or the uid parks too many: stays active
            return
        self.parked[owner] = self.parked.get(owner, 0) + 1
        self.parked_pids.add(pid)
        self._notify()
        try:
            yield
        finally:
            self.parked_pids.discard(pid)
            n = self.parked[owner] - 1
            if n > 0:
                self.parked[owner] = n
            else:
                self.parked.pop(owner, None)


_slots: weakref.WeakKeyDictionary[Any, WorkerSlots] = weakref.WeakKeyDictionary()


def worker_slots() -> WorkerSlots:
    """The running event loop's worker slots."""
    key = anyio.lowlevel.current_token().native_token
    s = _slots.get(key)
    if s is None:
        s = _slots[key] = WorkerSlots()
    return s


def caps() -> tuple[int, int]:
    """(workers per uid, workers in all) from the ``[sandbox]`` settings in force."""
    from lmos.userland import sandbox

    cfg: Any = sandbox.settings() if hasattr(sandbox, "settings") else None
    per_uid = int(getattr(cfg, "workers_per_uid", DEFAULT_PER_UID) or DEFAULT_PER_UID)
    total = int(getattr(cfg, "workers_total", DEFAULT_TOTAL) or DEFAULT_TOTAL)
    return max(1, per_uid), max(1, total)


@asynccontextmanager
async def worker_slot(owner: int | None, parent: int | None = None) -> AsyncIterator[None]:
    """Hold one worker slot of ``owner`` (waiting for one while the caps are reached);
    ``parent``: the pid of the run's parent process (see *parking* above)."""
    s = worker_slots()
    while True:
        per_uid, total = caps()
        if s.free(owner, per_uid, total, parent):
            break
        await s.changed()
    s.take(owner)
    try:
        yield
    finally:
        s.give(owner)
