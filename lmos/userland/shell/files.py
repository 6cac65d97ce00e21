"""The file store from the shell: ``ls``, ``cat``, ``write``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmos.userland.shell.render import to_builtins

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
ls [DIR] | cat FILE | write FILE TEXT...   your files"""


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


async def cmd_write(sh: Shell, args: list[str], line: str) -> None:
    if len(args) < 2:
        sh.err("usage: write FILE TEXT...")
        return
    await sh.sys.call("fs_write", path=args[0], data=" ".join(args[1:]) + "\n")


COMMANDS: dict[str, Command] = {"ls": cmd_ls, "cat": cmd_cat, "write": cmd_write}
