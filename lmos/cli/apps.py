"""``lmos app``: install, list, show and remove apps in a state directory.

The commands are the app syscalls (:mod:`lmos.syscalls.apps`) made as the
calling user (an operator of the kernel: its owner, root, or root's
``[users] root_runs_as``) on the state directory's kernel: the running one
through its control socket, or
one opened for the command without a model (:mod:`lmos.cli.statedir`), so they
work whether or not lmosh or ``lmos serve`` is up.  ``PATH`` is made absolute
here because a running kernel reads it from its own working directory.

Installing never grants silently: without ``--grant`` the command fails with
one line listing the capabilities and tools the app asks for.
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import typer

from lmos.cli import StateOpt, fail, state_dir_of
from lmos.errors import SyscallError

apps = typer.Typer(name="app", help="Install, list, show and remove apps.", no_args_is_help=True)


def _call(state_dir: str | None, call: str, /, **args: Any) -> Any:
    from lmos.cli.statedir import syscall_on

    try:
        return syscall_on(state_dir_of(state_dir), call, **args)
    except SyscallError as exc:
        fail(exc)


def _asked(p: dict[str, Any]) -> str:
    caps = [c for c in p["caps"] if not c.startswith("tool:")]
    return f"capabilities: {', '.join(caps) or 'none'}; tools: {', '.join(p['tools']) or 'none'}"


@apps.command("install")
def install(path: Annotated[str, typer.Argument(help="an app folder or its app.toml")],
            grant: Annotated[bool, typer.Option("--grant", help="grant every capability and tool the app "
                                                "asks for")] = False,
            force: Annotated[bool, typer.Option("--force", help="allow a downgrade, or other content "
                                                "under the same version")] = False,
            trusted: Annotated[bool, typer.Option("--trusted", help="allow entry.kind = 'python' (runs "
                                                  "in-process, unsandboxed)")] = False,
            state_dir: StateOpt = None) -> None:
    """Install (or upgrade) the app in PATH; refused without --grant, saying what it asks for."""
    p = _call(state_dir, "app_install", path=os.path.abspath(os.path.expanduser(path)), grant=grant,
              force=force, trusted=trusted)
    short = p["hash"][:12]
    if p["action"] == "same":
        print(f"{p['name']} {p['version']} is already installed (same content, {short})")
    elif p["action"] == "install":
        print(f"installed {p['name']} {p['version']} ({short}); granted {_asked(p)}")
    else:
        done = {"upgrade": "upgraded", "reinstall": "reinstalled", "downgrade": "downgraded"}[p["action"]]
        print(f"{done} {p['name']} {p['installed_version']} -> {p['version']} ({short}); granted {_asked(p)}")


@apps.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
          state_dir: StateOpt = None) -> None:
    """The apps: built-in and installed, with version, origin and granted capabilities."""
    r = _call(state_dir, "app_list")
    if as_json:
        print(json.dumps(r))
        return
    rows = r["apps"]
    width = max([len(a["name"]) for a in rows] + [4])
    print(f"{'NAME':<{width}}  {'VERSION':<8} {'ORIGIN':<9} CAPABILITIES")
    for a in rows:
        caps = ", ".join(a["caps"]) or "-"
        print(f"{a['name']:<{width}}  {a['version'] or '-':<8} {a['origin']:<9} {caps}")


@apps.command("show")
def show(name: str, state_dir: StateOpt = None) -> None:
    """One app in detail: version, hash, origin, granted capabilities, tools, files."""
    d = _call(state_dir, "app_info", name=name)
    lines = [("name", d["name"]), ("version", d["version"] or "-"), ("origin", d["origin"]),
             ("kind", d["kind"]), ("description", d["description"] or "-"),
             ("capabilities", ", ".join(d["caps"]) or "-"), ("tools", ", ".join(d["tools"]) or "-"),
             ("hash", d["hash"] or "-")]
    if d.get("installed_at"):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["installed_at"]))
        lines.append(("installed", f"{when} by uid {d['installed_by']}" + (" (trusted)" if d["trusted"]
                                                                           else "")))
    if d["files"]:
        lines.append(("files", ", ".join(f"{k} ({v} B)" for k, v in sorted(d["files"].items()))))
    from lmos.userland.shell.termsafe import neutralize  # an app's description is its author's text

    for k, v in lines:
        print(f"{k + ':':<14}{neutralize(str(v))}")


@apps.command("remove")
def remove(name: str,
           force: Annotated[bool, typer.Option("--force", help="remove even while it runs (running "
                                               "processes keep their version)")] = False,
           state_dir: StateOpt = None) -> None:
    """Remove an installed app; refused while a process runs it unless --force."""
    r = _call(state_dir, "app_remove", name=name, force=force)
    still = f" ({len(r['running'])} running process(es) keep it until they end)" if r["running"] else ""
    print(f"removed {r['name']} {r['version']}{still}")
