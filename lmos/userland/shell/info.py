"""The state of the system: processes, apps, models, memory, traces; help and exit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lmos.userland.shell.jobs import cmd_run, pid_arg
from lmos.userland.shell.render import render_result, to_builtins

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
ps | top [-n N]      the process table; a live view (Ctrl-C leaves it)
apps | models        installed apps; loaded models
mem PID | logs PID   context memory of a process; its syscall trace
chat [MESSAGE]       talk to the assistant app (empty line ends a chat)
help | exit          this text; leave (Ctrl-D works too)"""


async def cmd_ps(sh: Shell, args: list[str], line: str) -> None:
    sh.out(f"{'PID':>6} {'PPID':>6} {'UID':>5} {'STATE':<8} {'PROMPT':>7} {'GEN':>7} {'WALL':>7}  APP")
    for p in await sh.sys.ps():
        u = p.usage
        sh.out(f"{p.pid:>6} {p.ppid:>6} {p.uid:>5} {p.state:<8} {u.prompt_tokens:>7} "
               f"{u.completion_tokens:>7} {u.wall_seconds:>6.1f}s  {' '.join([p.app, *p.argv])[:60]}")


async def cmd_top(sh: Shell, args: list[str], line: str) -> None:
    from lmos.userland.shell.top import top

    await top(sh, args)


async def cmd_apps(sh: Shell, args: list[str], line: str) -> None:
    for a in (await sh.sys.call("app_list")).apps:
        sh.out(f"{a.name:<20} {a.description}")


async def cmd_models(sh: Shell, args: list[str], line: str) -> None:
    for m in (await sh.sys.call("model_list")).models:
        sh.out(f"{m.name:<12} {m.driver:<12} window {m.max_model_len} tokens, KV {m.free_blocks}/"
               f"{m.num_blocks} blocks free (x{m.block_size}), {m.runnable} runnable, "
               f"{m.tokens} tokens in {m.steps} steps")


async def cmd_mem(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "mem")
    if pid is not None:
        st = await sh.sys.call("mem_stat", pid=pid)
        sh.out(render_result(to_builtins(st)))


async def cmd_logs(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "logs")
    if pid is None:
        return
    for t in await sh.sys.trace(pid, 50):
        mark = "ok" if t.ok else f"{t.error or t.errno}"
        sh.out(f"{time.strftime('%H:%M:%S', time.localtime(t.ts))} {t.name:<14} {t.duration_us:>8}us  "
               f"{mark}")


async def cmd_chat(sh: Shell, args: list[str], line: str) -> None:
    # the tool-using assistant app: what the built-in model was trained for
    if args:
        await cmd_run(sh, ["assistant", " ".join(args)], line)
        return
    while True:
        text = await sh.term.read_line("you> ")
        if text is None or not text.strip():
            break
        await cmd_run(sh, ["assistant", text], line)


async def cmd_help(sh: Shell, args: list[str], line: str) -> None:
    from lmos.userland.shell.core import help_text

    sh.out(help_text())


async def cmd_exit(sh: Shell, args: list[str], line: str) -> None:
    sh.running = False
    if args and args[0].lstrip("-").isdigit():
        sh.status = int(args[0])


COMMANDS: dict[str, Command] = {"ps": cmd_ps, "top": cmd_top, "apps": cmd_apps, "models": cmd_models,
                                "mem": cmd_mem, "logs": cmd_logs, "chat": cmd_chat, "help": cmd_help,
                                "exit": cmd_exit}
