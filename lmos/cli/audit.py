"""``lmos audit``: the audit log of the state directory, as a table or as JSON.

It works whether or not a kernel is running (:mod:`lmos.cli.statedir`) and
asks as the user who runs it, through the ``audit_query`` syscall
(:mod:`lmos.syscalls.audit_query`): a user sees their own rows, the operator
(the owner of the state directory, or root) every row.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from typing import Annotated, Any

import typer

from lmos.cli import StateOpt, app, fail, state_dir_of
from lmos.errors import Errno, SyscallError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """Unix seconds from ``1700000000``, an ISO date or time (``2026-11-29T17:00``), or an age (``90s``,
    ``10m``, ``2h``, ``3d``, ``1w``); EINVAL otherwise."""
    now = time.time() if now is None else now
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise SyscallError(Errno.EINVAL, f"--since {text!r}: give Unix seconds, an ISO date or time, "
                                         "or an age such as 10m, 2h, 3d") from None


def render_table(rows: list[dict[str, Any]], more: bool) -> None:
    """The rows as a rich table on standard output (terminal text neutralised)."""
    from rich.console import Console
    from rich.table import Table

    from lmos.userland.shell.termsafe import neutralize  # names and details may be what a program wrote

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("TIME", "left"), ("PID", "right"), ("UID", "right"), ("APP", "left"),
                      ("SYSCALL", "left"), ("DECISION", "left"), ("ERRNO", "left"), ("CAP", "left"),
                      ("US", "right")):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        when = datetime.fromtimestamp(r["ts"]).strftime("%Y-%m-%d %H:%M:%S")
        style = "red" if r["decision"] in ("deny", "violation") else None
        table.add_row(when, str(r["pid"]), str(r["uid"]), neutralize(r["app"]), neutralize(r["name"]),
                      r["decision"], r["errname"], neutralize(r["cap"])[:40], str(r["duration_us"]),
                      style=style)
    # a pipe gets whole lines (rich would fold them to 80 columns), a terminal its own width
    console = Console(highlight=False, markup=False, emoji=False, soft_wrap=False,
                      width=None if sys.stdout.isatty() else 1 << 12)
    console.print(table)
    if more:
        console.print("(older rows match too: raise --limit or narrow --since)")


@app.command()
def audit(pid: Annotated[int | None, typer.Option("--pid", help="rows of this process")] = None,
          uid: Annotated[int | None, typer.Option("--uid", help="rows of this user (the operator only, "
                                                  "for another user's)")] = None,
          syscall: Annotated[str | None, typer.Option("--syscall", help="a syscall or event name, or a "
                                                      "glob such as 'fs_*'")] = None,
          denied: Annotated[bool, typer.Option("--denied", help="only refusals (capability denials, "
                                               "sandbox violations)")] = False,
          since: Annotated[str | None, typer.Option("--since", help="Unix seconds, an ISO date or time, "
                                                    "or an age: 10m, 2h, 3d")] = None,
          limit: Annotated[int, typer.Option("--limit", help="the newest N rows that match")] = 100,
          as_json: Annotated[bool, typer.Option("--json", help="one JSON document: {rows, more}")] = False,
          state_dir: StateOpt = None) -> None:
    """The audit log: every syscall, with its capability decision and errno, oldest first.
    You see your own processes' rows; the operator sees everyone's."""
    from lmos.cli.statedir import syscall_on

    args: dict[str, Any] = {"limit": limit, "denied": denied}
    for key, value in (("pid", pid), ("uid", uid), ("syscall", syscall)):
        if value is not None:
            args[key] = value
    try:
        if since is not None:
            args["since"] = parse_since(since)
        reply = syscall_on(state_dir_of(state_dir), "audit_query", **args)
    except SyscallError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(reply))
        return
    render_table(reply["rows"], reply["more"])
