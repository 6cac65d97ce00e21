"""Front ends on the state directory's kernel process: lmosh, ``lmos run``, ``lmos serve``.

Each attaches to the kernel of its state directory (starting it when none is
running, :mod:`lmos.cli.launch`) and acts as its session process there:

- lmosh runs the shell here, in the front end's process, with a
  :class:`~lmos.cli.remote.RemoteSys`: its terminal, jobs and history are this
  process's; a confirmation asked by a process it started comes to this terminal;
- ``lmos run`` spawns the app as a child of its session, streams its output,
  forwards Ctrl-C (INT, then KILL) and answers confirmations on this terminal;
- ``lmos serve`` asks the kernel process to serve HTTP for as long as it stays
  attached.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from lmos.cli.control import Connection, open_connection
from lmos.cli.remote import RemoteSys


async def run_shell(model: str | None, state_dir: str, lines: list[str] | None, as_root: bool = False) -> int:
    """lmosh: interactive when ``lines`` is None, else run those lines."""
    from lmos.cli.terminal import LineTerminal, PromptTerminal
    from lmos.userland.shell import shell_main

    term: PromptTerminal | LineTerminal
    if lines is None:
        hist = None if state_dir == ":memory:" else Path(state_dir).expanduser() / "lmosh_history"
        if hist is not None:
            hist.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # what the user typed is as private as the state directory
                os.close(os.open(hist, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
                os.chmod(hist, 0o600)
        term = PromptTerminal(hist)
    else:
        term = LineTerminal(lines)

    async def confirm(req: dict[str, Any]) -> bool:
        return await term.confirm(str(req.get("question", "")))

    status: Any = 1
    async with open_connection(state_dir, model=model, as_root=as_root, kind="lmosh") as conn:
        conn.on_confirm = confirm

        async def kernel_gone() -> None:  # the shell cannot go on without its kernel: say so, end
            if isinstance(conn, Connection):
                await conn.closed.wait()
                term.write_err("\nlmosh: EPIPE: the kernel stopped (lmos down, or it died)\n")
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(term.watch_sigint)
            tg.start_soon(kernel_gone)
            status = await shell_main(RemoteSys(conn), [], term, lines)
            tg.cancel_scope.cancel()
    return int(status) if isinstance(status, int) else 0


async def ask_tty(req: dict[str, Any]) -> bool:
    """A confirmation for ``lmos run``: asked on this terminal, refused when there is none."""
    from lmos.userland.shell.termsafe import neutralize

    question = neutralize(str(req.get("question", "")))
    if not sys.stdin.isatty():
        print(f"lmos: refused: {question} (no terminal to confirm on)", file=sys.stderr, flush=True)
        return False
    from prompt_toolkit import PromptSession

    sys.stdout.write("\n")
    try:
        answer = await PromptSession[str]().prompt_async(f"lmos: {question}. Allow? [y/N] ",
                                                         handle_sigint=False)
    except (KeyboardInterrupt, EOFError):
        return False
    return answer.strip().lower() in ("y", "yes")


async def run_app(model: str | None, state_dir: str, app: str, argv: list[str], as_json: bool = False,
                  as_root: bool = False) -> int:
    """lmos run: stream the app's tokens and output to stdout, then print what it returned that the
    stream did not show (with ``as_json``: nothing but the returned value, as one JSON document).
    Ctrl-C interrupts the app, a second one kills it."""
    from lmos.userland.shell.render import failure, render_result, to_json
    from lmos.userland.shell.termsafe import Neutralizer

    safe = Neutralizer()  # process output never drives the terminal (issue 13 item 10)
    async with open_connection(state_dir, model=model, as_root=as_root, kind="lmos") as conn:
        conn.on_confirm = ask_tty
        sys_ = RemoteSys(conn)
        pid = await sys_.spawn(app, argv, stream=not as_json)

        async def forward_sigint() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as sigs:
                n = 0
                async for _ in sigs:
                    n += 1
                    with contextlib.suppress(Exception):
                        await sys_.kill(pid, "INT" if n == 1 else "KILL")

        streamed: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(forward_sigint)
            while True:
                r = await sys_.call("events", pid=pid, timeout=None)
                for ev in r.events:
                    if ev.kind in ("token", "output") and ev.text and not as_json:
                        sys.stdout.write(safe.feed(ev.text))
                        sys.stdout.flush()
                        streamed.append(ev.text)
                if r.ended:
                    break
            tg.cancel_scope.cancel()
        w = await sys_.wait(pid)
    text = "".join(streamed)
    sys.stdout.write(safe.flush())
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


async def run_server(model: str | None, state_dir: str, host: str, port: int, token: str | None,
                     as_root: bool = False, insecure: bool = False, allowed_hosts: list[str] | None = None
                     ) -> int:
    """lmos serve: the kernel process serves HTTP (as this user) until SIGINT/SIGTERM here."""
    async with open_connection(state_dir, model=model, as_root=as_root, kind="lmos") as conn:
        r = await conn.op("serve", host=host, port=port, token=token, insecure=insecure,
                          allowed_hosts=list(allowed_hosts or []))
        auth = " (bearer token required)" if token else ""
        print(f"lmos: serving the HTTP API on http://{host}:{r['port']}/v1{auth} (kernel pid "
              f"{conn.info['kernel_pid']})", file=sys.stderr, flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
            async for _ in sigs:
                break
    return 0


async def up(model: str | None, state_dir: str) -> dict[str, Any]:
    """lmos up: a kernel that stays with no front end attached (started, or told to stay)."""
    async with open_connection(state_dir, model=model, kind="lmos", stay=True) as conn:
        await conn.op("stay")
        st: dict[str, Any] = await conn.op("status")
    return st


async def status(state_dir: str) -> dict[str, Any]:
    async with open_connection(state_dir, kind="lmos", start=False) as conn:
        st: dict[str, Any] = await conn.op("status")
        st["frontends"] = [f for f in st["frontends"] if f["pid"] != conn.pid]
    return st


async def down(state_dir: str, force: bool, ask: Any) -> int:
    """lmos down: stop the kernel; with processes running it asks first (``ask``), or needs ``force``.
    Returns the kernel's pid once it has exited."""
    from lmos.errors import Errno, SyscallError

    async with open_connection(state_dir, kind="lmos", start=False) as conn:
        kpid = int(conn.info["kernel_pid"])
        try:
            await conn.op("down", force=force)
        except SyscallError as exc:
            if exc.errno != Errno.EBUSY or not await ask(exc.message):
                raise
            await conn.op("down", force=True)
    await _gone(kpid)
    return kpid


async def _gone(pid: int, timeout: float = 60.0) -> None:
    from lmos.cli.control import pid_alive

    with anyio.move_on_after(timeout):
        while pid_alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # our own child when this process started it
            await anyio.sleep(0.05)


__all__ = ["Connection", "down", "run_app", "run_server", "run_shell", "status", "up"]
