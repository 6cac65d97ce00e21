"""Host folders shown read-only inside the file store (``lmos mount``).

Why mounts exist: a support team keeps its FAQ in a real folder and wants the
``support`` app to read it without copying it in after every edit.  Why they
are read-only and narrow: a mount is the one place where a store path reaches
the host's filesystem, which the store was designed never to do (see
:mod:`lmos.kernel.files`).  So:

- only the operator mounts (the syscall layer checks; see
  :mod:`lmos.syscalls.mount`), and only folders the operator can read;
- a mount is **system-wide**: it appears at the same path in every user's tree,
  like a Unix mount, because the point is that every user's ``support`` process
  reads the same FAQ.  What a process may read is still decided by its
  ``fs.read:`` capability, checked by the dispatcher on the store path;
- every access re-resolves the path on the host and refuses anything whose real
  path leaves the mounted folder (a symlink to ``/etc``, a ``..`` in a link
  target), then opens it component by component with ``O_NOFOLLOW`` from the
  folder's own descriptor, so a symlink swapped in between the check and the
  open is refused too.  Symlinks that stay inside the folder work;
- writes and deletes fail with ``EROFS``; reads are limited to the store's file
  size; everything read from a mount is *tainted* (external content: a FAQ is
  text nobody in the kernel wrote), so it taints the reader;
- host names that are not valid store names (control characters, ``~x``,
  ``...``) are left out of listings.

A mounted folder shadows whatever the store holds at and below its mount point
(as on Unix).  Mounts persist in the state directory's database (table
``mounts``, created here on first use) and so survive a restart; a folder that
disappears meanwhile reads as ENOENT until it is back or unmounted.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import posixpath
import sqlite3
import stat as _stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_NAME, Stat, normalize

if TYPE_CHECKING:
    from lmos.kernel.journal import Journal

MAX_WALK = 10_000  # entries a recursive listing of a mount may return
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Mount:
    path: str  # the mount point in the store (normalized)
    host: str  # the host folder (absolute, symlinks resolved at mount time)
    uid: int  # who mounted it (owner of every entry under it)
    ro: bool = True
    created: float = 0.0


def within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both normalized store paths)."""
    return root == "/" or path == root or path.startswith(root + "/")


async def _store_entries(store: Callable[[], list[Stat]]) -> list[Stat]:
    """The store's side of a listing, run in a thread; none where the store has no such directory."""
    try:
        return await anyio.to_thread.run_sync(store)
    except SyscallError as exc:
        if exc.errno != Errno.ENOENT:
            raise
        return []


def _valid_name(name: str) -> bool:
    try:
        return normalize("/" + name) == "/" + name and len(name) <= MAX_NAME
    except SyscallError:
        return False


def _oserror(exc: OSError, what: str) -> SyscallError:
    if exc.errno == _errno.ENOENT:
        return SyscallError(Errno.ENOENT, f"no such file or directory: {what}")
    if exc.errno == _errno.ENOTDIR:
        return SyscallError(Errno.ENOTDIR, f"not a directory: {what}")
    if exc.errno == _errno.ELOOP:
        return SyscallError(Errno.EACCES, f"refused: {what} changed into a symlink while being opened")
    if exc.errno in (_errno.EACCES, _errno.EPERM):
        return SyscallError(Errno.EACCES, f"permission denied on the host: {what}")
    return SyscallError(Errno.EIO, f"{what}: {exc.strerror}")


