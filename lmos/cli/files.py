"""``lmos cp``, ``lmos write``, ``lmos mount`` and ``lmos umount``: files between the host and the store.

A store path is written ``lmos:/path``; anything else is a host path (``-`` is
standard input or output).  The commands work whether or not a kernel is
running on the state directory (:mod:`lmos.cli.statedir`), act as the user
who runs them (a session process of their uid; root: ``[users] root_runs_as``
unless ``LMOS_AS_ROOT``), and move bytes exactly (base64 on the wire).

Copying in onto existing store files needs a yes: ``--force``, or an answer
to a y/N question when standard input is a terminal; otherwise it is refused
before anything is written.  Copying out never overwrites host files without
``--force`` and never writes through symlinks (see :mod:`lmos.cli.hostfiles`).
Size limits: the store's per-file limit and ``MAX_COPY_BYTES`` per copy, both
checked before the first write (EFBIG).
"""

from __future__ import annotations

import base64
import os
import posixpath
import sys
from typing import Annotated, Any

import typer

from lmos.cli import StateOpt, fail, state_dir_of
from lmos.cli.hostfiles import MAX_COPY_BYTES, HostFile, read_tree, write_tree
from lmos.cli.statedir import Call, session
from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_FILE_BYTES, normalize
from lmos.userland.shell.files import store_targets

PREFIX = "lmos:"
files_cli = typer.Typer()

ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="overwrite existing files without asking")]


