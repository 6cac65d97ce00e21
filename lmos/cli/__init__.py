"""The ``lmos`` command and the ``lmosh`` entry point.

Every failure a user can cause (an unknown app, model or flag, a missing
kernel) ends with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

try:  # typer >= 0.20 vendors click; its exceptions live there
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc  # type: ignore[no-redef]

from lmos.config import default_home
from lmos.errors import Errno, SyscallError

app = typer.Typer(name="lmos", help="lmos: an operating-system kernel for LLM agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None, add_completion=True)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="model directory, 'builtin', or "
                                              "'scripted[:REPLY]' (the deterministic test driver)")]
StateOpt = Annotated[str | None, typer.Option("--state-dir", help="state directory (default $LMOS_HOME or "
                                              "~/.lmos; ':memory:' keeps nothing)")]


def state_dir_of(opt: str | None) -> str:
    return opt or os.environ.get("LMOS_STATE_DIR") or str(default_home())


def model_of(spec: str | None) -> Any:
    """A model argument for lmos.Kernel from a command-line spec."""
    spec = spec or os.environ.get("LMOS_MODEL") or "builtin"
    if spec == "builtin":
        return None
    if spec == "scripted" or spec.startswith("scripted:"):
        from lmos.drivers.scripted import ScriptedDriver

        reply = spec.partition(":")[2] or None
        return ScriptedDriver(reply)
    return spec


def fail(exc: SyscallError, prog: str = "lmos") -> None:
    print(f"{prog}: {exc.errno.name}: {exc.message}", file=sys.stderr)
    raise typer.Exit(1)


@app.command()
def run(app_name: Annotated[str, typer.Argument(metavar="APP", help="app to run")],
        args: Annotated[list[str] | None, typer.Argument(help="arguments for the app")] = None,
        model: ModelOpt = None, state_dir: StateOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="print only the app's result, as one JSON "
                                              "document (nothing is streamed), for scripts")] = False,
        ) -> None:
    """Run APP as a process, streaming its output, then print its result; exit with its status.

    Options for the app itself go after ``--``: lmos run APP -- --flag VALUE."""
    from lmos.cli.boot import run_app

    status = anyio.run(run_app, model_of(model), state_dir_of(state_dir), app_name, list(args or []),
                       as_json)
    raise typer.Exit(status)


@app.command()
def ps(state_dir: StateOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The process table of the kernel running on the state directory."""
    from lmos.cli import control

    try:
        procs = control.call(state_dir_of(state_dir), "ps")["procs"]
    except SyscallError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(procs))
        return
    print(f"{'PID':>6} {'PPID':>6} {'STATE':<8} {'GEN':>7}  APP")
    for p in procs:
        gen = p["usage"]["completion_tokens"]
        print(f"{p['pid']:>6} {p['ppid']:>6} {p['state']:<8} {gen:>7}  {p['app']}")


@app.command()
def kill(pid: int, signal: Annotated[str, typer.Option("--signal", "-s")] = "TERM",
         state_dir: StateOpt = None) -> None:
    """Send a signal (TERM, KILL, INT, STOP, CONT) to a process of the running kernel."""
    from lmos.cli import control

    try:
        control.call(state_dir_of(state_dir), "kill", pid=pid, signal=signal)
    except SyscallError as exc:
        fail(exc)


@app.command()
def bench(name: Annotated[str, typer.Argument(help="benchmark name, e.g. kernel_overhead")],
          args: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Run benchmarks/NAME.py from the source tree (one JSON line of figures at the end)."""
    import runpy

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    script = root / f"{name}.py"
    if not script.is_file():
        known = ", ".join(sorted(p.stem for p in root.glob("*.py"))) if root.is_dir() else "none found"
        fail(SyscallError(Errno.ENOENT, f"no benchmark {name!r} (known: {known})"))
    sys.argv = [str(script), *(args or [])]
    runpy.run_path(str(script), run_name="__main__")


@app.command()
def serve(model: ModelOpt = None, state_dir: StateOpt = None,
          host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port (0: any free port)")] = 8080,
          token: Annotated[str | None, typer.Option(envvar="LMOS_API_TOKEN", help="require "
                                                    "'Authorization: Bearer TOKEN' on every request")] = None,
          ) -> None:
    """Serve the HTTP API (lmos's own routes and OpenAI-compatible ones) until Ctrl-C."""
    from lmos.cli.boot import run_server

    if not 0 <= port < 65536:
        print(f"lmos: EINVAL: port {port} is out of range", file=sys.stderr)
        raise typer.Exit(2)
    raise typer.Exit(anyio.run(run_server, model_of(model), state_dir_of(state_dir), host, port, token))


@app.command()
def version() -> None:
    """Print the lmos version."""
    from lmos import __version__

    print(f"lmos {__version__}")


@app.command()
def shell(model: ModelOpt = None, state_dir: StateOpt = None,
          command: Annotated[str | None, typer.Option("-c", help="run these ;-separated commands")] = None,
          script: Annotated[Path | None, typer.Argument(help="a file of shell commands")] = None) -> None:
    """Open lmosh, the interactive shell (same as the lmosh command)."""
    from lmos.cli.boot import run_shell

    lines: list[str] | None = None
    if command is not None:
        lines = command.splitlines() or [""]  # a here-document in -c spans lines
    elif script is not None:
        try:
            lines = script.read_text().splitlines()
        except OSError as exc:
            fail(SyscallError(Errno.ENOENT, f"cannot read {script}: {exc.strerror}"), "lmosh")
    elif not sys.stdin.isatty():
        lines = sys.stdin.read().splitlines()
    status = anyio.run(run_shell, model_of(model), state_dir_of(state_dir), lines)
    raise typer.Exit(status)


def _mount_optional() -> None:
    """Sub-commands that live with their feature (training)."""
    try:
        from lmos.train.cli import app as train_app
    except ImportError:
        return
    for cmd in train_app.registered_commands:
        app.registered_commands.append(cmd)


_mount_optional()


def _mount_apps() -> None:
    """``lmos app ...`` (lmos/cli/apps.py); imported here, after the names it uses exist."""
    from lmos.cli.apps import apps as apps_cli

    app.add_typer(apps_cli, name="app")


_mount_apps()


def _mount_files() -> None:
    """``lmos cp``, ``write``, ``mount``, ``umount`` (lmos/cli/files.py)."""
    from lmos.cli.files import files_cli

    app.registered_commands.extend(files_cli.registered_commands)


_mount_files()


def _invoke(argv: list[str], prog: str) -> int:
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name=prog, standalone_mode=False)
    except click_exc.UsageError as exc:
        hint = ""
        if argv[:1] == ["run"] and isinstance(exc, click_exc.NoSuchOption):
            hint = " (an app's own options go after --: lmos run APP -- --option VALUE)"
        print(f"{prog}: {exc.format_message()}{hint}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 1))
    except (SyscallError, BaseExceptionGroup) as exc:
        err = _syscall_error(exc)
        if err is None:
            raise
        print(f"{prog}: {err.errno.name}: {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else 0


def _syscall_error(exc: BaseException) -> SyscallError | None:
    """The SyscallError inside ``exc`` (task groups wrap errors in groups)."""
    if isinstance(exc, SyscallError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _syscall_error(sub)
            if found is not None:
                return found
    return None


def main() -> None:
    """Entry point of ``lmos``."""
    raise SystemExit(_invoke(sys.argv[1:], "lmos"))


def shell_main() -> None:
    """Entry point of ``lmosh``: ``lmosh [--model M] [-c CMDS] [SCRIPT]``."""
    raise SystemExit(_invoke(["shell", *sys.argv[1:]], "lmosh"))