class MountTable:
    """The mounts of one kernel, cached in memory and persisted in its journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._mounts: dict[str, Mount] = {}
        if journal.closed:
            return

        def load(c: sqlite3.Connection) -> list[tuple[str, str, int, int, float]]:
            c.execute("CREATE TABLE IF NOT EXISTS mounts (path TEXT PRIMARY KEY, host TEXT NOT NULL, "
                      "uid INTEGER NOT NULL, ro INTEGER NOT NULL, created REAL NOT NULL)")
            return list(c.execute("SELECT path, host, uid, ro, created FROM mounts").fetchall())

        for path, host, uid, ro, created in journal.transaction_sync(load):
            self._mounts[path] = Mount(path, host, uid, bool(ro), created)

    def __bool__(self) -> bool:
        return bool(self._mounts)

    def all(self) -> list[Mount]:
        return sorted(self._mounts.values(), key=lambda m: m.path)

    # -- where a path falls ----------------------------------------------------
    def find(self, path: str) -> Mount | None:
        """The mount that ``path`` (normalized) is at or below, if any."""
        best: Mount | None = None
        for m in self._mounts.values():
            if within(path, m.path) and (best is None or len(m.path) > len(best.path)):
                best = m
        return best

    def below(self, path: str) -> list[Mount]:
        """Mounts strictly below ``path`` (it is then a directory on their way)."""
        return [m for m in self.all() if m.path != path and within(m.path, path)]

    def covers(self, path: str) -> bool:
        """``path`` is inside a mount or on the way to one."""
        return self.find(path) is not None or bool(self.below(path))

    def check_write(self, path: str, action: str = "write") -> None:
        """EROFS under a mount; EBUSY for a directory a mount lies below (deleting it)."""
        m = self.find(path)
        if m is not None:
            raise SyscallError(Errno.EROFS, f"cannot {action} {path}: {m.path} is a read-only mount")
        under = self.below(path)
        if under:
            raise SyscallError(Errno.EBUSY, f"cannot {action} {path}: {under[0].path} is mounted below it")

    # -- mounting ----------------------------------------------------------------
    async def add(self, path: str, host: str, uid: int) -> Mount:
        """Record a mount (the caller checked who asks and that the folder is readable)."""
        path = normalize(path)
        if path == "/":
            raise SyscallError(Errno.EINVAL, "cannot mount over the root of the store")
        if path in self._mounts:
            raise SyscallError(Errno.EBUSY, f"{path} is already a mount point (of {self._mounts[path].host})")
        outer = self.find(path)
        if outer is not None:
            raise SyscallError(Errno.EBUSY, f"{path} is inside the mount {outer.path}")
        if self.below(path):
            raise SyscallError(Errno.EBUSY, f"{self.below(path)[0].path} is mounted below {path}")
        m = Mount(path, host, uid, True, time.time())

        def tx(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO mounts(path, host, uid, ro, created) VALUES(?,?,?,?,?)",
                      (m.path, m.host, m.uid, int(m.ro), m.created))

        await self.journal.write(tx)
        self._mounts[path] = m
        return m

    async def remove(self, path: str) -> Mount:
        path = normalize(path)
        m = self._mounts.get(path)
        if m is None:
            raise SyscallError(Errno.EINVAL, f"not a mount point: {path}")

        def tx(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM mounts WHERE path=?", (path,))

        await self.journal.write(tx)
        del self._mounts[path]
        return m

    # -- reading (the FileStore delegates here for covered paths) -----------------
    async def read(self, path: str, max_bytes: int) -> tuple[bytes, Stat]:
        m = self.find(path)
        if m is None:
            raise SyscallError(Errno.EISDIR, f"is a directory: {path}")  # on the way to a mount point
        return await anyio.to_thread.run_sync(_read_host, m, path, max_bytes)

    async def stat(self, uid: int, path: str) -> Stat:
        m = self.find(path)
        if m is None:
            return Stat(path, "dir", 0, 0.0, uid, False)  # a directory on the way to a mount point
        return await anyio.to_thread.run_sync(_stat_host, m, path)

    async def listdir(self, uid: int, path: str, store_list: Callable[[], list[Stat]]) -> list[Stat]:
        """One level of ``path``: the host folder's entries, or the store's plus the mount points."""
        m = self.find(path)
        if m is not None:
            return await anyio.to_thread.run_sync(_list_host, m, path, False)
        entries = await _store_entries(store_list)
        prefix = "/" if path == "/" else path + "/"
        here = {prefix + m.path[len(prefix):].split("/", 1)[0] for m in self.below(path)}
        entries = [e for e in entries if e.path not in here]
        entries += [await self._stat_or_dir(uid, p) for p in sorted(here)]
        return sorted(entries, key=lambda e: e.path)

    async def tree(self, uid: int, path: str, store_tree: Callable[[], list[Stat]]) -> list[Stat]:
        """Every entry below the directory ``path``: the store's, with mounted folders in their place."""
        m = self.find(path)
        if m is not None:
            return await anyio.to_thread.run_sync(_list_host, m, path, True)
        entries = await _store_entries(store_tree)
        below = self.below(path)
        entries = [e for e in entries if not any(within(e.path, b.path) for b in below)]
        have = {e.path for e in entries}
        for b in below:
            d = b.path
            while d != path and d not in have:  # the mount point and the directories on its way
                have.add(d)
                entries.append(await self._stat_or_dir(uid, d))
                d = posixpath.dirname(d)
            with contextlib.suppress(SyscallError):  # a folder gone from the host lists as empty
                entries += await anyio.to_thread.run_sync(_list_host, b, b.path, True)
        return sorted(entries, key=lambda e: e.path)

    async def walk(self, uid: int, path: str, store_tree: Callable[[], list[Stat]]) -> list[Stat]:
        """Every file at or below ``path`` (FileStore.walk with mounts)."""
        st = await self.stat(uid, path)
        if st.kind == "file":
            return [st]
        return [e for e in await self.tree(uid, path, store_tree) if e.kind == "file"]

    async def _stat_or_dir(self, uid: int, path: str) -> Stat:
        try:
            return await self.stat(uid, path)
        except SyscallError:  # a mounted folder that is gone still shows its mount point
            return Stat(path, "dir", 0, 0.0, uid, False)


