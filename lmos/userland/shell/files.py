"""The file store from the shell: ``ls``, ``cat``, ``write``, ``put``, ``get``, ``mount``.

``put`` and ``get`` move files between the user's host and the store.  The
shell is a process inside the kernel, so it never touches the host itself: the
terminal (the user's front end) reads and writes host files
(``Terminal.read_host`` / ``write_host``) and the shell moves the bytes through
the ordinary fs syscalls, so capabilities, confirmation and audit apply as to
any program.  Multi-line ``write`` reads a here-document from the same input
as the commands (the script's next lines, or the terminal's).
"""

from __future__ import annotations

import base64
import os
import posixpath
from typing import TYPE_CHECKING, Any

from lmos.errors import Errno, SyscallError
from lmos.userland.shell.render import to_builtins

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
ls [DIR] | cat FILE     your files
write FILE TEXT...      write one line to FILE (replacing a file asks first)
write FILE <<EOF        write the lines that follow, up to a line EOF (any word works as the end marker)
write FILE              write the lines that follow, up to a line with a single . (or end of input)
put [-r] [-f] HOST DEST copy a host file (-r: folder) into the store; -f replaces existing files (asks)
get [-r] [-f] SRC HOST  copy a store file (-r: folder) to the host; -f replaces host files
mount [HOST_DIR DIR]    show a host folder read-only at DIR (operator); no arguments: list | umount DIR"""


async def cmd_ls(sh: Shell, args: list[str], line: str) -> None:
    r = await sh.sys.call("fs_list", path=args[0] if args else "/")
    for e in to_builtins(r).get("entries", []):
        name = e.get("name", "?") if isinstance(e, dict) else str(e)
        kind = e.get("kind", "") if isinstance(e, dict) else ""
        sh.out(name + ("/" if kind == "dir" else ""))


async def cmd_cat(sh: Shell, args: list[str], line: str) -> None:
    if len(args) != 1:
        sh.err("usage: cat FILE")
        return
    r = to_builtins(await sh.sys.call("fs_read", path=args[0]))
    sh.out(str(r.get("data", r.get("text", ""))).rstrip("\n"))


async def read_body(sh: Shell, end: str) -> str:
    """Lines up to a line equal to ``end`` (or the end of input), each ending with a newline."""
    lines: list[str] = []
    while True:
        line = await sh.read_more("> ")
        if line is None or line == end:
            break
        lines.append(line + "\n")
    return "".join(lines)


def heredoc_end(args: list[str]) -> tuple[list[str], str | None]:
    """Split ``<<EOF`` / ``<< EOF`` off the arguments: (the rest, the end marker or None)."""
    for i, a in enumerate(args):
        if a.startswith("<<"):
            word = a[2:] or (args[i + 1] if i + 1 < len(args) else "")
            rest = args[:i] + args[i + (1 if a[2:] else 2):]
            if not word:
                raise SyscallError(Errno.EINVAL, "a here-document needs an end marker: write FILE <<EOF")
            return rest, word
    return args, None


async def cmd_write(sh: Shell, args: list[str], line: str) -> None:
    args, end = heredoc_end(args)
    if not args:
        sh.err("usage: write FILE TEXT... | write FILE <<EOF | write FILE (lines, then .)")
        return
    if end is not None or len(args) == 1:
        if len(args) != 1:
            sh.err("usage: write FILE <<EOF (the text follows on the next lines)")
            return
        data = await read_body(sh, end if end is not None else ".")
    else:
        data = " ".join(args[1:]) + "\n"
    await sh.sys.call("fs_write", path=args[0], data=data)


def flags(args: list[str], allowed: str) -> tuple[set[str], list[str]]:
    """Single-letter flags (``-r -f`` or ``-rf``) before the operands."""
    seen: set[str] = set()
    rest = list(args)
    while rest and rest[0].startswith("-") and len(rest[0]) > 1 and rest[0] != "--":
        for ch in rest.pop(0)[1:]:
            if ch not in allowed:
                raise SyscallError(Errno.EINVAL, f"unknown flag -{ch}")
            seen.add(ch)
    if rest and rest[0] == "--":
        rest.pop(0)
    return seen, rest


def store_targets(dest: str, rels: list[str], dest_is_dir: bool) -> list[str]:
    """Store paths for files ``rels`` (each starting with the copied object's name), cp-style.

    Into an existing folder, or one written with a final ``/``, the copy keeps
    its name (``put ./docs /d`` -> ``/d/docs/...``); otherwise it takes the
    destination's (``/d/...``).
    """
    into = dest_is_dir or dest.endswith("/")
    dest = "/" + dest.strip("/")
    out = []
    for rel in rels:
        parts = rel.split("/")
        if not into:
            parts = parts[1:]
        out.append(posixpath.join(dest, *parts) if parts else dest)
    return out


async def _kind(sh: Shell, path: str) -> str | None:
    try:
        return str(to_builtins(await sh.sys.call("fs_stat", path=path))["kind"])
    except SyscallError as exc:
        if exc.errno == Errno.ENOENT:
            return None
        raise


async def cmd_put(sh: Shell, args: list[str], line: str) -> None:
    opts, ops = flags(args, "rf")
    if len(ops) != 2:
        sh.err("usage: put [-r] [-f] HOST_PATH /PATH")
        return
    files = await sh.term.read_host(ops[0], "r" in opts)  # EFBIG here, before any write
    paths = store_targets(ops[1], [rel for rel, _ in files], await _kind(sh, ops[1]) == "dir")
    existing = []
    for p in paths:  # every target checked (and its name validated) before the first write
        kind = await _kind(sh, p)
        if kind == "dir":
            raise SyscallError(Errno.EISDIR, f"is a directory: {p}")
        if kind is not None:
            existing.append(p)
    if existing and "f" not in opts:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise SyscallError(Errno.EEXIST, f"{existing[0]}{more} exists; nothing copied (put -f replaces)")
    have = set(existing)
    for p, (_, data) in zip(paths, files, strict=True):
        await sh.sys.call("fs_write", path=p, data_b64=base64.b64encode(data).decode("ascii"),
                          mode="overwrite" if p in have else "create")
    sh.out(f"{len(paths)} file{'s' if len(paths) != 1 else ''}, {sum(len(d) for _, d in files)} bytes")


async def store_files(sys: Any, src: str, recursive: bool) -> list[tuple[str, bytes]]:
    """The store file (or, ``recursive``, folder) ``src`` as ``[(rel, data)]``, rel starting with its name."""
    st = to_builtins(await sys.call("fs_stat", path=src))
    path = str(st["path"])
    name = posixpath.basename(path) or "lmos"
    if st["kind"] != "dir":
        pairs = [(name, path)]
    elif not recursive:
        raise SyscallError(Errno.EISDIR, f"{path} is a folder (copy folders with -r)")
    else:
        entries = to_builtins(await sys.call("fs_list", path=path, recursive=True))["entries"]
        prefix = "/" if path == "/" else path + "/"
        pairs = [(name + "/" + e["path"][len(prefix):], e["path"]) for e in entries if e["kind"] == "file"]
    out = []
    for rel, p in pairs:
        r = to_builtins(await sys.call("fs_read", path=p, binary=True))
        out.append((rel, base64.b64decode(r["data_b64"])))
    return out


async def cmd_get(sh: Shell, args: list[str], line: str) -> None:
    opts, ops = flags(args, "rf")
    if len(ops) != 2:
        sh.err("usage: get [-r] [-f] /PATH HOST_PATH")
        return
    files = await store_files(sh.sys, ops[0], "r" in opts)
    written = await sh.term.write_host(ops[1], files, "f" in opts)
    sh.out(f"{len(written)} file{'s' if len(written) != 1 else ''}, {sum(len(d) for _, d in files)} bytes")


async def cmd_mount(sh: Shell, args: list[str], line: str) -> None:
    if not args:
        for m in to_builtins(await sh.sys.call("fs_mounts"))["mounts"]:
            sh.out(f"{m['host_path'] or '?'} on {m['path']} ({'ro' if m['ro'] else 'rw'})")
        return
    ops = [a for a in args if a != "--ro"]
    if len(ops) != 2:
        sh.err("usage: mount HOST_DIR /DIR [--ro]")
        return
    # The kernel checks the folder; the shell runs where the user typed the path, so make it absolute.
    host = os.path.abspath(os.path.expanduser(ops[0]))
    await sh.sys.call("fs_mount", host_path=host, path=ops[1], ro=True)


async def cmd_umount(sh: Shell, args: list[str], line: str) -> None:
    if len(args) != 1:
        sh.err("usage: umount /DIR")
        return
    await sh.sys.call("fs_umount", path=args[0])


COMMANDS: dict[str, Command] = {"ls": cmd_ls, "cat": cmd_cat, "write": cmd_write, "put": cmd_put,
                                "get": cmd_get, "mount": cmd_mount, "umount": cmd_umount}
