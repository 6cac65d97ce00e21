"""The file store: one virtual filesystem per user, kept in the kernel's SQLite database.

Why SQLite rather than host directories: the kernel's database already gives
durable commits (WAL, ``synchronous=FULL``), so an acknowledged ``fs_write``
survives a crash with no extra machinery, and a path in the store can never
reach the host's filesystem.  There are no symlinks, hard links or device
files in the store at all, so the only way to escape a user's tree would be
through the path string itself; :func:`normalize` is therefore strict: it
folds ``.`` and repeated slashes, and rejects ``..`` components, NUL and other
control characters, backslashes and over-long names instead of resolving them.

Each user's tree is rooted at ``/``; directories are rows too (created on the
way by a write, like ``mkdir -p``).  Rows remember who wrote them and whether
the writer was tainted by untrusted content, so reading such a file taints the
reader (see the confirmation rules in :mod:`lmos.syscalls.confirm`).  Files are
bytes here; the fs syscalls decide how they cross to userland (text or base64).

A kernel owns exactly one store, ``KernelCore.files``; the same object also
holds the per-user key-value table behind the ``kv_*`` syscalls.
"""

from __future__ import annotations

import posixpath
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel.quota import KV_BYTES, MAX_STORE_BYTES, StoreQuota, text_bytes

if TYPE_CHECKING:
    from lmos.kernel.journal import Journal

MAX_PATH = 1024
MAX_NAME = 255
MAX_FILE_BYTES = 1 << 20  # one file
MAX_USER_BYTES = MAX_STORE_BYTES  # a user's files, kv values and context pages together (kernel/quota.py)
MAX_KV_KEY = 256  # characters of a kv key
MAX_KV_VALUE = 64 << 10  # bytes (UTF-8) of a kv value
MAX_KV_KEYS = 10_000  # keys per user
WriteMode = Literal["create", "overwrite", "append"]


