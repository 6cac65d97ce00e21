"""Job control: run apps in the foreground or background, follow, signal and reap them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lmos.errors import Errno, SyscallError
from lmos.userland.shell.core import Done, Job
from lmos.userland.shell.render import describe, failure, render_result, to_json
from lmos.userland.shell.termsafe import Neutralizer

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
run APP [ARGS] [&]   run an app in the foreground (or in the background with &); its result follows
run --json APP ...   run an app and print only its result, as JSON
jobs | fg [N]        background jobs; bring job N (default: the latest) to the foreground
kill|stop|cont PID   send TERM (kill -9 PID: KILL), STOP or CONT (PID or %JOB)
wait [PID|%N]        wait for a process (default: every background job); show its status and result"""


async def cmd_run(sh: Shell, args: list[str], line: str) -> None:
    background = bool(args) and args[-1] == "&"
    if background:
        args = args[:-1]
    as_json = bool(args) and args[0] == "--json"
    if as_json:
        args = args[1:]
    if not args or (as_json and background):
        sh.err("usage: run [--json] APP [ARGS] [&]" if not args else "run: --json runs in the foreground")
        return
    if "/" in args[0]:  # an app folder (or its app.toml): load it for one run, asking for the grant
        from lmos.userland.shell.apps import load_path

        loaded = await load_path(sh, args[0])
        if loaded is None:
            return
        args = [loaded, *args[1:]]
    pid = await sh.sys.spawn(args[0], args[1:], stream=not (background or as_json))
    if background:
        job = Job(free_job_number(sh), pid, " ".join(args))
        sh.jobs[job.num] = job
        sh.out(f"[{job.num}] {pid}")
    else:
        await foreground(sh, pid, " ".join(args), as_json=as_json)
    await sh.refresh_names()


def free_job_number(sh: Shell) -> int:
    """The lowest job number no running job holds: numbers are reused once a job is done, as in bash."""
    num = 1
    while num in sh.jobs:
        num += 1
    return num


async def foreground(sh: Shell, pid: int, cmd: str, *, as_json: bool = False) -> Any:
    """Show a process's output until it ends, then what it returned that the stream did not show
    (only the result, as JSON, with ``as_json``).  Ctrl-C sends INT, a second one KILL.
    The output is neutralised as it streams (:mod:`.termsafe`).  Returns the wait reply."""
    streamed: list[str] = []
    safe = Neutralizer()
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
            if ev.kind in ("token", "output") and ev.text and not as_json:
                sh.term.write(safe.feed(ev.text))
                streamed.append(ev.text)
        if r.ended:
            break
    held = safe.flush()
    if held:
        sh.term.write(held)
    w = await sh.sys.wait(pid)
    text = "".join(streamed)
    if text and not text.endswith("\n"):
        sh.term.write("\n")
    if w.exit_status == 0:
        show_result(sh, w.result, text, as_json=as_json)
    else:
        sh.err(failure(cmd.split(" ", 1)[0], w))
        sh.status = w.exit_status if 0 < w.exit_status < 256 else 1
    return w


def show_result(sh: Shell, result: object, streamed: str = "", *, as_json: bool = False) -> None:
    if as_json:
        sh.show(to_json(result))
        return
    if result is None:
        return
    shown = render_result(result, streamed, width=sh.term.width, color=sh.term.color)
    if shown:
        sh.show(shown)


async def report_done(sh: Shell) -> None:
    """Before a prompt: say which background jobs have ended (their results stay for ``wait``)."""
    if not sh.jobs:
        return
    states = {p.pid: p.state for p in await sh.sys.ps()}
    for job in list(sh.jobs.values()):
        if states.get(job.pid) in ("exited", "killed", None):
            try:
                w = await sh.sys.wait(job.pid, timeout=5)
                sh.done[job.pid] = Done(job.pid, job.cmd, w, job.num)
                sh.out(f"[{job.num}] Done ({describe(w)})  {job.cmd}")
            except SyscallError:
                sh.out(f"[{job.num}] Done  {job.cmd}")
            del sh.jobs[job.num]


async def cmd_jobs(sh: Shell, args: list[str], line: str) -> None:
    states = {p.pid: p.state for p in await sh.sys.ps()}
    for job in sorted(sh.jobs.values(), key=lambda j: j.num):
        sh.out(f"[{job.num}] {job.pid:>6}  {states.get(job.pid, 'done'):<8} {job.cmd}")