def copy_in(call: Call, files: list[HostFile], dest: str, force: bool) -> list[str]:
    """Write host ``files`` into the store at ``dest``; EEXIST for existing files unless confirmed."""
    try:
        dest_is_dir = call("fs_stat", path=dest)["kind"] == "dir"
    except SyscallError as exc:
        if exc.errno != Errno.ENOENT:
            raise
        dest_is_dir = False
    paths = [normalize(p) for p in store_targets(dest, [rel for rel, _ in files], dest_is_dir)]
    existing = []
    for p in paths:
        try:
            st = call("fs_stat", path=p)
        except SyscallError as exc:
            if exc.errno != Errno.ENOENT:
                raise
            continue
        if st["kind"] == "dir":
            raise SyscallError(Errno.EISDIR, f"is a directory: {PREFIX}{p}")
        existing.append(p)
    if existing and not force and not _ask_overwrite(existing):
        shown = ", ".join(PREFIX + p for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise SyscallError(Errno.EEXIST, f"{shown} exists; nothing copied (use --force to overwrite)")
    have = set(existing)
    for p, (_, data) in zip(paths, files, strict=True):
        call("fs_write", path=p, data_b64=base64.b64encode(data).decode("ascii"),
             mode="overwrite" if p in have else "create")
    return paths


def _ask_overwrite(paths: list[str]) -> bool:
    if not sys.stdin.isatty():
        return False
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    names = ", ".join(PREFIX + p for p in paths[:5]) + more
    sys.stderr.write(f"lmos: overwrite {names}? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def store_files(call: Call, src: str, recursive: bool) -> list[HostFile]:
    """The store file, or (``recursive``) folder, at ``src`` as ``[(rel, data)]`` for the host."""
    src = normalize(src)
    st = call("fs_stat", path=src)
    name = posixpath.basename(src) or "lmos"
    entries: list[dict[str, Any]] = [st]
    rels = [name]
    if st["kind"] == "dir":
        if not recursive:
            raise SyscallError(Errno.EISDIR, f"{PREFIX}{src} is a folder (copy folders with -r)")
        entries = [e for e in call("fs_list", path=src, recursive=True)["entries"] if e["kind"] == "file"]
        prefix = "/" if src == "/" else src + "/"
        rels = [name + "/" + e["path"][len(prefix):] for e in entries]
    total = sum(int(e["size"]) for e in entries)
    if total > MAX_COPY_BYTES:  # before the first host file is written
        raise SyscallError(Errno.EFBIG, f"the copy is {total} bytes; the limit is {MAX_COPY_BYTES}")
    return [(rel, base64.b64decode(call("fs_read", path=e["path"], binary=True)["data_b64"]))
            for rel, e in zip(rels, entries, strict=True)]


def _store_path(arg: str) -> str | None:
    return arg[len(PREFIX):] or "/" if arg.startswith(PREFIX) else None


@files_cli.command()
def cp(src: Annotated[str, typer.Argument(metavar="SRC", help="HOST_PATH, lmos:/PATH or - (stdin)")],
       dst: Annotated[str, typer.Argument(metavar="DST", help="lmos:/PATH, HOST_PATH or - (stdout)")],
       recursive: Annotated[bool, typer.Option("--recursive", "-r", help="copy folders")] = False,
       force: ForceOpt = False, state_dir: StateOpt = None) -> None:
    """Copy files between the host and the store: lmos cp ./faq.md lmos:/docs/ , lmos cp -r lmos:/docs out."""
    s_src, s_dst = _store_path(src), _store_path(dst)
    try:
        if (s_src is None) == (s_dst is None):
            raise SyscallError(Errno.EINVAL, "exactly one side of cp must be a store path (lmos:/PATH)")
        if s_dst is not None:  # host -> store: read and check sizes before any syscall
            if src == "-":
                data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
                if len(data) > MAX_FILE_BYTES:
                    raise SyscallError(Errno.EFBIG, f"standard input is over the {MAX_FILE_BYTES}-byte "
                                       "file limit")
                files = [(posixpath.basename(normalize(s_dst)) or "stdin", data)]
            else:
                files = read_tree(src, recursive)
            with session(state_dir_of(state_dir)) as call:
                copy_in(call, files, s_dst, force)
        else:
            assert s_src is not None
            with session(state_dir_of(state_dir)) as call:
                out = store_files(call, s_src, recursive)
            if dst == "-":
                if len(out) != 1:
                    raise SyscallError(Errno.EINVAL, "only a single file can be copied to standard output")
                data = out[0][1]
                if sys.stdout.isatty():  # a copy into a pipe is exact; onto a terminal it is shown safely
                    from lmos.userland.shell.termsafe import neutralize

                    data = neutralize(data.decode("utf-8", "replace")).encode("utf-8")
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            else:
                write_tree(dst, out, force)
    except SyscallError as exc:
        fail(exc)


@files_cli.command("write")
def write_cmd(dst: Annotated[str, typer.Argument(metavar="lmos:/PATH", help="the store file to write")],
              force: ForceOpt = False, state_dir: StateOpt = None) -> None:
    """Write standard input to a store file (same as: lmos cp - lmos:/PATH)."""
    if _store_path(dst) is None:
        fail(SyscallError(Errno.EINVAL, f"not a store path: {dst!r} (write lmos:/PATH)"))
    cp("-", dst, False, force, state_dir)


@files_cli.command()
def mount(host_dir: Annotated[str | None, typer.Argument(metavar="HOST_DIR", help="a host folder")] = None,
          path: Annotated[str | None, typer.Argument(metavar="DIR", help="where it shows, e.g. /faq")] = None,
          ro: Annotated[bool, typer.Option("--ro", help="read-only (the only kind there is)")] = True,
          state_dir: StateOpt = None) -> None:
    """Show a host folder read-only at DIR in every user's store (operator only); no arguments: list."""
    try:
        if host_dir is None:
            mounts: list[dict[str, Any]] = _call(state_dir, "fs_mounts")["mounts"]
            for m in mounts:
                print(f"{m['host_path'] or '?'} on {PREFIX}{m['path']} ({'ro' if m['ro'] else 'rw'})")
            return
        if path is None:
            raise SyscallError(Errno.EINVAL, "usage: lmos mount HOST_DIR /PATH [--ro]")
        host = os.path.abspath(os.path.expanduser(host_dir))  # the kernel may run in another directory
        _call(state_dir, "fs_mount", host_path=host, path=_store_path(path) or path, ro=ro)
    except SyscallError as exc:
        fail(exc)


@files_cli.command()
def umount(path: Annotated[str, typer.Argument(metavar="DIR", help="a mount point, e.g. /faq")],
           state_dir: StateOpt = None) -> None:
    """Remove a mount made by lmos mount (operator only)."""
    try:
        _call(state_dir, "fs_umount", path=_store_path(path) or path)
    except SyscallError as exc:
        fail(exc)


def _call(state_dir: str | None, name: str, **args: Any) -> Any:
    with session(state_dir_of(state_dir)) as call:
        return call(name, **args)
