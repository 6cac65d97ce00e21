"""The ``lmos`` command and the ``lmosh`` entry point.

Every failure a user can cause (an unknown app, model or flag, a missing
kernel) ends with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

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


def fail(exc: SyscallError, prog: str = "lmos") -> NoReturn:
    from lmos.userland.shell.termsafe import neutralize  # a message may quote what a process wrote

    print(f"{prog}: {exc.errno.name}: {neutralize(exc.message)}", file=sys.stderr)
    raise typer.Exit(1)


AsRootOpt = Annotated[bool, typer.Option("--as-root", envvar="LMOS_AS_ROOT", help="when run by root: act "
                                          "as root, not as [users] root_runs_as (default nobody)")]


def model_spec(spec: str | None) -> str | None:
    """The --model a front end asks for (None: whatever the running kernel has, or the built-in)."""
    return spec or os.environ.get("LMOS_MODEL") or None


def on_kernel(state_dir: str | None, fn: Any, *, start: bool = False, as_root: bool = False) -> Any:
    """Run ``await fn(conn)`` attached to the kernel of the state directory (as this user's session)."""
    from lmos.cli.control import open_connection

    async def main() -> Any:
        d = state_dir_of(state_dir)
        async with open_connection(d, kind="lmos", start=start, as_root=as_root) as conn:
            return await fn(conn)

    try:
        return anyio.run(main)
    except SyscallError as exc:
        fail(exc)


@app.command()
def run(app_name: Annotated[str, typer.Argument(metavar="APP", help="app to run")],
        args: Annotated[list[str] | None, typer.Argument(help="arguments for the app")] = None,
        model: ModelOpt = None, state_dir: StateOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="print only the app's result, as one JSON "
                                              "document (nothing is streamed), for scripts")] = False,
        as_root: AsRootOpt = False) -> None:
    """Run APP as a process of the state directory's kernel (started if none runs), streaming its
    output, then print its result; exit with its status.

    Options for the app itself go after ``--``: lmos run APP -- --flag VALUE."""
    from lmos.cli.boot import run_app

    status = anyio.run(run_app, model_spec(model), state_dir_of(state_dir), app_name, list(args or []),
                       as_json, as_root)
    raise typer.Exit(status)


@app.command()
def ps(state_dir: StateOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False,
       as_root: AsRootOpt = False,
       every: Annotated[bool, typer.Option("--all", help="every process the state directory remembers: "
                                           "ended, recovered after a crash, lost")] = False) -> None:
    """The process table of the kernel running on the state directory."""
    if every:
        from lmos.cli.replay import ps_all

        ps_all(state_dir_of(state_dir), as_json)
        return
    procs = on_kernel(state_dir, lambda c: c.call("ps"), as_root=as_root)["procs"]
    if as_json:
        print(json.dumps(procs))
        return
    print(f"{'PID':>6} {'PPID':>6} {'UID':>6} {'STATE':<8} {'GEN':>7}  APP")
    for p in procs:
        gen = p["usage"]["completion_tokens"]
        print(f"{p['pid']:>6} {p['ppid']:>6} {p['uid']:>6} {p['state']:<8} {gen:>7}  {p['app']}")


@app.command()
def kill(pid: int, signal: Annotated[str, typer.Option("--signal", "-s")] = "TERM",
         state_dir: StateOpt = None, as_root: AsRootOpt = False) -> None:
    """Send a signal (TERM, KILL, INT, STOP, CONT) to a process of the running kernel."""
    on_kernel(state_dir, lambda c: c.call("kill", pid=pid, signal=signal), as_root=as_root)


@app.command()
def up(model: ModelOpt = None, state_dir: StateOpt = None) -> None:
    """Start the state directory's kernel and keep it running with no front end attached."""
    from lmos.cli.boot import up as up_

    try:
        st = anyio.run(up_, model_spec(model), state_dir_of(state_dir))
    except SyscallError as exc:
        fail(exc)
    print(f"lmos: kernel {st['pid']} is up on {st['state_dir']} (model {st['model']})")