async def cmd_fg(sh: Shell, args: list[str], line: str) -> None:
    if not sh.jobs:
        sh.err("fg: no current job")
        return
    # the current job is the latest started (numbers are reused, so not always the highest)
    num = int(args[0].lstrip("%")) if args and args[0].lstrip("%").isdigit() else list(sh.jobs)[-1]
    job = sh.jobs.pop(num, None)
    if job is None:
        sh.err(f"fg: no such job {num}")
        return
    sh.out(job.cmd)
    await sh.sys.kill(job.pid, "CONT")
    await foreground(sh, job.pid, job.cmd)


async def cmd_wait(sh: Shell, args: list[str], line: str) -> None:
    """``wait PID`` / ``wait %N``: that process; plain ``wait``: every background job, the ones the
    prompt already reported as Done first.  Each shows its status and result, once."""
    if args:
        pid = pid_arg(sh, args, "wait")
        if pid is None:
            return
        pids = [pid]
    else:
        pids = [*sh.done, *(job.pid for job in sh.jobs.values())]
        if not pids:
            sh.err("wait: no background jobs")
            return
    failed = 0
    for pid in pids:
        status = await wait_one(sh, pid)
        if status is None:  # Ctrl-C: stop waiting; the jobs go on
            sh.status = 130
            return
        failed = status or failed
    if failed:
        sh.status = failed


async def reap(sh: Shell, pid: int) -> Any:
    """``wait`` for ``pid`` in short steps, so that Ctrl-C ends the waiting (None), not the shell."""
    while True:
        if sh.term.take_interrupt():
            sh.out(f"^C (still running: {pid})")
            return None
        try:
            return await sh.sys.wait(pid, timeout=0.25)
        except SyscallError as exc:
            if exc.errno != Errno.ETIMEDOUT:
                raise


async def wait_one(sh: Shell, pid: int) -> int | None:
    """Reap ``pid`` (or take the reply the prompt kept), print how it ended and its result.
    Returns the exit status the shell should take (0 when it succeeded), None on Ctrl-C."""
    done = sh.done.pop(pid, None)
    cmd = done.cmd if done is not None else ""
    w = done.reply if done is not None and done.reply is not None else await reap(sh, pid)
    if w is None:
        return None
    for num, job in list(sh.jobs.items()):
        if job.pid == pid:
            cmd = job.cmd
            del sh.jobs[num]
    if w.exit_status == 0:
        shown = "" if w.result is None else render_result(w.result, width=sh.term.width,
                                                          color=sh.term.color)
        sep = "\n" if "\n" in shown else "  "
        sh.show(f"{pid}: {describe(w)}" + (sep + shown if shown else ""))
        return 0
    why = failure(cmd.split(" ", 1)[0], w) if cmd and w.state != "killed" else describe(w)
    sh.out(f"{pid}: exit {w.exit_status}: {why}" if why != describe(w) else f"{pid}: {why}")
    return w.exit_status if 0 < w.exit_status < 256 else 1


def pid_arg(sh: Shell, args: list[str], cmd: str) -> int | None:
    """The one PID (or ``%N`` job) in ``args``; None, having said why, if there is not exactly one."""
    words = [a for a in args if not a.startswith("-")]
    if len(words) != 1 or not words[0].lstrip("%").isdigit():
        sh.err(f"usage: {cmd} PID")
        return None
    w = words[0]
    if w.startswith("%"):
        num = int(w[1:])
        job = sh.jobs.get(num)
        if job is not None:
            return job.pid
        for done in sh.done.values():
            if done.num == num:
                return done.pid
        sh.err(f"{cmd}: no such job {w}")
        return None
    return int(w)


async def not_self(sh: Shell, pid: int | None, cmd: str) -> int | None:
    """``pid`` unless it is the shell's own process: killing or stopping that would leave the user
    with a dead or frozen terminal, so it is refused (``exit`` leaves the shell)."""
    if pid is not None and pid == await sh.own_pid():
        sh.err(f"{cmd}: {pid} is this shell (use exit to leave it)")
        return None
    return pid


async def cmd_kill(sh: Shell, args: list[str], line: str) -> None:
    sig = "KILL" if "-9" in args or "-KILL" in args else "TERM"
    pid = await not_self(sh, pid_arg(sh, args, "kill"), "kill")
    if pid is not None:
        await sh.sys.kill(pid, sig)


async def cmd_stop(sh: Shell, args: list[str], line: str) -> None:
    pid = await not_self(sh, pid_arg(sh, args, "stop"), "stop")
    if pid is not None:
        await sh.sys.kill(pid, "STOP")


async def cmd_cont(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "cont")
    if pid is not None:
        await sh.sys.kill(pid, "CONT")


COMMANDS: dict[str, Command] = {"run": cmd_run, "jobs": cmd_jobs, "fg": cmd_fg, "wait": cmd_wait,
                                "kill": cmd_kill, "stop": cmd_stop, "cont": cmd_cont}
