"""The host side of copying files in and out of the store (``lmos cp``, lmosh ``put``/``get``).

Host file access belongs to the user's front end, never to the kernel: the
kernel only ever sees bytes and store paths.  This module reads and writes the
host for the front ends (the ``lmos`` command and the shell's terminal).

Reading in is bounded before anything is written: each file is limited to the
store's file size and a whole copy to ``MAX_COPY_BYTES`` (EFBIG otherwise).
Inside a copied folder, links to files outside it are refused (a folder from
elsewhere must not pull ``~/.ssh/id_rsa`` into the store, where agents read),
linked folders are not entered (a link cycle cannot make a copy endless) and
special files are refused.

Writing out must not be steered by what is already on the host: a symlink
planted in the target folder (``out/notes.txt -> ~/.ssh/authorized_keys``)
must not redirect the write.  So the target folder is opened once, every
folder below it is opened relative to it with ``O_NOFOLLOW``, files are created
with ``O_EXCL | O_NOFOLLOW`` (or, with ``force``, written to a fresh temporary
name and renamed over the old file, which replaces a file and never follows
one), and every name is checked to be a single plain component.  Existing
files are refused without ``force``, all of them before anything is written.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import secrets
import stat as _stat

from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_FILE_BYTES

MAX_COPY_BYTES = 32 << 20  # one copy, all files together
MAX_COPY_FILES = 10_000
HostFile = tuple[str, bytes]  # (relative path, starting with the copied object's own name; data)


def _too_big(what: str, size: int, limit: int) -> SyscallError:
    return SyscallError(Errno.EFBIG, f"{what} is {size} bytes; the limit is {limit}")


def _oserror(exc: OSError, path: str) -> SyscallError:
    if exc.errno == _errno.ENOENT:
        return SyscallError(Errno.ENOENT, f"no such file or directory: {path}")
    if exc.errno in (_errno.EACCES, _errno.EPERM):
        return SyscallError(Errno.EACCES, f"permission denied: {path}")
    if exc.errno == _errno.ELOOP:
        return SyscallError(Errno.EACCES, f"refused to write through a symlink: {path}")
    if exc.errno == _errno.EEXIST:
        return SyscallError(Errno.EEXIST, f"{path} exists (use --force to overwrite)")
    if exc.errno == _errno.EISDIR:
        return SyscallError(Errno.EISDIR, f"is a directory: {path}")
    if exc.errno == _errno.ENOTDIR:
        return SyscallError(Errno.ENOTDIR, f"not a directory: {path}")
    return SyscallError(Errno.EIO, f"{path}: {exc.strerror}")


# -- reading from the host --------------------------------------------------------
def read_tree(path: str, recursive: bool = False, max_file: int = MAX_FILE_BYTES,
              max_total: int = MAX_COPY_BYTES) -> list[HostFile]:
    """The file (or, with ``recursive``, the folder) at ``path`` as ``[(rel, data)]``.

    ``rel`` starts with the object's own name (``docs/a.txt`` for folder
    ``docs``); sizes are checked from ``stat`` first, so an over-large copy
    fails before a byte is read.
    """
    path = os.path.expanduser(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _oserror(exc, path) from None
    name = os.path.basename(os.path.normpath(os.path.abspath(path)))
    if _stat.S_ISREG(st.st_mode):
        plan = [(name, path, st.st_size)]
    elif _stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise SyscallError(Errno.EISDIR, f"{path} is a folder (copy folders with -r)")
        plan = _plan_folder(path, name)
    else:
        raise SyscallError(Errno.EINVAL, f"{path} is not a regular file or folder")
    total = 0
    for _rel, full, size in plan:
        if size > max_file:
            raise _too_big(full, size, max_file)
        total += size
    if total > max_total:
        raise _too_big(f"the copy ({len(plan)} files)", total, max_total)
    out: list[HostFile] = []
    for rel, full, _ in plan:
        try:
            with open(full, "rb") as f:
                data = f.read(max_file + 1)
        except OSError as exc:
            raise _oserror(exc, full) from None
        if len(data) > max_file:  # grew since the stat
            raise _too_big(full, len(data), max_file)
        out.append((rel, data))
    return out


def _plan_folder(root: str, name: str) -> list[tuple[str, str, int]]:
    plan: list[tuple[str, str, int]] = []
    real_root = os.path.realpath(root)

    def fail(exc: OSError) -> None:
        raise _oserror(exc, exc.filename or root)

    for d, dirs, files in os.walk(root, onerror=fail):  # followlinks=False: linked folders are not entered
        dirs.sort()
        reld = os.path.relpath(d, root)
        for fname in sorted(files):
            full = os.path.join(d, fname)
            if os.path.islink(full):  # a link planted in a downloaded folder must not pull in ~/.ssh
                real = os.path.realpath(full)
                if not real.startswith(real_root.rstrip(os.sep) + os.sep):
                    raise SyscallError(Errno.EACCES, f"refused: {full} links outside the folder {root}")
            try:
                st = os.stat(full)
            except OSError as exc:
                raise _oserror(exc, full) from None
            if not _stat.S_ISREG(st.st_mode):
                raise SyscallError(Errno.EINVAL, f"{full} is not a regular file")
            rel = fname if reld == "." else os.path.join(reld, fname)
            plan.append((f"{name}/{rel}", full, st.st_size))
            if len(plan) > MAX_COPY_FILES:
                raise SyscallError(Errno.EFBIG, f"{root} holds more than {MAX_COPY_FILES} files")
    return plan


# -- writing to the host ----------------------------------------------------------
def _components(rel: str) -> list[str]:
    parts = rel.split("/")
    for p in parts:
        if p in ("", ".", "..") or "\0" in p or os.sep in p:
            raise SyscallError(Errno.EACCES, f"refused: {rel!r} is not a plain relative path")
    return parts


def targets(path: str, files: list[HostFile]) -> tuple[str, list[tuple[list[str], bytes]]]:
    """The target folder and each file's components below it, with ``cp`` semantics.

    Into an existing folder, the copy keeps its own name (``get /docs out`` ->
    ``out/docs/...``); to a new or existing file name, the copy takes that name
    (``get /a.txt b.txt``, ``get /docs newdir`` -> ``newdir/...``).
    """
    path = os.path.expanduser(path)
    into = path.endswith("/") or os.path.isdir(path)
    folder = path if into else (os.path.dirname(path) or ".")
    out: list[tuple[list[str], bytes]] = []
    for rel, data in files:
        parts = _components(rel)
        if not into:
            parts[0] = os.path.basename(path)
            _components(parts[0])
        out.append((parts, data))
    return folder, out


def write_tree(path: str, files: list[HostFile], force: bool = False) -> list[str]:
    """Write ``files`` at ``path`` (see :func:`targets`); returns the host paths written."""
    folder, plan = targets(path, files)
    try:
        root = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _oserror(exc, folder) from None
    try:
        # First every check, so a refusal leaves the host untouched.
        for parts, _ in plan:
            _check(root, folder, parts, force)
        written: list[str] = []
        for parts, data in plan:
            _write_one(root, folder, parts, data, force)
            written.append(os.path.join(folder, *parts))
        return written
    finally:
        os.close(root)


def _lstat_at(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _check(root: int, folder: str, parts: list[str], force: bool) -> None:
    """Refuse (without writing) a destination that is, or passes through, a symlink or a clash."""
    fd = os.dup(root)
    try:
        for i, part in enumerate(parts):
            shown = os.path.join(folder, *parts[: i + 1])
            st = _lstat_at(fd, part)
            if st is None:
                return  # created fresh from here on
            if _stat.S_ISLNK(st.st_mode):
                raise SyscallError(Errno.EACCES, f"refused to write through a symlink: {shown}")
            last = i == len(parts) - 1
            if last:
                if _stat.S_ISDIR(st.st_mode):
                    raise SyscallError(Errno.EISDIR, f"is a directory: {shown}")
                if not _stat.S_ISREG(st.st_mode):
                    raise SyscallError(Errno.EACCES, f"refused: {shown} is not a regular file")
                if not force:
                    raise SyscallError(Errno.EEXIST, f"{shown} exists (use --force to overwrite)")
                return
            if not _stat.S_ISDIR(st.st_mode):
                raise SyscallError(Errno.ENOTDIR, f"not a directory: {shown}")
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        raise _oserror(exc, os.path.join(folder, *parts)) from None
    finally:
        os.close(fd)


def _write_one(root: int, folder: str, parts: list[str], data: bytes, force: bool) -> None:
    shown = os.path.join(folder, *parts)
    fd = os.dup(root)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
        name = parts[-1]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        if not force:
            _write_fd(os.open(name, flags, 0o666, dir_fd=fd), data)
            return
        tmp = f".{name}.lmos-{secrets.token_hex(4)}"
        _write_fd(os.open(tmp, flags, 0o666, dir_fd=fd), data)
        try:
            st = _lstat_at(fd, name)
            if st is not None and not _stat.S_ISREG(st.st_mode):
                raise SyscallError(Errno.EACCES, f"refused: {shown} is not a regular file")
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)  # replaces a link, never follows it
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise
    except OSError as exc:
        raise _oserror(exc, shown) from None
    finally:
        os.close(fd)


def _write_fd(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)
