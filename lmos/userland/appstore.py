"""Apps as folders: read, validate, hash and build them (the loader behind the app syscalls).

An app is a folder holding ``app.toml`` (see :mod:`lmos.userland.manifest`)
and, for ``entry.kind = "code"``, its Python files; other text files (data, a
README) may ride along.  The folder is flat, at most 1 MiB in all, UTF-8 text
only, and nothing in it may be a symlink: what is installed is exactly the
bytes the operator looked at, never a file elsewhere on the host that a link
points to.  Every refusal is one line with an errno.

The same path serves a user's app, the built-in apps in
``lmos/userland/apps/<name>/`` and the apps installed in a state directory
(rebuilt from the files stored in its database at boot): :func:`load_dir` or
:func:`package_from_files`, then :func:`check`, then :func:`build_spec`.
A package's ``hash`` is the sha256 of its canonical file set (sorted paths,
each with its length-prefixed bytes), so the same files always hash the same,
wherever they came from.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.syscalls.table import AppSpec, Main
from lmos.userland.manifest import Manifest, app_spec, asked_caps, parse_manifest

MANIFEST = "app.toml"
MAX_BYTES = 1 << 20  # all files together
MAX_FILES = 256
SKIPPED_DIRS = frozenset({"__pycache__"})  # left behind by running main.py on the host; never installed
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class AppPackage:
    """An app's manifest and files (relative path -> text), not yet runnable."""

    manifest: Manifest
    files: dict[str, str]
    hash: str

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def kind(self) -> str:
        return self.manifest.entry.kind

    @property
    def description(self) -> str:
        return self.manifest.description

    @property
    def caps(self) -> frozenset[str]:
        return asked_caps(self.manifest)

    @property
    def tools(self) -> list[str]:
        return list(self.manifest.tools)


def canonical_hash(files: Mapping[str, str]) -> str:
    """sha256 hex over the sorted (path, text) pairs, each part length-prefixed."""
    h = hashlib.sha256(b"lmos-app-v1\0")
    for path in sorted(files):
        for part in (path.encode(), files[path].encode()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()


def package_from_files(files: Mapping[str, str], *, origin: str = "app") -> AppPackage:
    """Validate a file set (names, size, manifest) as an app package."""
    if len(files) > MAX_FILES:
        raise SyscallError(Errno.E2BIG, f"{origin}: more than {MAX_FILES} files")
    total = 0
    for path, text in files.items():
        if not isinstance(path, str) or not isinstance(text, str):
            raise SyscallError(Errno.EINVAL, f"{origin}: files must map names to text")
        if not FILE_NAME.match(path):
            raise SyscallError(Errno.EINVAL, f"{origin}: bad file name {path!r} (plain names in one "
                               "folder: letters, digits, '_', '-', '.')")
        total += len(path.encode()) + len(text.encode())
    if total > MAX_BYTES:
        raise SyscallError(Errno.E2BIG, f"{origin}: the app is {total} bytes, over the limit of {MAX_BYTES}")
    manifest = files.get(MANIFEST)
    if manifest is None:
        raise SyscallError(Errno.EINVAL, f"{origin}: no {MANIFEST}")
    m = parse_manifest(manifest, origin=f"{origin}/{MANIFEST}" if origin != "app" else MANIFEST)
    e = m.entry
    if e.kind == "code" and e.source is not None:
        if not e.source.endswith(".py"):
            raise SyscallError(Errno.EINVAL, f"{m.name}: entry.source must be a .py file")
        if e.source not in files:
            raise SyscallError(Errno.ENOENT, f"{m.name}: entry.source {e.source} is not in the app's files")
    return AppPackage(m, dict(files), canonical_hash(files))


def load_dir(path: str | os.PathLike[str]) -> AppPackage:
    """Read an app folder (or the folder of an ``app.toml``) from the host."""
    p = Path(path).expanduser()
    folder = p.parent if p.name == MANIFEST and not p.is_dir() else p
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise SyscallError(Errno.ENOENT, f"{p}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SyscallError(Errno.EINVAL, f"{p}: not an app folder or its {MANIFEST}")
    files: dict[str, str] = {}
    total = 0
    try:
        entries = sorted(os.scandir(folder), key=lambda d: d.name)
    except OSError as exc:
        raise SyscallError(Errno.EACCES, f"{folder}: {exc.strerror}") from None
    for d in entries:
        where = folder / d.name
        if d.is_symlink():
            raise SyscallError(Errno.EINVAL, f"{where}: symlinks are not allowed in an app folder")
        if d.is_dir(follow_symlinks=False):
            if d.name in SKIPPED_DIRS:
                continue
            raise SyscallError(Errno.EINVAL, f"{where}: subfolders are not supported (an app folder is flat)")
        data = _read_plain(where)
        total += len(data)
        if total > MAX_BYTES:
            raise SyscallError(Errno.E2BIG, f"{folder}: the app is over the limit of {MAX_BYTES} bytes")
        try:
            files[d.name] = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SyscallError(Errno.EINVAL, f"{where}: not UTF-8 text") from None
    return package_from_files(files, origin=str(folder))


def _read_plain(path: Path) -> bytes:
    """A regular file's bytes, refusing a symlink even if one appears after the listing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # it became a symlink after the listing
            raise SyscallError(Errno.EINVAL, f"{path}: symlinks are not allowed in an app folder") from None
        raise SyscallError(Errno.EACCES, f"{path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SyscallError(Errno.EINVAL, f"{path}: not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:
                raise SyscallError(Errno.E2BIG, f"{path}: over the app limit of {MAX_BYTES} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


# -- code apps ------------------------------------------------------------------
def check(pkg: AppPackage) -> None:
    """Everything that can be checked before running: a code app's files compile under the sandbox's
    rules (in a sandbox worker, never in this process; blocking)."""
    if pkg.kind != "code":
        return
    from lmos.userland.codeapp import compile_check

    files = dict(pkg.files)
    if pkg.manifest.entry.code is not None:
        files["app.toml:entry.code.py"] = pkg.manifest.entry.code
    compile_check(files)


def _code_entry(pkg: AppPackage) -> Main:
    from lmos.userland.codeapp import code_main

    return code_main(pkg.manifest, pkg.files)


def build_spec(pkg: AppPackage, *, caps: frozenset[str] | None = None, trusted: bool = False,
               origin: str = "installed") -> AppSpec:
    """The runnable app: exactly ``caps`` (default: what it asks for), entry by kind."""
    main = _code_entry(pkg) if pkg.kind == "code" else None
    return app_spec(pkg.manifest, trusted=trusted, main=main, caps=pkg.caps if caps is None else caps,
                    extra={"hash": pkg.hash, "origin": origin, "files": pkg.files})


class Loader:
    """The facade hands this to the syscall layer as its app loader (``lmos.syscalls.apps``)."""

    def load_dir(self, path: str) -> AppPackage:
        return load_dir(path)

    def from_files(self, files: dict[str, str]) -> AppPackage:
        return package_from_files(files)

    def check(self, pkg: Any) -> None:
        check(pkg)

    def spec(self, pkg: Any, *, caps: frozenset[str], trusted: bool, origin: str) -> AppSpec:
        return build_spec(pkg, caps=caps, trusted=trusted, origin=origin)
