"""Job control: run apps in the foreground or background, follow, signal and reap them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lmos.errors import SyscallError
from lmos.userland.shell.core import Done, Job
from lmos.userland.shell.render import describe, render_result

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
run APP [ARGS] [&]   run an app in the foreground (or in the background with &)
jobs | fg [N]        background jobs; bring job N (default: the latest) to the foreground
kill|stop|cont PID   send TERM (kill -9 PID: KILL), STOP or CONT
wait PID             wait for a process and show its status"""


async def cmd_run(sh: Shell, args: list[str], line: str) -> None:
    background = bool(args) and args[-1] == "&"
    if background:
        args = args[:-1]
    if not args:
        sh.err("usage: run APP [ARGS] [&]")
        return
    pid = await sh.sys.spawn(args[0], args[1:], stream=not background)
    if background:
        job = Job(sh.next_job, pid, " ".join(args))
        sh.jobs[job.num] = job
        sh.next_job += 1
        sh.out(f"[{job.num}] {pid}")
    else:
        await foreground(sh, pid, " ".join(args))
    await sh.refresh_names()


async def foreground(sh: Shell, pid: int, cmd: str) -> None:
    """Show a process's output until it ends; Ctrl-C sends INT, a second one KILL."""
    printed = False
    last_int = 0.0
    while True:
        presses = sh.term.take_interrupt()
        if presses:
            now = time.monotonic()
            sig = "KILL" if presses > 1 or now - last_int < 1.5 else "INT"
            last_int = now
            try:
                await sh.sys.kill(pid, sig)
            except SyscallError:
                pass
            sh.out(f"^C (SIG{sig} to {pid})")
        r = await sh.sys.call("events", pid=pid, timeout=0.1)
        for ev in r.events:
            if ev.kind in ("token", "output") and ev.text:
                sh.term.write(ev.text)
                printed = True
        if r.ended:
            break
    w = await sh.sys.wait(pid)
    if printed:
        sh.term.write("\n")
    if not printed and w.result is not None and w.exit_status == 0:
        sh.out(render_result(w.result))
    if w.exit_status != 0:
        sh.err(f"{cmd}: {describe(w)}")
        sh.status = w.exit_status if 0 < w.exit_status < 256 else 1


async def report_done(sh: Shell) -> None:
    """Before a prompt: say which background jobs have ended (their results stay for ``wait``)."""
    if not sh.jobs:
        return
    states = {p.pid: p.state for p in await sh.sys.ps()}
    for job in list(sh.jobs.values()):
        if states.get(job.pid) in ("exited", "killed", None):
            try:
                w = await sh.sys.wait(job.pid, timeout=5)
                sh.done[job.pid] = Done(job.pid, job.cmd, w)
                sh.out(f"[{job.num}] Done ({describe(w)})  {job.cmd}")
            except SyscallError:
                sh.out(f"[{job.num}] Done  {job.cmd}")
            del sh.jobs[job.num]


async def cmd_jobs(sh: Shell, args: list[str], line: str) -> None:
    states = {p.pid: p.state for p in await sh.sys.ps()}
    for job in sh.jobs.values():
        sh.out(f"[{job.num}] {job.pid:>6}  {states.get(job.pid, 'done'):<8} {job.cmd}")


async def cmd_fg(sh: Shell, args: list[str], line: str) -> None:
    if not sh.jobs:
        sh.err("fg: no current job")
        return
    num = int(args[0].lstrip("%")) if args and args[0].lstrip("%").isdigit() else max(sh.jobs)
    job = sh.jobs.pop(num, None)
    if job is None:
        sh.err(f"fg: no such job {num}")
        return
    sh.out(job.cmd)
    await sh.sys.kill(job.pid, "CONT")
    await foreground(sh, job.pid, job.cmd)


async def cmd_wait(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "wait")
    if pid is None:
        return
    done = sh.done.pop(pid, None)
    w = done.reply if done is not None and done.reply is not None else await sh.sys.wait(pid)
    for num, job in list(sh.jobs.items()):
        if job.pid == pid:
            del sh.jobs[num]
    sh.out(f"{pid}: {describe(w)}" + (f"  {render_result(w.result)}" if w.result is not None else ""))


def pid_arg(sh: Shell, args: list[str], cmd: str) -> int | None:
    words = [a for a in args if not a.startswith("-")]
    if len(words) != 1 or not words[0].lstrip("%").isdigit():
        sh.err(f"usage: {cmd} PID")
        return None
    w = words[0]
    if w.startswith("%"):
        job = sh.jobs.get(int(w[1:]))
        if job is None:
            sh.err(f"{cmd}: no such job {w}")
            return None
        return job.pid
    return int(w)


async def cmd_kill(sh: Shell, args: list[str], line: str) -> None:
    sig = "KILL" if "-9" in args or "-KILL" in args else "TERM"
    pid = pid_arg(sh, args, "kill")
    if pid is not None:
        await sh.sys.kill(pid, sig)


async def cmd_stop(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "stop")
    if pid is not None:
        await sh.sys.kill(pid, "STOP")


async def cmd_cont(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "cont")
    if pid is not None:
        await sh.sys.kill(pid, "CONT")


COMMANDS: dict[str, Command] = {"run": cmd_run, "jobs": cmd_jobs, "fg": cmd_fg, "wait": cmd_wait,
                                "kill": cmd_kill, "stop": cmd_stop, "cont": cmd_cont}
