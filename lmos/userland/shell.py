"""lmosh: the interactive shell, a userland program like sh.

The shell runs as an ordinary process and every command is a syscall (spawn,
ps, kill, wait, events, fs_*, mem_stat, trace ...), so whatever the shell can
do, an app with the same capabilities could do.  Terminal input and output come
from a :class:`Terminal` that the front end provides (prompt_toolkit for people,
a line list for ``-c`` and scripts).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lmos.errors import SyscallError

PROMPT = "lmosh$ "
COMMANDS = ("run", "jobs", "fg", "ps", "top", "kill", "stop", "cont", "wait", "apps", "models", "mem",
            "logs", "ls", "cat", "write", "chat", "help", "exit")
HELP = """\
run APP [ARGS] [&]   run an app in the foreground (or in the background with &)
jobs | fg [N]        background jobs; bring job N (default: the latest) to the foreground
ps | top [-n N]      the process table; a live view (Ctrl-C leaves it)
kill|stop|cont PID   send TERM (kill -9 PID: KILL), STOP or CONT
wait PID             wait for a process and show its status
apps | models        installed apps; loaded models
mem PID | logs PID   context memory of a process; its syscall trace
ls [DIR] | cat FILE | write FILE TEXT...   your files
chat [MESSAGE]       talk to the assistant app (empty line ends a chat)
help | exit          this text; leave (Ctrl-D works too)"""


class Terminal(Protocol):
    """What the shell needs from a terminal."""

    async def read_line(self, prompt: str) -> str | None:
        """A line of input; None at end of input (Ctrl-D)."""
        ...

    def write(self, text: str) -> None: ...

    def write_err(self, text: str) -> None:
        """Error output (stderr for a real terminal)."""
        ...

    def take_interrupt(self) -> int:
        """Ctrl-C presses since the last call (0 when none)."""
        ...

    def set_names(self, apps: list[str], pids: list[int]) -> None:
        """Words for tab completion."""
        ...


@dataclass
class Job:
    num: int
    pid: int
    cmd: str


class Shell:
    def __init__(self, sys: Any, term: Terminal) -> None:
        self.sys = sys
        self.term = term
        self.jobs: dict[int, Job] = {}
        self.next_job = 1
        self.status = 0
        self.running = True
        self.handlers: dict[str, Callable[[list[str], str], Awaitable[None]]] = {
            name: getattr(self, "cmd_" + name) for name in COMMANDS}

    def out(self, text: str = "") -> None:
        self.term.write(text + "\n")

    def err(self, text: str) -> None:
        self.term.write_err(f"lmosh: {text}\n")
        self.status = 1

    # -- main loop ------------------------------------------------------------
    async def run(self) -> int:
        await self.refresh_names()
        while self.running:
            await self.report_done()
            line = await self.term.read_line(PROMPT)
            if line is None:
                break
            self.term.take_interrupt()
            for part in split_commands(line):
                await self.execute(part)
                if not self.running:
                    break
        await self.shutdown()
        return self.status

    async def execute(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.err(f"syntax error: {exc}")
            return
        if not words:
            return
        name, args = words[0], words[1:]
        handler = self.handlers.get(name)
        if handler is None:
            self.err(f"{name}: command not found (try help)")
            return
        self.status = 0
        try:
            await handler(args, line)
        except SyscallError as exc:
            self.err(f"{name}: {exc.errno.name}: {exc.message}")

    async def refresh_names(self) -> None:
        try:
            apps = [a.name for a in (await self.sys.call("app_list")).apps]
            pids = [p.pid for p in await self.sys.ps()]
            self.term.set_names(apps, pids)
        except SyscallError:
            pass

    async def shutdown(self) -> None:
        """Ctrl-D / exit: end every job and reap it, so nothing is left running."""
        for job in list(self.jobs.values()):
            try:
                await self.sys.kill(job.pid, "KILL")
                await self.sys.wait(job.pid, timeout=10)
            except SyscallError:
                pass
        self.jobs.clear()

    async def report_done(self) -> None:
        if not self.jobs:
            return
        states = {p.pid: p.state for p in await self.sys.ps()}
        for job in list(self.jobs.values()):
            if states.get(job.pid) in ("exited", "killed", None):
                try:
                    w = await self.sys.wait(job.pid, timeout=5)
                    self.out(f"[{job.num}] Done ({describe(w)})  {job.cmd}")
                except SyscallError:
                    self.out(f"[{job.num}] Done  {job.cmd}")
                del self.jobs[job.num]

    # -- running programs -------------------------------------------------------
    async def cmd_run(self, args: list[str], line: str) -> None:
        background = bool(args) and args[-1] == "&"
        if background:
            args = args[:-1]
        if not args:
            self.err("usage: run APP [ARGS] [&]")
            return
        pid = await self.sys.spawn(args[0], args[1:], stream=not background)
        if background:
            job = Job(self.next_job, pid, " ".join(args))
            self.jobs[job.num] = job
            self.next_job += 1
            self.out(f"[{job.num}] {pid}")
        else:
            await self.foreground(pid, " ".join(args))
        await self.refresh_names()

    async def foreground(self, pid: int, cmd: str) -> None:
        """Show a process's output until it ends; Ctrl-C sends INT, a second one KILL."""
        printed = False
        last_int = 0.0
        while True:
            presses = self.term.take_interrupt()
            if presses:
                now = time.monotonic()
                sig = "KILL" if presses > 1 or now - last_int < 1.5 else "INT"
                last_int = now
                try:
                    await self.sys.kill(pid, sig)
                except SyscallError:
                    pass
                self.out(f"^C (SIG{sig} to {pid})")
            r = await self.sys.call("events", pid=pid, timeout=0.1)
            for ev in r.events:
                if ev.kind in ("token", "output") and ev.text:
                    self.term.write(ev.text)
                    printed = True
            if r.ended:
                break
        w = await self.sys.wait(pid)
        if printed:
            self.term.write("\n")
        if not printed and w.result is not None and w.exit_status == 0:
            self.out(render_result(w.result))
        if w.exit_status != 0:
            self.err(f"{cmd}: {describe(w)}")
            self.status = w.exit_status if 0 < w.exit_status < 256 else 1

    async def cmd_jobs(self, args: list[str], line: str) -> None:
        states = {p.pid: p.state for p in await self.sys.ps()}
        for job in self.jobs.values():
            self.out(f"[{job.num}] {job.pid:>6}  {states.get(job.pid, 'done'):<8} {job.cmd}")

    async def cmd_fg(self, args: list[str], line: str) -> None:
        if not self.jobs:
            self.err("fg: no current job")
            return
        num = int(args[0].lstrip("%")) if args and args[0].lstrip("%").isdigit() else max(self.jobs)
        job = self.jobs.pop(num, None)
        if job is None:
            self.err(f"fg: no such job {num}")
            return
        self.out(job.cmd)
        await self.sys.kill(job.pid, "CONT")
        await self.foreground(job.pid, job.cmd)

    async def cmd_wait(self, args: list[str], line: str) -> None:
        pid = self.pid_arg(args, "wait")
        if pid is None:
            return
        w = await self.sys.wait(pid)
        for num, job in list(self.jobs.items()):
            if job.pid == pid:
                del self.jobs[num]
        self.out(f"{pid}: {describe(w)}" + (f"  {render_result(w.result)}" if w.result is not None else ""))

    # -- process control ----------------------------------------------------------
    def pid_arg(self, args: list[str], cmd: str) -> int | None:
        words = [a for a in args if not a.startswith("-")]
        if len(words) != 1 or not words[0].lstrip("%").isdigit():
            self.err(f"usage: {cmd} PID")
            return None
        w = words[0]
        if w.startswith("%"):
            job = self.jobs.get(int(w[1:]))
            if job is None:
                self.err(f"{cmd}: no such job {w}")
                return None
            return job.pid
        return int(w)

    async def cmd_kill(self, args: list[str], line: str) -> None:
        sig = "KILL" if "-9" in args or "-KILL" in args else "TERM"
        pid = self.pid_arg(args, "kill")
        if pid is not None:
            await self.sys.kill(pid, sig)

    async def cmd_stop(self, args: list[str], line: str) -> None:
        pid = self.pid_arg(args, "stop")
        if pid is not None:
            await self.sys.kill(pid, "STOP")

    async def cmd_cont(self, args: list[str], line: str) -> None:
        pid = self.pid_arg(args, "cont")
        if pid is not None:
            await self.sys.kill(pid, "CONT")

    async def cmd_ps(self, args: list[str], line: str) -> None:
        self.out(f"{'PID':>6} {'PPID':>6} {'UID':>5} {'STATE':<8} {'PROMPT':>7} {'GEN':>7} {'WALL':>7}  APP")
        for p in await self.sys.ps():
            u = p.usage
            self.out(f"{p.pid:>6} {p.ppid:>6} {p.uid:>5} {p.state:<8} {u.prompt_tokens:>7} "
                     f"{u.completion_tokens:>7} {u.wall_seconds:>6.1f}s  {' '.join([p.app, *p.argv])[:60]}")

    async def cmd_top(self, args: list[str], line: str) -> None:
        from lmos.userland.top import top

        await top(self, args)

    # -- information ----------------------------------------------------------------
    async def cmd_apps(self, args: list[str], line: str) -> None:
        for a in (await self.sys.call("app_list")).apps:
            self.out(f"{a.name:<20} {a.description}")

    async def cmd_models(self, args: list[str], line: str) -> None:
        for m in (await self.sys.call("model_list")).models:
            self.out(f"{m.name:<12} {m.driver:<12} window {m.max_model_len} tokens, KV {m.free_blocks}/"
                     f"{m.num_blocks} blocks free (x{m.block_size}), {m.runnable} runnable, "
                     f"{m.tokens} tokens in {m.steps} steps")

    async def cmd_mem(self, args: list[str], line: str) -> None:
        pid = self.pid_arg(args, "mem")
        if pid is not None:
            st = await self.sys.call("mem_stat", pid=pid)
            self.out(render_result(to_builtins(st)))

    async def cmd_logs(self, args: list[str], line: str) -> None:
        pid = self.pid_arg(args, "logs")
        if pid is None:
            return
        for t in await self.sys.trace(pid, 50):
            mark = "ok" if t.ok else f"{t.error or t.errno}"
            self.out(f"{time.strftime('%H:%M:%S', time.localtime(t.ts))} {t.name:<14} {t.duration_us:>8}us  "
                     f"{mark}")

    async def cmd_ls(self, args: list[str], line: str) -> None:
        r = await self.sys.call("fs_list", path=args[0] if args else "/")
        for e in to_builtins(r).get("entries", []):
            name = e.get("name", "?") if isinstance(e, dict) else str(e)
            kind = e.get("kind", "") if isinstance(e, dict) else ""
            self.out(name + ("/" if kind == "dir" else ""))

    async def cmd_cat(self, args: list[str], line: str) -> None:
        if len(args) != 1:
            self.err("usage: cat FILE")
            return
        r = to_builtins(await self.sys.call("fs_read", path=args[0]))
        self.out(str(r.get("data", r.get("text", ""))).rstrip("\n"))

    async def cmd_write(self, args: list[str], line: str) -> None:
        if len(args) < 2:
            self.err("usage: write FILE TEXT...")
            return
        await self.sys.call("fs_write", path=args[0], data=" ".join(args[1:]) + "\n")

    async def cmd_chat(self, args: list[str], line: str) -> None:
        # the tool-using assistant app: what the built-in model was trained for
        if args:
            await self.cmd_run(["assistant", " ".join(args)], line)
            return
        while True:
            text = await self.term.read_line("you> ")
            if text is None or not text.strip():
                break
            await self.cmd_run(["assistant", text], line)

    async def cmd_help(self, args: list[str], line: str) -> None:
        self.out(HELP)

    async def cmd_exit(self, args: list[str], line: str) -> None:
        self.running = False
        if args and args[0].lstrip("-").isdigit():
            self.status = int(args[0])


def split_commands(line: str) -> list[str]:
    """Split on ``;`` outside quotes."""
    parts: list[str] = []
    cur: list[str] = []
    quote = ""
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def describe(w: Any) -> str:
    if w.state == "killed":
        return f"killed (status {w.exit_status})"
    if w.exit_status:
        return f"exit {w.exit_status}" + (f": {w.error}" if w.error else "")
    return "exit 0"


def to_builtins(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)


def render_result(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return str(value["text"])
    return json.dumps(value, ensure_ascii=False)


async def shell_main(sys: Any, argv: list[str], term: Terminal, script: list[str] | None = None) -> int:
    """The lmosh program: interactive on ``term``, or the ``script`` lines then exit."""
    sh = Shell(sys, term)
    if script is None:
        return await sh.run()
    for line in script:
        for part in split_commands(line):
            await sh.execute(part)
            if not sh.running:
                break
        if not sh.running:
            break
    if sh.running:  # a script's background jobs finish before the shell does
        for job in list(sh.jobs.values()):
            try:
                await sys.wait(job.pid)
            except SyscallError:
                pass
    await sh.report_done()
    await sh.shutdown()
    return sh.status