@app.command()
def status(state_dir: StateOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What runs on the state directory's kernel: pid, model, uptime, processes, front ends."""
    from lmos.cli.boot import status as status_

    try:
        st = anyio.run(status_, state_dir_of(state_dir))
    except SyscallError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(st))
        return
    up_s = int(st["uptime"])
    print(f"kernel:     pid {st['pid']} (lmos {st['version']}){' (lmos up)' if st['stay'] else ''}")
    print(f"state dir:  {st['state_dir']}")
    print(f"model:      {st['model']} (loaded as: {', '.join(st['models']) or 'none'})")
    for name, tuning in st.get("tuning", {}).items():
        if tuning:
            print(f"limits:     {name}: {tuning}")
    print(f"uptime:     {up_s // 3600}h{up_s // 60 % 60:02d}m{up_s % 60:02d}s")
    print(f"processes:  {st['processes']}" + "".join(f"\n  {p['pid']:>6} uid {p['uid']:<6} {p['state']:<8} "
                                                    f"{p['app']}" for p in st["procs"]))
    print(f"front ends: {len(st['frontends'])}" + "".join(f"\n  {f['pid']:>6} uid {f['uid']:<6} {f['kind']}"
                                                         for f in st["frontends"]))


@app.command()
def down(state_dir: StateOpt = None,
         force: Annotated[bool, typer.Option("--force", "-f", help="stop even with processes running or "
                                             "front ends attached (they are killed)")] = False) -> None:
    """Stop the state directory's kernel cleanly (asks first when processes are running)."""
    from lmos.cli.boot import down as down_

    async def ask(why: str) -> bool:
        if not sys.stdin.isatty():
            return False
        answer = await anyio.to_thread.run_sync(input, f"lmos: {why}. Stop anyway? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    try:
        pid = anyio.run(down_, state_dir_of(state_dir), force, ask)
    except SyscallError as exc:
        fail(exc)
    print(f"lmos: kernel {pid} stopped")


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
          as_root: AsRootOpt = False,
          insecure: Annotated[bool, typer.Option("--insecure", help="serve a non-loopback --host with no "
                                                 "API key (every client acts as you)")] = False,
          allow_host: Annotated[list[str] | None, typer.Option(help="also accept this Host header "
                                                               "(name or name:port; repeatable)")] = None,
          cluster: Annotated[str | None, typer.Option(help="run the model as replicas on a Ray cluster: "
                                                      "ray://HEAD:10001, HOST:PORT, auto or local (needs "
                                                      "lmos[ray]; applies when this starts the kernel)"
                                                      )] = None,
          ) -> None:
    """Serve the HTTP API (lmos's own routes and OpenAI-compatible ones) from the state directory's
    kernel (started if none runs) until Ctrl-C."""
    from lmos.cli.boot import run_server

    if not 0 <= port < 65536:
        print(f"lmos: EINVAL: port {port} is out of range", file=sys.stderr)
        raise typer.Exit(2)
    if cluster:
        os.environ["LMOS_CLUSTER"] = cluster  # the kernel process started for this reads its settings
    raise typer.Exit(anyio.run(run_server, model_spec(model), state_dir_of(state_dir), host, port, token,
                               as_root, insecure, allow_host or []))


@app.command()
def version() -> None:
    """Print the lmos version."""
    from lmos import __version__

    print(f"lmos {__version__}")


@app.command()
def shell(model: ModelOpt = None, state_dir: StateOpt = None,
          command: Annotated[str | None, typer.Option("-c", help="run these ;-separated commands")] = None,
          script: Annotated[Path | None, typer.Argument(help="a file of shell commands")] = None,
          as_root: AsRootOpt = False) -> None:
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
    code = anyio.run(run_shell, model_spec(model), state_dir_of(state_dir), lines, as_root)
    raise typer.Exit(code)


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
from lmos.cli import audit as _audit  # noqa: E402,F401  (``lmos audit``: registers itself on app)
from lmos.cli import replay as _replay  # noqa: E402,F401  (``lmos replay``: registers itself on app)


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
        from lmos.userland.shell.termsafe import neutralize  # a message may quote what a process wrote

        print(f"{prog}: {err.errno.name}: {neutralize(err.message)}", file=sys.stderr)
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
