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
rows are committed by *group commit*: every row queued since the last commit
goes into the next transaction the database makes, whoever makes it (another
process's ``kv_set`` or file write takes them along, see :attr:`Journal.ride`),
or, when none comes, into one the committer task makes for them, so 256
processes that each make a syscall at once pay one fsync, not 256.  The
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

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel.journal import Journal
from lmos.kernel.quota import StoreQuota

log = logging.getLogger("lmos.sysjournal")

# Bytes of a journal row, as SQL (what retention charges to the owner's quota).
ROW_BYTES = ("length(request) + COALESCE(length(result), 0) + length(CAST(error AS BLOB)) + "
             "COALESCE(length(CAST(gen AS BLOB)), 0) + COALESCE(length(prompt), 0) + 48")
PURGE_EVERY = 60.0  # seconds between sweeps of expired journals
RETAIN_DELAY = 0.5  # at most this long between a reap and its journal's retention decision
# A completed step replaces its in-flight row; an in-flight row never replaces a completed one.
INSERT = ("INSERT INTO sysjournal(pid, step, ts, name, request, result, errno, error, cap, decision, "
          "duration_us, gen, prompt, tainted) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(pid, step) DO "
          "UPDATE SET ts=excluded.ts, result=excluded.result, errno=excluded.errno, error=excluded.error, "
          "decision=excluded.decision, duration_us=excluded.duration_us, gen=excluded.gen, "
          "prompt=excluded.prompt, tainted=excluded.tainted WHERE excluded.errno != -1")
INFLIGHT = -1  # the errno of a step that was started (an effect) and has not completed


@dataclass(slots=True)
class Entry:
    """One journal row: a completed syscall of ``pid`` at ``step``."""

    pid: int
    step: int
    ts: float
    name: str
    request: bytes  # the request as JSON
    result: bytes | None  # the response as JSON; None for an error
    errno: int
    error: str
    cap: str | None
    decision: str  # allow | deny | error
    duration_us: int
    gen: str | None = None  # llm_generate: JSON of where the prompt and output lie in the context
    prompt: bytes | None = None  # llm_generate: the prompt's token ids (uint32 little-endian)
    tainted: bool = False  # the process was tainted after this step (recovery gives it back)

    def row(self) -> tuple[object, ...]:
        return (self.pid, self.step, self.ts, self.name, self.request, self.result, self.errno,
                self.error, self.cap, self.decision, self.duration_us, self.gen, self.prompt, self.tainted)


def enabled(setting: bool | None, state_dir: str) -> bool:
    """``journal = true|false`` in the config; unset means on when the state is on disk."""
    return (state_dir != ":memory:") if setting is None else setting


class _Batch:
    """Rows committed together, and the event their waiters wake on."""

    __slots__ = ("done", "error", "followers", "rows")

    def __init__(self) -> None:
        self.rows: list[Entry] = []
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
    """What one transaction took along: a batch of journal rows and the queued posts."""

    batch: _Batch
    posted: list[tuple[str, Any]]


class SysJournal:
    """The per-process syscall logs of one kernel, written by group commit.

    Rows wait in one batch.  Whatever transaction the kernel's database commits
    next takes the batch along (:attr:`Journal.ride`: a ``kv_set`` or a file
    write another process makes anyway), and when none comes the committer task
    commits it on its own.  Batches move between the event loop and the database
    threads under a lock; their waiters are woken on the event loop.
    """

    def __init__(self, journal: Journal, quota: StoreQuota, keep_seconds: float) -> None:
        self.journal = journal
        self.quota = quota
        self.keep_seconds = keep_seconds
        self._steps: dict[int, int] = {}
        self._lock = threading.Lock()
        self._batch = _Batch()
        self._reaped: list[tuple[int, int]] = []  # (pid, uid) whose journals retention decides on
        self._wake = anyio.Event()
        self._loop_thread = threading.get_ident()
        self._call_soon: Callable[[Callable[[], object]], object] | None = None
        self._limiter = anyio.CapacityLimiter(1)  # the committer's own thread: never queued behind others
        self._last_purge = 0.0
        self.commits = 0  # batches committed (on their own or along with another write)
        self.rows = 0
        self._written: anyio.Event | None = None  # set when a durable write of the database returns
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
        """Queue ``entry`` without waiting: it is committed no later than the next transaction that
        starts after this call commits (that transaction takes it along), or by the committer."""
        with self._lock:
            batch = self._batch
            batch.rows.append(entry)
        self._wake.set()
        return batch

    def reaped(self, pid: int, uid: int) -> None:
        """``pid`` left the process table: keep its journal (charged to ``uid``) or delete it."""
        self._steps.pop(pid, None)
        self._reaped.append((pid, uid))  # decided by the committer's next transaction (within RETAIN_DELAY)

    # -- riding along with other transactions (Journal.ride / rode) ------------
    def _ride(self, c: sqlite3.Connection) -> object:
        # the rows queued with Journal.post come along too, first: a process's row in ``processes``
        # is never committed after its journal (recovery needs both)
        posted = self.journal.take_queued()
        with self._lock:
            if not self._batch.rows and not posted:
                return None
            batch, self._batch = self._batch, _Batch()
        token = _Ride(batch, posted)
        try:
            for sql, params in posted:
                c.execute(sql, params)
            if batch.rows:
                c.executemany(INSERT, [e.row() for e in batch.rows])
        except BaseException:
            self._rode(token, False)
            raise
        return token

    def _rode(self, ride: object, ok: bool) -> None:
        assert isinstance(ride, _Ride)
        token = ride.batch
        if not ok:
            self.journal.requeue(ride.posted)
        if not token.rows:
            return
        if ok:
            self.commits += 1
            self.rows += len(token.rows)
            self._notify(token.finish)
        else:  # the other write failed (EDQUOT ...): the next transaction takes these rows along
            with self._lock:  # first, in their order; their waiters wake when the merged batch commits
                self._batch.rows[:0] = token.rows
                self._batch.followers.append(token)
            self._notify(self._wake.set)

    def _on_written(self) -> None:
        if self._written is not None:
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
            while self._batch.rows and self.journal.writes_in_flight > 0:
                self._written = anyio.Event()
                await self._written.wait()
            self._written = None
            await self.commit_now()

    async def commit_now(self) -> None:
        batches: list[_Batch] = []
        with self._lock:
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

    def _commit(self, batches: list[_Batch], reaped: list[tuple[int, int]]) -> None:
        j = self.journal
        posted = j.take_queued()
        rows = [e.row() for b in batches for e in b.rows]

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
        self.commits += len(batches)
        self.rows += len(rows)
        now = time.monotonic()
        if now - self._last_purge > PURGE_EVERY:
            self._purge_expired()

    def _retain(self, c: sqlite3.Connection, pid: int, uid: int) -> None:
        if self.keep_seconds <= 0:
            c.execute("DELETE FROM sysjournal WHERE pid=?", (pid,))
            return
        n = int(c.execute(f"SELECT COALESCE(SUM({ROW_BYTES}), 0) FROM sysjournal WHERE pid=?",
                          (pid,)).fetchone()[0])
        if n == 0:
            return
        try:
            self.quota.charge(c, uid, n, f"the journal of pid {pid}")
        except SyscallError as exc:
            log.info("journal of pid %d not kept: %s", pid, exc.message)
            c.execute("DELETE FROM sysjournal WHERE pid=?", (pid,))
            return
        c.execute("INSERT OR REPLACE INTO sysjournal_kept(pid, uid, bytes, until) VALUES(?,?,?,?)",
                  (pid, uid, n, time.time() + self.keep_seconds))

    def _purge_expired(self, now: float | None = None) -> int:
        """Delete the kept journals past their time and give their bytes back; how many."""
        self._last_purge = time.monotonic()
        when = time.time() if now is None else now

        def tx(c: sqlite3.Connection) -> int:
            gone = c.execute("SELECT pid, uid, bytes FROM sysjournal_kept WHERE until <= ?",
                             (when,)).fetchall()
            for pid, uid, n in gone:
                c.execute("DELETE FROM sysjournal WHERE pid=?", (pid,))
                c.execute("DELETE FROM sysjournal_kept WHERE pid=?", (pid,))
                self.quota.charge(c, uid, -int(n), f"the journal of pid {pid}")
            return len(gone)

        return self.journal.transaction_sync(tx)

    def purge_expired(self, now: float | None = None) -> int:
        return self._purge_expired(now)


def storage_error(exc: sqlite3.Error, what: str) -> SyscallError:
    """The errno a failed SQLite write means: ENOSPC (disk full), EROFS (read-only), else EIO."""
    text = str(exc).lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "full" in text:
        return SyscallError(Errno.ENOSPC, f"{what}: no space left on the device ({exc})")
    if code == sqlite3.SQLITE_READONLY or "readonly" in text or "read-only" in text:
        return SyscallError(Errno.EROFS, f"{what}: the state directory is read-only ({exc})")
    return SyscallError(Errno.EIO, f"{what}: {exc}")


def _call_soon_threadsafe() -> Callable[[Callable[[], object]], object]:
    """Schedule a function on the running event loop from any thread, without waiting for it."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    return asyncio.get_running_loop().call_soon_threadsafe


# -- reading (replay, recovery) -------------------------------------------------
@dataclass(slots=True)
class ProcRecord:
    """A process as the processes table remembers it."""

    pid: int
    ppid: int
    uid: int
    app: str
    argv: list[str]
    model: str
    state: str
    exit_status: int | None
    error: str | None
    result: object
    caps: list[str]


def read_process(journal: Journal, pid: int) -> ProcRecord | None:
    journal.flush_sync()
    rows = journal.query("SELECT pid, ppid, uid, app, argv, model, state, exit_status, error, result, caps "
                         "FROM processes WHERE pid=?", (pid,))
    if not rows:
        return None
    r = rows[0]
    return ProcRecord(pid=r[0], ppid=r[1] or 0, uid=r[2], app=r[3] or "", argv=_json(r[4], []),
                      model=r[5] or "", state=r[6] or "", exit_status=r[7], error=r[8],
                      result=_json(r[9], None), caps=_json(r[10], []))


def read_entries(journal: Journal, pid: int, limit: int = 1 << 62) -> list[Entry]:
    """The journal of ``pid``, oldest step first."""
    rows = journal.query("SELECT pid, step, ts, name, request, result, errno, error, cap, decision, "
                         "duration_us, gen, prompt, tainted FROM sysjournal WHERE pid=? ORDER BY step "
                         "LIMIT ?", (pid, limit))
    return [Entry(pid=r[0], step=r[1], ts=r[2], name=r[3], request=bytes(r[4]),
                  result=None if r[5] is None else bytes(r[5]), errno=r[6], error=r[7], cap=r[8],
                  decision=r[9], duration_us=r[10], gen=r[11], prompt=None if r[12] is None else bytes(r[12]),
                  tainted=bool(r[13])) for r in rows]


def _json(text: str | None, default: object) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