def normalize(path: str) -> str:
    """The canonical absolute form of ``path`` inside a user's tree, or EINVAL/EACCES."""
    if not isinstance(path, str) or not path:
        raise SyscallError(Errno.EINVAL, "empty path")
    if len(path) > MAX_PATH:
        raise SyscallError(Errno.EINVAL, f"path longer than {MAX_PATH} characters")
    bad = next((c for c in path if ord(c) < 32 or ord(c) == 127 or c in "\\"), None)
    if bad is not None:
        raise SyscallError(Errno.EINVAL, f"path contains a forbidden character {bad!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for part in parts:
        if part == ".." or part.strip(".") == "" or part.startswith("~"):
            raise SyscallError(Errno.EACCES, f"path component {part!r} is not allowed: {path!r}")
        if len(part) > MAX_NAME:
            raise SyscallError(Errno.EINVAL, f"path component longer than {MAX_NAME} characters")
    return "/" + "/".join(parts)


def parents(path: str) -> list[str]:
    """Every ancestor directory of a normalized path, outermost first, without ``/``."""
    out: list[str] = []
    d = posixpath.dirname(path)
    while d != "/":
        out.append(d)
        d = posixpath.dirname(d)
    return out[::-1]


@dataclass(frozen=True, slots=True)
class Stat:
    path: str
    kind: str  # "file" | "dir"
    size: int
    mtime: float
    owner: int
    tainted: bool


@dataclass(frozen=True, slots=True)
class WriteResult:
    path: str
    size: int
    created: bool


class FileStore:
    """The filesystem service over one journal; all methods run off the event loop."""

    def __init__(
        self, journal: Journal, max_file_bytes: int = MAX_FILE_BYTES, max_user_bytes: int = MAX_USER_BYTES,
        *, quota: StoreQuota | None = None,
    ) -> None:
        self.journal = journal
        self.max_file_bytes = max_file_bytes
        self.max_user_bytes = max_user_bytes
        # the one per-uid store quota, shared with the page store (kernel/quota.py)
        self.quota = quota if quota is not None else StoreQuota(max_user_bytes)
        from lmos.kernel.mounts import MountTable  # here: mounts.py builds on this module's Stat

        self.mounts = MountTable(journal)  # host folders shown read-only (every covered path goes there)

    # -- reading -------------------------------------------------------------
    def _row(
        self, c: sqlite3.Connection, uid: int, path: str
    ) -> tuple[str, bytes | None, int, float, int, int] | None:
        if path == "/":
            return ("dir", None, 0, 0.0, uid, 0)
        r = c.execute(
            "SELECT kind, data, size, mtime, owner, tainted FROM files WHERE uid=? AND path=?", (uid, path)
        ).fetchone()
        return None if r is None else (r[0], r[1], r[2], r[3], r[4], r[5])

    def _read_sync(self, uid: int, path: str) -> tuple[bytes, Stat]:
        with self.journal._mutex:
            row = self._row(self.journal.conn, uid, path)
        if row is None:
            raise SyscallError(Errno.ENOENT, f"no such file: {path}")
        if row[0] == "dir":
            raise SyscallError(Errno.EISDIR, f"is a directory: {path}")
        return row[1] or b"", Stat(path, row[0], row[2], row[3], row[4], bool(row[5]))

    async def read(self, uid: int, path: str) -> tuple[bytes, Stat]:
        if self.mounts.covers(p := normalize(path)):
            return await self.mounts.read(p, self.max_file_bytes)
        return await anyio.to_thread.run_sync(self._read_sync, uid, normalize(path))

    def _stat_sync(self, uid: int, path: str) -> Stat:
        with self.journal._mutex:
            row = self._row(self.journal.conn, uid, path)
        if row is None:
            raise SyscallError(Errno.ENOENT, f"no such file or directory: {path}")
        return Stat(path, row[0], row[2], row[3], row[4], bool(row[5]))

    async def stat(self, uid: int, path: str) -> Stat:
        if self.mounts.covers(p := normalize(path)):
            return await self.mounts.stat(uid, p)
        return await anyio.to_thread.run_sync(self._stat_sync, uid, normalize(path))

    async def exists(self, uid: int, path: str) -> bool:
        try:
            await self.stat(uid, path)
        except SyscallError as exc:
            if exc.errno == Errno.ENOENT:
                return False
            raise
        return True

    def _below_sync(self, uid: int, path: str) -> tuple[str, list[Stat]]:
        """Everything below directory ``path``, in path order, and the prefix its paths start with."""
        st = self._stat_sync(uid, path)
        if st.kind != "dir":
            raise SyscallError(Errno.ENOTDIR, f"not a directory: {path}")
        prefix = "/" if path == "/" else path + "/"
        rows = self.journal.query(
            "SELECT path, kind, size, mtime, owner, tainted FROM files WHERE uid=? AND path > ? AND path < ? "
            "ORDER BY path",
            (uid, prefix, prefix[:-1] + "0"),
        )  # '0' sorts right after '/'
        return prefix, [Stat(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def _list_sync(self, uid: int, path: str) -> list[Stat]:
        prefix, below = self._below_sync(uid, path)
        return [st for st in below if "/" not in st.path[len(prefix) :]]

    async def listdir(self, uid: int, path: str = "/") -> list[Stat]:
        if self.mounts.covers(p := normalize(path)):
            return await self.mounts.listdir(uid, p, lambda: self._list_sync(uid, p))
        return await anyio.to_thread.run_sync(self._list_sync, uid, normalize(path))

    def _tree_sync(self, uid: int, path: str) -> list[Stat]:
        return self._below_sync(uid, path)[1]

    async def tree(self, uid: int, path: str = "/") -> list[Stat]:
        """Every entry (files and directories) below the directory ``path``, sorted by path."""
        if self.mounts.covers(p := normalize(path)):
            return await self.mounts.tree(uid, p, lambda: self._tree_sync(uid, p))
        return await anyio.to_thread.run_sync(self._tree_sync, uid, normalize(path))

    async def walk(self, uid: int, path: str = "/") -> list[Stat]:
        """Every file (not directory) under ``path``."""
        prefix = normalize(path)
        if self.mounts.covers(prefix):
            return await self.mounts.walk(uid, prefix, lambda: self._tree_sync(uid, prefix))
        rows = await self.journal.aquery(
            "SELECT path, kind, size, mtime, owner, tainted FROM files "
            "WHERE uid=? AND kind='file' ORDER BY path",
            (uid,),
        )
        base = "/" if prefix == "/" else prefix + "/"
        return [
            Stat(r[0], r[1], r[2], r[3], r[4], bool(r[5]))
            for r in rows
            if prefix == "/" or r[0] == prefix or r[0].startswith(base)
        ]

    # -- writing -------------------------------------------------------------
    async def write(
        self,
        uid: int,
        path: str,
        data: bytes,
        *,
        mode: WriteMode = "overwrite",
        writer: int | None = None,
        tainted: bool = False,
    ) -> WriteResult:
        """Create, replace or extend a file; returns once the change is committed."""
        path = normalize(path)
        self.mounts.check_write(path)  # EROFS under a mounted host folder
        if path == "/":
            raise SyscallError(Errno.EISDIR, "is a directory: /")
        owner = uid if writer is None else writer

        def tx(c: sqlite3.Connection) -> WriteResult:
            now = time.time()
            for d in parents(path):
                row = self._row(c, uid, d)
                if row is None:
                    c.execute(
                        "INSERT INTO files(uid, path, kind, size, owner, mtime) VALUES(?,?,'dir',0,?,?)",
                        (uid, d, owner, now),
                    )
                elif row[0] != "dir":
                    raise SyscallError(Errno.ENOTDIR, f"not a directory: {d}")
            row = self._row(c, uid, path)
            if row is not None and row[0] == "dir":
                raise SyscallError(Errno.EISDIR, f"is a directory: {path}")
            if row is not None and mode == "create":
                raise SyscallError(Errno.EEXIST, f"file exists: {path}")
            body = (row[1] or b"") + data if (row is not None and mode == "append") else data
            if len(body) > self.max_file_bytes:
                raise SyscallError(
                    Errno.EFBIG, f"file would be {len(body)} bytes; the limit is {self.max_file_bytes}"
                )
            self.quota.charge(c, uid, len(body) - (row[2] if row else 0), f"writing {path}")
            taint = int(tainted or (mode == "append" and row is not None and bool(row[5])))
            c.execute(
                "INSERT INTO files(uid, path, kind, data, size, owner, tainted, mtime) "
                "VALUES(?,?,'file',?,?,?,?,?) ON CONFLICT(uid, path) DO UPDATE SET data=excluded.data, "
                "size=excluded.size, owner=excluded.owner, tainted=excluded.tainted, mtime=excluded.mtime",
                (uid, path, body, len(body), owner, taint, now),
            )
            return WriteResult(path, len(body), row is None)

        return await self.journal.write(tx)

    async def delete(self, uid: int, path: str, *, recursive: bool = False) -> int:
        """Remove a file or directory; returns how many entries went."""
        path = normalize(path)
        self.mounts.check_write(path, "delete")
        if path == "/":
            raise SyscallError(Errno.EACCES, "cannot delete the root directory")

        def tx(c: sqlite3.Connection) -> int:
            row = self._row(c, uid, path)
            if row is None:
                raise SyscallError(Errno.ENOENT, f"no such file or directory: {path}")
            prefix = path + "/"
            below = c.execute(
                "SELECT COUNT(*) FROM files WHERE uid=? AND path > ? AND path < ?", (uid, prefix, path + "0")
            ).fetchone()[0]
            if below and not recursive:
                raise SyscallError(Errno.ENOTEMPTY, f"directory not empty: {path}")
            freed = c.execute(
                "SELECT COALESCE(SUM(size), 0) FROM files "
                "WHERE uid=? AND (path=? OR (path > ? AND path < ?))",
                (uid, path, prefix, path + "0"),
            ).fetchone()[0]
            self.quota.charge(c, uid, -int(freed), f"deleting {path}")
            c.execute(
                "DELETE FROM files WHERE uid=? AND (path=? OR (path > ? AND path < ?))",
                (uid, path, prefix, path + "0"),
            )
            return 1 + int(below)

        return await self.journal.write(tx)

    # -- the per-user key-value store (the kv_* syscalls, lmos.syscalls.kv) -------------
    async def kv_set(self, uid: int, key: str, value: str, tainted: bool = False) -> bool:
        """Store ``value`` under ``key``; True if the key is new.  ENOSPC past MAX_KV_KEYS keys.

        ``tainted``: the writer had read untrusted content, so the value taints its readers.
        """

        def tx(c: sqlite3.Connection) -> bool:
            old = c.execute(f"SELECT {KV_BYTES} FROM kvstore WHERE uid=? AND key=?", (uid, key)).fetchone()
            new = old is None
            if new:
                n = c.execute("SELECT COUNT(*) FROM kvstore WHERE uid=?", (uid,)).fetchone()[0]
                if n >= MAX_KV_KEYS:
                    raise SyscallError(Errno.ENOSPC, f"uid {uid} already has {n} keys (the limit)")
            self.quota.charge(c, uid, text_bytes(key, value) - (0 if new else int(old[0])), f"kv key {key!r}")
            c.execute(
                "INSERT INTO kvstore(uid, key, value, mtime, tainted) VALUES(?,?,?,?,?) "
                "ON CONFLICT(uid, key) DO UPDATE SET value=excluded.value, mtime=excluded.mtime, "
                "tainted=excluded.tainted",
                (uid, key, value, time.time(), int(tainted)),
            )
            return new

        return await self.journal.write(tx)

    async def kv_get(self, uid: int, key: str) -> str | None:
        entry = await self.kv_entry(uid, key)
        return entry[0] if entry is not None else None

    async def kv_entry(self, uid: int, key: str) -> tuple[str, bool] | None:
        """The value under ``key`` and whether a tainted process wrote it; None if there is none."""
        rows = await self.journal.aquery("SELECT value, tainted FROM kvstore WHERE uid=? AND key=?",
                                         (uid, key))
        return (str(rows[0][0]), bool(rows[0][1])) if rows else None

    async def kv_list(self, uid: int, prefix: str = "", limit: int = MAX_KV_KEYS) -> list[str]:
        """The keys of ``uid`` starting with ``prefix``, sorted."""
        return [key for key, _ in await self.kv_keys(uid, prefix, limit)]

    async def kv_keys(self, uid: int, prefix: str = "", limit: int = MAX_KV_KEYS) -> list[tuple[str, bool]]:
        """:meth:`kv_list` with whether a tainted process wrote each key (its name is data too)."""
        rows = await self.journal.aquery(
            "SELECT key, tainted FROM kvstore WHERE uid=? AND substr(key, 1, ?)=? ORDER BY key LIMIT ?",
            (uid, len(prefix), prefix, limit),
        )
        return [(str(r[0]), bool(r[1])) for r in rows]

    async def kv_delete(self, uid: int, key: str) -> bool:
        """Remove ``key``; True if it was there."""

        def tx(c: sqlite3.Connection) -> bool:
            old = c.execute(f"SELECT {KV_BYTES} FROM kvstore WHERE uid=? AND key=?", (uid, key)).fetchone()
            if old is None:
                return False
            self.quota.charge(c, uid, -int(old[0]), f"deleting kv key {key!r}")
            return c.execute("DELETE FROM kvstore WHERE uid=? AND key=?", (uid, key)).rowcount > 0

        return await self.journal.write(tx)
