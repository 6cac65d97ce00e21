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

import errno
import fcntl
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel import schema as _schema

T = TypeVar("T")
log = logging.getLogger("lmos.journal")

MIGRATIONS = _schema.MIGRATIONS  # the schema's versions (kernel/schema.py)
SCHEMA_VERSION = _schema.SCHEMA_VERSION
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
        # Group commit of the syscall journal (kernel/sysjournal.py): ``ride(c)`` runs inside every
        # transaction before COMMIT and writes the journal rows waiting then, so they share the fsync
        # of whatever commits next; ``rode(token, ok)`` runs after COMMIT (ok) or ROLLBACK.
        self.ride: Callable[[sqlite3.Connection], object] | None = None
        self.rode: Callable[[object, bool], None] | None = None
        self.writes_in_flight = 0  # durable writes started and not yet returned (:meth:`write`)
        self.on_written: Callable[[], None] | None = None  # called on the event loop after each
        self.read_only = False  # opened read-only (a read-only state directory, see :meth:`open`)

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(cls, state_dir: str, *, read_only_ok: bool = False) -> Journal:
        """The database of ``state_dir``, created if need be, locked against a second kernel.

        A read-only state directory (a read-only file system, or one this user may not write) is
        EROFS, unless ``read_only_ok`` (the front ends' storage commands: ``lmos replay``,
        ``lmos audit``): then the database is opened read-only, queued writes are dropped and a
        durable write fails with EROFS."""
        lock_fd: int | None = None
        if state_dir == ":memory:":
            path = ":memory:"
        else:
            d = Path(state_dir).expanduser()
            try:
                private_dir(d)
                lock_fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                if _read_only(d, exc):
                    if read_only_ok:
                        return cls._open_read_only(d)
                    raise SyscallError(Errno.EROFS, f"state directory {d} is read-only ({exc.strerror}): "
                                       "a kernel must write it; `lmos replay` and `lmos audit` can read it"
                                       ) from None
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

    @classmethod
    def _open_read_only(cls, d: Path) -> Journal:
        path = d / "lmos.db"
        if not path.exists():
            raise SyscallError(Errno.ENOENT, f"state directory {d} is read-only and holds no database")
        conn: sqlite3.Connection | None = None
        for mode in ("mode=ro", "immutable=1"):  # a WAL database needs its -shm: else read it as a file
            try:
                conn = sqlite3.connect(f"file:{quote(str(path))}?{mode}", uri=True, check_same_thread=False,
                                       isolation_level=None)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                break
            except sqlite3.Error:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is None:
            raise SyscallError(Errno.EROFS, f"state directory {d} is read-only; its database cannot be read")
        j = cls(conn, None, str(path))
        j.read_only = True
        version = j.schema_version
        if version > SCHEMA_VERSION:
            j.close()
            raise SyscallError(Errno.EINVAL, f"state directory schema v{version} is newer than this lmos "
                               f"{lmos_version()} (schema v{SCHEMA_VERSION}): upgrade lmos")
        row = conn.execute("SELECT value FROM meta WHERE key='next_pid'").fetchone() if version else None
        j._next_pid = j._pid_limit = int(row[0]) if row else FIRST_PID
        return j

    def _setup(self) -> None:
        c = self.conn
        if self.path != ":memory:":
            c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA foreign_keys=ON")
        version = c.execute("PRAGMA user_version").fetchone()[0]
        mine = lmos_version()
        if version > SCHEMA_VERSION:
            try:
                row = c.execute("SELECT value FROM meta WHERE key='lmos_version'").fetchone()
            except sqlite3.Error:
                row = None
            writer = f"lmos {row[0]}" if row else "a newer lmos"
            raise SyscallError(Errno.EINVAL, f"state directory schema v{version} (written by {writer}) is "
                               f"newer than this lmos {mine} (schema v{SCHEMA_VERSION}): upgrade lmos")
        for v in range(version, SCHEMA_VERSION):
            c.execute("BEGIN")
            for stmt in _statements(MIGRATIONS[v]):
                c.execute(stmt)
            c.execute(f"PRAGMA user_version={v + 1}")
            c.execute("COMMIT")
        if not self._recorded(mine):
            try:  # which lmos wrote this schema, for the error an older one gives (above)
                c.execute("INSERT INTO meta(key, value) VALUES('lmos_version', ?) "
                          "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (mine,))
            except sqlite3.OperationalError:
                pass  # a read-only database: nothing to record
        row = c.execute("SELECT value FROM meta WHERE key='next_pid'").fetchone()
        self._next_pid = int(row[0]) if row else FIRST_PID
        self._pid_limit = self._next_pid

    def _recorded(self, version: str) -> bool:
        row = self.conn.execute("SELECT value FROM meta WHERE key='lmos_version'").fetchone()
        return bool(row) and row[0] == version

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -- pids --------------------------------------------------------------
    def alloc_pid(self) -> int:
        """A pid never handed out before in this state directory."""
        if self._next_pid >= self._pid_limit and not self.read_only:  # read-only: pids of this run only
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
        """Queue a best-effort write; committed by the next :meth:`flush` (dropped when read-only)."""
        if not self.closed and not self.read_only:
            self._queue.append((sql, params))

    def take_queued(self) -> list[tuple[str, Sequence[Any]]]:
        """The queued best-effort writes, for a caller that commits them in its own transaction
        (the syscall journal's group commit, :mod:`lmos.kernel.sysjournal`)."""
        batch, self._queue = self._queue, []
        return batch

    def requeue(self, batch: list[tuple[str, Sequence[Any]]]) -> None:
        """Put back writes taken with :meth:`take_queued` whose transaction rolled back, first."""
        if batch:
            self._queue[:0] = batch

    def flush_sync(self) -> None:
        if not self._queue or self.closed:
            return
        batch, self._queue = self._queue, []

        def run(c: sqlite3.Connection) -> None:
            for sql, params in batch:
                c.execute(sql, params)

        self._transaction(run, "BEGIN")

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        token: object = None
        with self._mutex:
            c = self.conn
            c.execute(begin)
            try:
                out = fn(c)
                if self.ride is not None:
                    token = self.ride(c)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                if token is not None and self.rode is not None:  # before the next transaction can start
                    self.rode(token, False)
                raise
        if token is not None and self.rode is not None:
            self.rode(token, True)
        return out

    async def flush(self) -> None:
        if self._queue:
            await anyio.to_thread.run_sync(self.flush_sync)

    def transaction_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside one committed transaction (blocking)."""
        if self.closed:
            raise SyscallError(Errno.EIO, "journal is closed")
        if not self.read_only:
            return self._transaction(fn, "BEGIN IMMEDIATE")
        try:  # reads in a transaction go on; the first write is refused
            return self._transaction(fn, "BEGIN")
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise
            raise SyscallError(Errno.EROFS, f"the state directory of {self.path} is read-only") from None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Durable write: returns once committed.  Runs off the event loop."""
        self.writes_in_flight += 1
        try:
            return await anyio.to_thread.run_sync(self.transaction_sync, fn)
        finally:
            self.writes_in_flight -= 1
            if self.on_written is not None:
                self.on_written()

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


def _read_only(d: Path, exc: OSError) -> bool:
    """Is ``exc`` (opening the lock file) a state directory this process may read but not write?"""
    if exc.errno == errno.EROFS:
        return True
    return exc.errno in (errno.EACCES, errno.EPERM) and os.access(d, os.R_OK | os.X_OK) and \
        (d / "lmos.db").exists() and not os.access(d, os.W_OK)


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


def lmos_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("lmos")
    except (ImportError, PackageNotFoundError):
        return "(unknown version)"


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
