"""SQLite persistence of kernel state: one database per state directory.

Why one writer connection guarded by a lock: SQLite allows one writer at a
time anyway, and a single connection with WAL gives readers on the same
connection a consistent view.  Two kinds of writes:

- ``await journal.write(...)``: durable — it returns after COMMIT (with
  ``synchronous=FULL``), so an acknowledged write survives a crash.
- ``journal.post(...)``: best effort, batched — audit records and process
  state rows are queued and committed together every few milliseconds, so a
  thousand short processes do not cost a thousand fsyncs.

The state directory is private to its owner: created 0700 with the database
(and so its ``-wal`` and ``-shm``) 0600, and an existing one that is readable
by others is tightened when a kernel opens it, files and all (a sandbox worker
or another local user must not read other users' files, processes and audit
out of ``lmos.db``).  It is held with an exclusive ``flock`` so two kernels never
share it, and the schema carries a version (``PRAGMA user_version``) upgraded by
the ordered migrations below.  Pids are allocated from a persisted counter in
chunks, so pids never repeat across restarts of one state directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from lmos.errors import Errno, SyscallError

T = TypeVar("T")
log = logging.getLogger("lmos.journal")

# Each entry upgrades the schema by one version.  Later issues append entries;
# existing ones never change, so old state directories migrate forward.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE processes (
        pid INTEGER PRIMARY KEY, ppid INTEGER, uid INTEGER, app TEXT, argv TEXT, model TEXT,
        state TEXT, exit_status INTEGER, error TEXT, created REAL, ended REAL);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, pid INTEGER, uid INTEGER, name TEXT,
        cap TEXT, decision TEXT, errno INTEGER, duration_us INTEGER, digest TEXT);
    CREATE INDEX audit_pid ON audit(pid);
    """,
    # v2 (userland): the per-user virtual filesystem and the kv_get/kv_set store.
    """
    CREATE TABLE files (
        uid INTEGER NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, data BLOB,
        size INTEGER NOT NULL DEFAULT 0, owner INTEGER NOT NULL, tainted INTEGER NOT NULL DEFAULT 0,
        mtime REAL NOT NULL, PRIMARY KEY (uid, path));
    CREATE TABLE kvstore (
        uid INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, mtime REAL NOT NULL,
        PRIMARY KEY (uid, key));
    """,
    # v3 (context memory): swapped/resident context pages and core memory, per pid.
    """
    CREATE TABLE mem_pages (
        pid INTEGER NOT NULL, page INTEGER NOT NULL, pos INTEGER NOT NULL, role TEXT NOT NULL,
        title TEXT NOT NULL, text TEXT NOT NULL, tokens BLOB NOT NULL, ntokens INTEGER NOT NULL,
        state TEXT NOT NULL, pinned INTEGER NOT NULL, last_use INTEGER NOT NULL, PRIMARY KEY (pid, page));
    CREATE TABLE mem_core (
        pid INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, mtime REAL NOT NULL,
        PRIMARY KEY (pid, name));
    """,
    # v4 (security): a kv value written by a tainted process taints whoever reads it, like a file.
    """
    ALTER TABLE kvstore ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
    """,
    # v5 (paging frees memory): the recall index of swapped pages lives on disk, not in RAM
    # (kernel/recall.py): a page's content words and their counts, while it is swapped.
    """
    ALTER TABLE mem_pages ADD COLUMN nwords INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE mem_terms (
        pid INTEGER NOT NULL, term TEXT NOT NULL, page INTEGER NOT NULL, tf INTEGER NOT NULL,
        PRIMARY KEY (pid, term, page)) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
PID_CHUNK = 1000
FIRST_PID = 2  # pid 1 is init (the host side of the embedding API)


class Journal:
    """The kernel's database.  Use :meth:`open`; close with :meth:`close`."""

    def __init__(self, conn: sqlite3.Connection, lock_fd: int | None, path: str) -> None:
        self.conn = conn
        self.path = path
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._queue: list[tuple[str, Sequence[Any]]] = []
        self._next_pid = 0
        self._pid_limit = 0
        self.closed = False

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(cls, state_dir: str) -> Journal:
        lock_fd: int | None = None
        if state_dir == ":memory:":
            path = ":memory:"
        else:
            d = Path(state_dir).expanduser()
            try:
                private_dir(d)
                lock_fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise SyscallError(Errno.EACCES, f"state directory {d}: {exc.strerror}") from None
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise SyscallError(Errno.EBUSY, f"state directory {d} is in use by another kernel") from None
            path = str(d / "lmos.db")
            try:  # SQLite gives a new database 0644 and its -wal and -shm the database's mode
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                os.close(lock_fd)
                raise SyscallError(Errno.EACCES, f"state directory {d}: {exc.strerror}") from None
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        j = cls(conn, lock_fd, path)
        try:
            j._setup()
        except BaseException:
            j.close()
            raise
        return j

    def _setup(self) -> None:
        c = self.conn
        if self.path != ":memory:":
            c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA foreign_keys=ON")
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SyscallError(Errno.EINVAL, f"state directory schema v{version} is newer than "
                               f"this lmos (v{SCHEMA_VERSION})")
        for v in range(version, SCHEMA_VERSION):
            c.execute("BEGIN")
            for stmt in _statements(MIGRATIONS[v]):
                c.execute(stmt)
            c.execute(f"PRAGMA user_version={v + 1}")
            c.execute("COMMIT")
        row = c.execute("SELECT value FROM meta WHERE key='next_pid'").fetchone()
        self._next_pid = int(row[0]) if row else FIRST_PID
        self._pid_limit = self._next_pid

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -- pids --------------------------------------------------------------
    def alloc_pid(self) -> int:
        """A pid never handed out before in this state directory."""
        if self._next_pid >= self._pid_limit:
            self._pid_limit = self._next_pid + PID_CHUNK
            with self._mutex:
                self.conn.execute("INSERT INTO meta(key, value) VALUES('next_pid', ?) "
                                  "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                                  (str(self._pid_limit),))
        pid = self._next_pid
        self._next_pid += 1
        return pid

    # -- writing -----------------------------------------------------------
    def post(self, sql: str, params: Sequence[Any]) -> None:
        """Queue a best-effort write; committed by the next :meth:`flush`."""
        if not self.closed:
            self._queue.append((sql, params))

    def flush_sync(self) -> None:
        if not self._queue or self.closed:
            return
        batch, self._queue = self._queue, []
        with self._mutex:
            c = self.conn
            c.execute("BEGIN")
            try:
                for sql, params in batch:
                    c.execute(sql, params)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    async def flush(self) -> None:
        if self._queue:
            await anyio.to_thread.run_sync(self.flush_sync)

    def transaction_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside one committed transaction (blocking)."""
        if self.closed:
            raise SyscallError(Errno.EIO, "journal is closed")
        with self._mutex:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                out = fn(c)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return out

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Durable write: returns once committed.  Runs off the event loop."""
        return await anyio.to_thread.run_sync(self.transaction_sync, fn)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._mutex:
            return list(self.conn.execute(sql, tuple(params)).fetchall())

    async def aquery(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return await anyio.to_thread.run_sync(self.query, sql, params)

    async def run_flusher(self, interval: float = 0.05) -> None:
        """Background task: commit queued writes every ``interval`` seconds."""
        while True:
            await anyio.sleep(interval)
            await self.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush_sync()
        finally:
            self.closed = True
            self.conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def private_dir(d: Path) -> None:
    """Make ``d`` (created if missing) a directory only its owner can enter, and every file and
    socket directly in it owner-only.  Modes this process cannot change (another user's
    directory) are logged, not fatal: the operator may share a directory on purpose."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    me = os.geteuid()
    st = d.stat()
    if st.st_mode & 0o077:
        if st.st_uid == me:
            os.chmod(d, stat.S_IMODE(st.st_mode) & 0o700)
        else:
            log.warning("state directory %s (uid %d) is open to others: mode %o", d, st.st_uid,
                        stat.S_IMODE(st.st_mode))
    with os.scandir(d) as entries:
        for entry in entries:
            est = entry.stat(follow_symlinks=False)
            if not (stat.S_ISREG(est.st_mode) or stat.S_ISSOCK(est.st_mode)) or not est.st_mode & 0o077:
                continue
            if est.st_uid == me:
                os.chmod(entry.path, stat.S_IMODE(est.st_mode) & 0o700)
            else:
                log.warning("%s (uid %d) in the state directory is open to others: mode %o", entry.path,
                            est.st_uid, stat.S_IMODE(est.st_mode))


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
