"""Apps from lmosh: ``install PATH``, ``uninstall NAME`` and ``run ./path/app.toml ARGS``.

Granting is a person's decision, so the shell shows what an app asks for (its
capabilities and tools, and whether it is an upgrade) and asks ``grant?
[y/N]`` on the terminal before anything is installed or run; anything but
``y`` refuses.  The kernel reads the folder (``path``) and the
install names the hash that was shown, so what was shown is what gets
installed: a folder changed in between is refused.  ``run`` with a path loads the app for this shell only,
for one run, without installing it (``app_load``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lmos.errors import Errno, SyscallError
from lmos.userland.shell.render import to_builtins

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
install [--force] PATH  install the app in folder PATH (shows what it asks for, asks to grant it)
uninstall NAME          remove an installed app (asks first if it is running)
run ./DIR ARGS          run the app in a folder (or its app.toml) once, without installing it"""


def host_path(word: str) -> str:
    """The kernel reads the folder: make it absolute, ``~`` expanded."""
    return os.path.abspath(os.path.expanduser(word))


def describe_plan(p: dict[str, Any]) -> str:
    caps = [c for c in p["caps"] if not c.startswith("tool:")]
    what = {"install": "", "upgrade": f" (upgrade from {p['installed_version']})",
            "reinstall": f" (replaces other content of {p['installed_version']})",
            "downgrade": f" (downgrade from {p['installed_version']})", "same": " (already installed)"}
    about = p["description"] or p["kind"] + " app"
    lines = [f"{p['name']} {p['version']}{what.get(p['action'], '')}: {about}",
             f"  capabilities: {', '.join(caps) or 'none'}",
             f"  tools:        {', '.join(p['tools']) or 'none'}"]
    if p["trusted_needed"]:
        lines.append("  runs Python in-process (trusted): install it with `lmos app install --trusted`")
    return "\n".join(lines)


async def ask(sh: Shell, question: str) -> bool:
    """y/N on the terminal.  The terminals' own ``confirm`` asks inline, and a script (no terminal
    to answer on) is refused rather than having its next line taken as the answer."""
    confirm = getattr(sh.term, "confirm", None)
    if confirm is not None:
        return bool(await confirm(question))
    answer = await sh.term.read_line(f"{question} [y/N] ")
    return answer is not None and answer.strip().lower() in ("y", "yes")


async def cmd_install(sh: Shell, args: list[str], line: str) -> None:
    force = "--force" in args
    words = [a for a in args if a != "--force"]
    if len(words) != 1:
        sh.err("usage: install [--force] PATH")
        return
    path = host_path(words[0])
    p = to_builtins(await sh.sys.call("app_inspect", path=path))
    sh.out(describe_plan(p))
    if p["action"] == "same":
        return
    if p["needs_force"] and not force:
        sh.err(f"install: EEXIST: {p['name']} {p['version']}: use install --force to replace "
               f"{p['installed_version']}")
        return
    if p["needs_grant"] and not await ask(sh, f"grant {p['name']} what it asks for"):
        sh.err(f"install: {p['name']}: not granted, nothing installed")
        return
    r = to_builtins(await sh.sys.call("app_install", path=path, grant=True, force=force, hash=p["hash"]))
    done = {"install": "installed", "upgrade": "upgraded", "reinstall": "reinstalled",
            "downgrade": "downgraded"}
    sh.out(f"{done.get(r['action'], r['action'])} {r['name']} {r['version']}")
    await sh.refresh_names()


async def cmd_uninstall(sh: Shell, args: list[str], line: str) -> None:
    if len(args) != 1:
        sh.err("usage: uninstall NAME")
        return
    try:
        r = to_builtins(await sh.sys.call("app_remove", name=args[0]))
    except SyscallError as exc:
        if exc.errno != Errno.EBUSY:
            raise
        sh.out(exc.message.split(";")[0])
        if not await ask(sh, f"remove {args[0]} anyway (running processes keep it until they end)"):
            sh.err(f"uninstall: {args[0]}: not removed")
            return
        r = to_builtins(await sh.sys.call("app_remove", name=args[0], force=True))
    sh.out(f"removed {r['name']} {r['version']}")
    await sh.refresh_names()


async def load_path(sh: Shell, word: str) -> str | None:
    """For ``run ./dir``: show what the app asks, ask to grant it, load it; its one-run name, or None."""
    path = host_path(word)
    p = to_builtins(await sh.sys.call("app_inspect", path=path))
    p["action"] = "install"  # a loaded app replaces nothing: say what it asks for, not how it compares
    sh.out(describe_plan(p))
    if p["caps"] and not await ask(sh, f"grant {p['name']} what it asks for"):
        sh.err(f"run: {p['name']}: not granted, not run")
        return None
    r = to_builtins(await sh.sys.call("app_load", path=path, grant=True, hash=p["hash"]))
    return str(r["app"])


COMMANDS: dict[str, Command] = {"install": cmd_install, "uninstall": cmd_uninstall}
