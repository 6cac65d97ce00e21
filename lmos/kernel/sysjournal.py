"""The syscall journal: every completed syscall of a process, in order, durable.

Every side effect of a process passes through the syscall table, so the table
is where durability lives (docs/durability.md).  The dispatcher
(:mod:`lmos.syscalls.table`) hands each completed syscall of a process to
:meth:`SysJournal.append`: its step number (0, 1, 2 ... per pid, in completion
order), the request as JSON, the result as JSON or the errno and message, the
capability checked and the decision, the time it took, and for
``llm_generate`` where the prompt and the output lie in the context and the
prompt's token ids (:mod:`lmos.syscalls.journaled`).

**The durability point.**  ``append`` returns only once the row is committed
(``synchronous=FULL``), and the dispatcher returns the result to the program
only after ``append`` returned: a result a program has seen is on disk.  The
rows are committed by *group commit*: they go into a transaction the database
makes anyway (another process's ``kv_set`` or file write takes them along, see
:attr:`Journal.ride`), or, when none is in flight, into one the committer task
makes for them, so 256 processes that each make a syscall at once pay one fsync,
not 256.  An effect's rows, in flight and completed, go into the very next
transaction (the one that makes the change, at the latest).  Other rows wait for a
batch worth its index pages while the database is busy: as many rows as writes in flight, up
to ``RIDE_ROWS``, or ``RIDE_WAIT`` seconds (:meth:`SysJournal._ride`).  The
committer's transactions also carry the audit rows and process-table rows that
other modules queue with :meth:`Journal.post`.  A commit that fails (disk full,
read-only file system) fails every syscall of its batch with that errno (ENOSPC,
EROFS, EIO): the program never sees a result its journal does not hold.

**Retention.**  When a process is reaped its journal is kept for
``journal_keep_seconds`` (0: deleted at once), and its bytes count against
its owner's store quota (:mod:`lmos.kernel.quota`); a journal that does not fit
in the quota is deleted rather than refused, since the process is gone
already.  Expired journals are deleted, and their bytes given back, by the
committer (at most once a minute) and at boot.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from lmos.errors import SyscallError
from lmos.kernel.journal import Journal
from lmos.kernel.quota import StoreQuota
from lmos.kernel.sysjournal_entry import INFLIGHT, INSERT, ROW_BYTES, Entry
from lmos.kernel.sysjournal_read import ProcRecord, read_entries, read_process
from lmos.kernel.sysjournal_retain import purge_expired, retain, storage_error

__all__ = ["INFLIGHT", "INSERT", "ROW_BYTES", "Entry", "ProcRecord", "SysJournal", "enabled", "read_entries",
           "read_process", "storage_error"]

log = logging.getLogger("lmos.sysjournal")

PURGE_EVERY = 60.0  # seconds between sweeps of expired journals
RETAIN_DELAY = 0.5  # at most this long between a reap and its journal's retention decision
# A write of another process takes the completed rows along once as many wait as there are writes in
# flight (at most RIDE_ROWS), or the oldest has waited RIDE_WAIT seconds (see SysJournal._ride).
RIDE_ROWS = 32
RIDE_WAIT = 0.01


def enabled(setting: bool | None, state_dir: str) -> bool:
    """``journal = true|false`` in the config; unset means on when the state is on disk."""
    return (state_dir != ":memory:") if setting is None else setting


class _Batch:
    """Rows committed together (as SQL parameter tuples), and the event their waiters wake on."""

    __slots__ = ("done", "error", "followers", "rows", "since")

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []
        self.since = 0.0  # time.monotonic() of the first row
        self.done = anyio.Event()
        self.error: SyscallError | None = None
        self.followers: list[_Batch] = []  # batches whose rows were merged into this one

    def finish(self, error: SyscallError | None = None) -> None:
        for b in [self, *self.followers]:
            b.error = error
            if b is not self:
                b.finish(error)
            b.done.set()


@dataclass(slots=True)
class _Ride:
    """What one transaction took along: journal rows and the queued posts."""

    urgent: _Batch | None  # effects' rows (None: none)
    batch: _Batch | None  # completed rows (None: left for a later transaction)
    posted: list[tuple[str, Any]]


class SysJournal:
    """The per-process syscall logs of one kernel, written by group commit.

    Rows wait in two batches, in-flight and completed, as ready SQL parameters
    (built on the event loop, so the transaction that takes them, which holds the
    database's one write lock, only inserts them).  A transaction the kernel's
    database commits anyway takes them along (:attr:`Journal.ride`: a ``kv_set``
    or a file write another process makes), the rows of effects always and the
    others once they make a batch (:meth:`_ride`), and when the database
    is idle the committer task commits them on its own.  Batches move between the
    event loop and the database threads under a lock.  Their waiters are woken on
    the event loop: by the write that carried them, as it returns there
    (:attr:`Journal.on_written`), else by one callback for all the batches that
    finished since the last one, so a busy event loop is not interrupted once per
    commit.
    """

    def __init__(self, journal: Journal, quota: StoreQuota, keep_seconds: float) -> None:
        self.journal = journal
        self.quota = quota
        self.keep_seconds = keep_seconds
        self._steps: dict[int, int] = {}
        self._lock = threading.Lock()
        self._batch = _Batch()  # completed rows
        self._urgent = _Batch()  # effects' rows: the next transaction takes them along
        self._effects: set[tuple[int, int]] = set()  # (pid, step) of effects queued in flight
        self._reaped: list[tuple[int, int]] = []  # (pid, uid) whose journals retention decides on
        self._wake = anyio.Event()
        self._loop_thread = threading.get_ident()
        self._call_soon: Callable[[Callable[[], object]], object] | None = None
        self._finished: list[_Batch] = []  # committed in a database thread, waiters not yet woken
        self._drain_due = False  # a callback that wakes them is scheduled on the event loop
        self._limiter = anyio.CapacityLimiter(1)  # the committer's own thread: never queued behind others
        self._last_purge = 0.0
        self.commits = 0  # transactions that carried rows (the committer's own, or another write's)
        self.own_commits = 0  # of them, transactions the committer made for the rows alone
        self.rows = 0
        self._written: anyio.Event | None = None  # set when the database has no durable write in flight
        journal.ride, journal.rode = self._ride, self._rode
        journal.on_written = self._on_written

    # -- writing -----------------------------------------------------------
    def next_step(self, pid: int) -> int:
        step = self._steps.get(pid, 0)
        self._steps[pid] = step + 1
        return step

    def set_step(self, pid: int, step: int) -> None:
        """The next step of ``pid`` is ``step`` (a process that goes on from a journal on disk)."""
        self._steps[pid] = step

    async def append(self, entry: Entry) -> None:
        """Queue ``entry`` and return once it is committed; raises the commit's errno if it failed."""
        batch = self.queue(entry)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def queue(self, entry: Entry) -> _Batch:
        """Queue ``entry`` without waiting.  An effect's row (in flight or completed) is committed no
        later than the next transaction that starts after this call (it takes the row along); any
        other row with the next batch (:meth:`_ride`), or by the committer once the database is idle."""
        row = entry.row()
        key = (entry.pid, entry.step)
        with self._lock:
            # An effect's rows are urgent, its in-flight row and its completion alike: until the
            # completion is on disk a crash leaves the effect in flight, and recovery can only report
            # it (EINPROGRESS) where it could have given the result back.
            if entry.errno == INFLIGHT:
                self._effects.add(key)
                batch = self._urgent
            elif key in self._effects:
                self._effects.discard(key)
                batch = self._urgent
            else:
                batch = self._batch
            batch.rows.append(row)
            first = len(batch.rows) == 1
            if first:
                batch.since = time.monotonic()
        if first:  # the committer wakes once per batch, not once per row
            self._wake.set()
        return batch

    def reaped(self, pid: int, uid: int) -> None:
        """``pid`` left the process table: keep its journal (charged to ``uid``) or delete it."""
        self._steps.pop(pid, None)
        if self._effects:  # effects that never completed (the process ended during them)
            with self._lock:
                self._effects = {k for k in self._effects if k[0] != pid}
        self._reaped.append((pid, uid))  # decided by the committer's next transaction (within RETAIN_DELAY)

    # -- riding along with other transactions (Journal.ride / rode) ------------
    def _ride(self, c: sqlite3.Connection) -> object:
        """Write the queued rows inside another transaction, before its COMMIT.

        An effect's rows always come along: the change of an effect in the database must never be
        committed without its in-flight row (exactly-once, :mod:`lmos.syscalls.recovery`), and
        until its completion is committed a crash leaves it in flight (see :meth:`queue`).  The
        other rows come along only when it is worth it.  Each row dirties an index page of its own
        (the journal is keyed by pid, step), and a transaction writes and syncs every page it
        dirtied, so rows riding each ``kv_set`` a few at a time made the database write 3-4 times
        the bytes it wrote without the journal; a large batch shares its pages.  So the rows wait for
        as many of them as there are writes in flight (the queue for the database: when it is
        long, waiting costs the processes nothing, they would queue anyway), up to RIDE_ROWS, or
        RIDE_WAIT seconds; the last write in flight always takes them.  Their processes wait
        meanwhile (the durability point), while the writes of the other processes go on.
        An effect's rows may be committed before other rows queued earlier: a process's earlier
        rows are durable before it makes its next syscall, so no process's journal has a gap (a
        program that makes syscalls concurrently may have both kinds queued: then they come along
        together).
        """
        urgent: _Batch | None = None
        batch: _Batch | None = None
        with self._lock:
            if self._urgent.rows:
                urgent, self._urgent = self._urgent, _Batch()
            rows = self._batch.rows
            if rows and (len(rows) >= min(RIDE_ROWS, self.journal.writes_in_flight)
                         or time.monotonic() - self._batch.since >= RIDE_WAIT
                         or (urgent is not None and _same_process(urgent.rows, rows))):
                batch, self._batch = self._batch, _Batch()
        # The rows queued with Journal.post come along too, first: a process's row in ``processes``
        # is never committed after its journal (recovery needs both).  The batches are taken before
        # the posts, so every post queued before one of their rows is among them.
        posted = self.journal.take_queued()
        if urgent is None and batch is None and not posted:
            return None
        token = _Ride(urgent, batch, posted)
        try:
            for sql, params in posted:
                c.execute(sql, params)
            for b in (urgent, batch):
                if b is not None:
                    c.executemany(INSERT, b.rows)
        except BaseException:
            self._rode(token, False)
            raise
        return token

    def _rode(self, ride: object, ok: bool) -> None:
        assert isinstance(ride, _Ride)
        if not ok:
            self.journal.requeue(ride.posted)
        if ok and (ride.urgent is not None or ride.batch is not None):
            self.commits += 1
        for b, urgent in ((ride.urgent, True), (ride.batch, False)):
            if b is None:
                continue
            if ok:
                self.rows += len(b.rows)
                self._committed(b)
                continue
            # the other write failed (EDQUOT ...): the next transaction takes these rows along, first,
            # in their order; their waiters wake when the merged batch commits
            with self._lock:
                into = self._urgent if urgent else self._batch
                into.rows[:0] = b.rows
                into.since = b.since  # queued before the rows already there
                into.followers.append(b)
            self._notify(self._wake.set)

    def _committed(self, batch: _Batch) -> None:
        """Wake ``batch``'s waiters (any thread): at once on the event loop; from a database thread,
        by a write returning to the event loop (:meth:`_on_written`: while any write is in flight,
        one will, most often the very write that carried the batch), else by one scheduled callback
        (a thread-safe call wakes the event loop: once per commit it cost as much as the rows)."""
        if threading.get_ident() == self._loop_thread or self._call_soon is None:
            batch.finish()
            return
        with self._lock:
            self._finished.append(batch)
            # read after the append: a write that returns after this sees the batch (_on_written)
            if self._drain_due or self.journal.writes_in_flight > 0:
                return
            self._drain_due = True
        self._call_soon(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._drain_due = False
            done, self._finished = self._finished, []
        for b in done:
            b.finish()

    def _on_written(self) -> None:
        """A durable write returned to the event loop: wake the waiters of what it carried, and the
        committer if the database is now idle."""
        if self._finished:
            self._drain()
        if self._written is not None and self.journal.writes_in_flight == 0:
            self._written.set()

    def _notify(self, fn: Callable[[], object]) -> None:
        if threading.get_ident() == self._loop_thread or self._call_soon is None:
            fn()
        else:
            self._call_soon(fn)

    # -- the committer -----------------------------------------------------------
    async def run(self) -> None:
        """The committer: commit what no other transaction took along, and decide retention."""
        self._loop_thread = threading.get_ident()
        self._call_soon = _call_soon_threadsafe()
        try:
            await anyio.to_thread.run_sync(self._purge_expired, limiter=self._limiter)
        except (sqlite3.Error, SyscallError) as exc:
            log.warning("could not purge expired journals: %s", exc)
        while True:
            with anyio.move_on_after(RETAIN_DELAY if self._reaped else math.inf):
                await self._wake.wait()
            self._wake = anyio.Event()
            # A write in flight (another process's kv_set ...) will take the rows along: let it,
            # rather than pay an fsync of our own; commit alone only when the database is idle.
            while (self._batch.rows or self._urgent.rows) and self.journal.writes_in_flight > 0:
                self._written = anyio.Event()
                await self._written.wait()
            self._written = None
            await self.commit_now()

    async def commit_now(self) -> None:
        batches: list[_Batch] = []
        with self._lock:
            if self._urgent.rows:  # effects' rows, in queue order (an in-flight row before its completion)
                batches.append(self._urgent)
                self._urgent = _Batch()
            if self._batch.rows:
                batches.append(self._batch)
                self._batch = _Batch()
        reaped, self._reaped = self._reaped, []
        if not batches and not reaped:
            return
        error: SyscallError | None = None
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._commit, batches, reaped, limiter=self._limiter)
        except SyscallError as exc:
            error = exc
        for b in batches:
            b.finish(error)
        if self._finished:  # what rode along in that transaction
            self._drain()

    def _commit(self, batches: list[_Batch], reaped: list[tuple[int, int]]) -> None:
        j = self.journal
        posted = j.take_queued()
        rows = [r for b in batches for r in b.rows]

        def tx(c: sqlite3.Connection) -> None:
            for sql, params in posted:
                c.execute(sql, params)
            if rows:
                c.executemany(INSERT, rows)
            for pid, uid in reaped:
                self._retain(c, pid, uid)

        try:
            j.transaction_sync(tx)
        except sqlite3.Error as exc:
            raise storage_error(exc, "the syscall journal") from None
        if rows:
            self.commits += 1
            self.own_commits += 1
        self.rows += len(rows)
        now = time.monotonic()
        if now - self._last_purge > PURGE_EVERY:
            self._purge_expired()

    def _retain(self, c: sqlite3.Connection, pid: int, uid: int) -> None:
        retain(c, self.quota, self.keep_seconds, pid, uid)

    def _purge_expired(self, now: float | None = None) -> int:
        """Delete the kept journals past their time and give their bytes back; how many."""
        self._last_purge = time.monotonic()
        return purge_expired(self.journal, self.quota, time.time() if now is None else now)

    def purge_expired(self, now: float | None = None) -> int:
        return self._purge_expired(now)


def _same_process(urgent: list[tuple[object, ...]], rows: list[tuple[object, ...]]) -> bool:
    """Does a completed row belong to a process with an in-flight row (both kinds queued at once)?"""
    pids = {r[0] for r in urgent}
    return any(r[0] in pids for r in rows)


def _call_soon_threadsafe() -> Callable[[Callable[[], object]], object]:
    """Schedule a function on the running event loop from any thread, without waiting for it."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    return asyncio.get_running_loop().call_soon_threadsafe
