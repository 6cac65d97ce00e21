"""Boot a kernel for a front-end command and run one program on it.

``lmosh`` boots the facade, serves the control socket (so ``lmos ps`` and
``lmos kill`` from another terminal reach this kernel), and runs the shell as
an ordinary process; ``lmos run`` does the same with an app.  Model loading
shows a spinner on stderr, since the first load can take seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from lmos.cli.control import serve, socket_path
from lmos.cli.terminal import LineTerminal, PromptTerminal
from lmos.syscalls.table import AppSpec
from lmos.system import Kernel
from lmos.userland.shell import shell_main


@contextlib.asynccontextmanager
async def booted(model: Any, state_dir: str, confirm: Any = None) -> AsyncIterator[Kernel]:
    console = Console(stderr=True)
    label = "built-in model" if model is None else str(getattr(model, "name", model))
    k = Kernel(model=model, state_dir=state_dir, confirm=confirm)
    if sys.stderr.isatty():
        with console.status(f"lmos: loading {label}..."):
            await k.__aenter__()
    else:
        await k.__aenter__()
    try:
        async with anyio.create_task_group() as tg:
            if state_dir != ":memory:":
                tg.start_soon(serve, k, socket_path(state_dir))
            yield k
            tg.cancel_scope.cancel()
    finally:
        await k.aclose()


async def run_shell(model: Any, state_dir: str, lines: list[str] | None) -> int:
    """lmosh: interactive when ``lines`` is None, else run those lines."""
    term: PromptTerminal | LineTerminal
    if lines is None:
        hist = None if state_dir == ":memory:" else Path(state_dir).expanduser() / "lmosh_history"
        if hist is not None:
            hist.parent.mkdir(parents=True, exist_ok=True)
        term = PromptTerminal(hist)
    else:
        term = LineTerminal(lines)

    async def main(sys_: Any, argv: list[str]) -> int:
        return await shell_main(sys_, argv, term, lines)

    async def confirm(req: Any) -> bool:
        return await term.confirm(req.describe())

    async with booted(model, state_dir, confirm) as k:
        k.programs.register(AppSpec("lmosh", main, frozenset({"*"}), description="the lmos shell"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(term.watch_sigint)
            pid = await k.spawn("lmosh", uid=os.getuid())
            w = await k.wait(pid)
            tg.cancel_scope.cancel()
    if w.exit_status != 0:
        print(f"lmosh: {w.error or 'exit ' + str(w.exit_status)}", file=sys.stderr)
        return 1
    return int(w.result) if isinstance(w.result, int) else 0


async def run_app(model: Any, state_dir: str, app: str, argv: list[str], as_json: bool = False) -> int:
    """lmos run: stream the app's tokens and output to stdout, then print what it returned that the
    stream did not show (with ``as_json``: nothing but the returned value, as one JSON document).
    Ctrl-C interrupts the app."""
    from lmos.userland.shell.render import failure, render_result, to_json

    async with booted(model, state_dir) as k:
        pid = (await k.syscall("spawn", app=app, argv=argv, stream=not as_json)).pid

        async def forward_sigint() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as sigs:
                n = 0
                async for _ in sigs:
                    n += 1
                    with contextlib.suppress(Exception):
                        await k.signal(pid, "INT" if n == 1 else "KILL")

        streamed: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(forward_sigint)
            while True:
                r = await k.syscall("events", pid=pid, timeout=None)
                for ev in r.events:
                    if ev.kind in ("token", "output") and ev.text and not as_json:
                        sys.stdout.write(ev.text)
                        sys.stdout.flush()
                        streamed.append(ev.text)
                if r.ended:
                    break
            tg.cancel_scope.cancel()
        w = await k.wait(pid)
    text = "".join(streamed)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
    if w.exit_status != 0:
        sys.stdout.flush()
        print(f"lmos: {failure(app, w)}", file=sys.stderr)
        return w.exit_status if 0 < w.exit_status < 256 else 1
    if as_json:
        print(to_json(w.result))
    elif w.result is not None:
        shown = render_result(w.result, text, width=shutil.get_terminal_size((100, 24)).columns,
                              color=sys.stdout.isatty() and "NO_COLOR" not in os.environ)
        if shown:
            print(shown)
    return 0


async def run_server(model: Any, state_dir: str, host: str, port: int, token: str | None) -> int:
    """lmos serve: the HTTP API until SIGINT/SIGTERM, then a clean shutdown of everything."""
    from lmos.server import serve as serve_http

    async with booted(model, state_dir) as k, anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                async for _ in sigs:
                    tg.cancel_scope.cancel()
                    return

        def ready(bound: int) -> None:
            auth = " (bearer token required)" if token else ""
            print(f"lmos: serving the HTTP API on http://{host}:{bound}/v1{auth}", file=sys.stderr,
                  flush=True)

        async def http() -> None:
            await serve_http(k, host=host, port=port, uid=os.getuid(), token=token, ready=ready)
            tg.cancel_scope.cancel()

        tg.start_soon(stop_on_signal)
        tg.start_soon(http)
    return 0