# -- the host side: resolve, check containment, open without following links ------
def _rel_parts(m: Mount, path: str) -> list[str]:
    """Path components below the host folder, after resolving symlinks; EACCES if it leaves it."""
    rel = path[len(m.path):].strip("/")
    if not rel:
        return []
    real = os.path.realpath(os.path.join(m.host, rel))
    if real != m.host and not real.startswith(m.host.rstrip("/") + "/"):
        raise SyscallError(Errno.EACCES, f"refused: {path} leads outside the mounted folder {m.path}")
    inner = os.path.relpath(real, m.host)
    return [] if inner == "." else inner.split(os.sep)


def _open_dir(m: Mount, parts: list[str], path: str) -> int:
    """A descriptor of the folder ``parts`` below the mount, opened with no symlink followed."""
    try:
        fd = os.open(m.host, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == _errno.ELOOP:
            raise SyscallError(Errno.EACCES, f"refused: {m.path}: the folder is now a symlink") from None
        if exc.errno == _errno.ENOENT:
            raise SyscallError(Errno.ENOENT, f"the folder mounted at {m.path} ({m.host}) is gone") from None
        raise _oserror(exc, path) from None
    try:
        for part in parts:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        os.close(fd)
        raise _oserror(exc, path) from None
    return fd


def _entry_stat(m: Mount, path: str, st: os.stat_result) -> Stat:
    kind = "dir" if _stat.S_ISDIR(st.st_mode) else "file"
    return Stat(path, kind, 0 if kind == "dir" else st.st_size, st.st_mtime, m.uid, True)


def _stat_host(m: Mount, path: str) -> Stat:
    parts = _rel_parts(m, path)
    if not parts:
        fd = _open_dir(m, [], path)
        try:
            return _entry_stat(m, path, os.fstat(fd))
        finally:
            os.close(fd)
    fd = _open_dir(m, parts[:-1], path)
    try:
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except OSError as exc:
        raise _oserror(exc, path) from None
    finally:
        os.close(fd)
    if not (_stat.S_ISDIR(st.st_mode) or _stat.S_ISREG(st.st_mode)):
        raise SyscallError(Errno.EACCES, f"refused: {path} is not a regular file or folder on the host")
    return _entry_stat(m, path, st)


def _read_host(m: Mount, path: str, max_bytes: int) -> tuple[bytes, Stat]:
    parts = _rel_parts(m, path)
    if not parts:
        raise SyscallError(Errno.EISDIR, f"is a directory: {path}")
    dfd = _open_dir(m, parts[:-1], path)
    try:
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dfd)
    except OSError as exc:
        raise _oserror(exc, path) from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if _stat.S_ISDIR(st.st_mode):
            raise SyscallError(Errno.EISDIR, f"is a directory: {path}")
        if not _stat.S_ISREG(st.st_mode):
            raise SyscallError(Errno.EACCES, f"refused: {path} is not a regular file on the host")
        if st.st_size > max_bytes:
            raise SyscallError(Errno.EFBIG, f"{path} is {st.st_size} bytes; the file limit is {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _oserror(exc, path) from None
    finally:
        os.close(fd)
    if total > max_bytes:  # it grew while being read
        raise SyscallError(Errno.EFBIG, f"{path} is over the {max_bytes}-byte file limit")
    data = b"".join(chunks)
    return data, Stat(path, "file", len(data), st.st_mtime, m.uid, True)


def _list_host(m: Mount, path: str, recursive: bool) -> list[Stat]:
    out: list[Stat] = []
    todo = [(path, _rel_parts(m, path))]
    while todo:
        here, parts = todo.pop()
        fd = _open_dir(m, parts, here)
        try:
            names = sorted(os.listdir(fd))
            for name in names:
                if not _valid_name(name):
                    continue
                child = posixpath.join(here, name)
                with contextlib.suppress(SyscallError):  # links leaving the folder, fifos ...: not shown
                    st = _stat_host(m, child)
                    out.append(st)
                    real = _rel_parts(m, child)
                    # Descend into real folders only: a link to a folder (maybe an ancestor) is listed
                    # but not walked, so a link cycle cannot make the walk endless.
                    if recursive and st.kind == "dir" and real == [*parts, name]:
                        todo.append((child, real))
                if len(out) >= MAX_WALK:
                    raise SyscallError(Errno.E2BIG, f"more than {MAX_WALK} entries under {path}")
        except OSError as exc:
            raise _oserror(exc, here) from None
        finally:
            os.close(fd)
    return sorted(out, key=lambda e: e.path)
