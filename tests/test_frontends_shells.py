"""Several front ends on one kernel, in real terminals (pexpect): two lmosh sessions each with its own
jobs, ``lmos run`` next to an open shell (Ctrl-C, a confirmation on the right terminal), and closing a
shell while another's job runs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pexpect
from frontends import LMOS, PROMPT, ctrl_d, kernel_pid, lmos, shell, spawn, stop_kernel

APP = ("name = 'scribe'\nversion = '1.0'\ndescription = 'overwrites a note'\ncapabilities = ['fs.read', "
       "'fs.write']\n[entry]\nkind = 'code'\nsource = 'main.py'\n")
MAIN = "fs_write(path='/note.txt', data='second')\nresult = 'written'\n"


def test_two_shells_one_kernel_each_with_its_own_jobs(tmp_path: Path) -> None:
    state = tmp_path / "s"
    a = b = None
    try:
        a = shell(state)
        kpid = kernel_pid(str(state))
        b = shell(state)
        assert kernel_pid(str(state)) == kpid  # the second shell attached to the first one's kernel
        a.sendline("run sleep 60 &")
        a.expect(r"\[1\] (\d+)")
        job_a = a.match.group(1)
        a.expect(PROMPT)
        b.sendline('jobs; run echo DO""NE')  # nothing of a's
        b.expect("DONE")
        assert f" {job_a} " not in b.before
        b.sendline("run sleep 60 &")
        b.expect(r"\[1\] (\d+)")  # its own job numbers
        job_b = b.match.group(1)
        b.expect(PROMPT)
        procs = {p["pid"]: p for p in json.loads(lmos(state, "ps", "--json").stdout)}
        assert procs[int(job_a)]["app"] == procs[int(job_b)]["app"] == "sleep"  # one kernel, both jobs
        assert procs[int(job_a)]["ppid"] != procs[int(job_b)]["ppid"]  # children of their own sessions

        # closing the first shell ends its own job, never the second's
        ctrl_d(a)
        a.close()
        procs = {p["pid"]: p for p in json.loads(lmos(state, "ps", "--json").stdout)}
        assert int(job_a) not in procs and procs[int(job_b)]["state"] == "blocked"
        assert kernel_pid(str(state)) == kpid
        b.sendline("jobs")
        b.expect(rf"\[1\]\s+{job_b}\s+\w+\s+sleep 60")
        b.expect(PROMPT)
        b.sendline(f"kill {job_b}")
        b.expect(PROMPT)
        ctrl_d(b)
    finally:
        for sh in (a, b):
            if sh is not None:
                sh.close(force=True)
        stop_kernel(state)


def test_lmos_run_next_to_a_shell_ctrl_c_and_confirmation(tmp_path: Path) -> None:
    state = tmp_path / "s"
    app = tmp_path / "scribe"
    app.mkdir()
    (app / "app.toml").write_text(APP)
    (app / "main.py").write_text(MAIN)
    sh = run = None
    try:
        sh = shell(state)
        r = lmos(state, "app", "install", str(app), "--grant")
        assert r.returncode == 0, r.stderr
        sh.sendline("write /note.txt first")
        sh.expect(PROMPT)

        # Ctrl-C in lmos run reaches its process; the shell next to it is untouched
        run = spawn(state, "run", "sleep", "60", entry=LMOS)
        time.sleep(1.5)
        deadline = time.monotonic() + 30
        while not any(p["app"] == "sleep" for p in json.loads(lmos(state, "ps", "--json").stdout)):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        run.sendintr()
        run.expect("EINTR")
        run.expect(pexpect.EOF)
        run.close()
        assert run.exitstatus != 0

        # the app's confirmation is asked on lmos run's terminal, not on the shell's
        run = spawn(state, "run", "scribe", entry=LMOS)
        run.expect(r'wants to overwrite "/note.txt".*Allow\? \[y/N\]')
        time.sleep(0.3)
        run.sendline("y")
        run.expect("written")
        run.expect(pexpect.EOF)
        run.close()
        assert run.exitstatus == 0
        sh.sendline("cat /note.txt")
        sh.expect("second")
        sh.expect(PROMPT)
        assert "Allow" not in sh.before
        ctrl_d(sh)
    finally:
        for p in (sh, run):
            if p is not None:
                p.close(force=True)
        stop_kernel(state)


def test_a_shell_whose_kernel_dies_says_so_and_the_next_front_end_starts_one(tmp_path: Path) -> None:
    state = tmp_path / "s"
    sh = None
    try:
        sh = shell(state)
        kpid = kernel_pid(str(state))
        assert kpid is not None
        os.kill(kpid, signal.SIGKILL)
        sh.expect("lmosh: EPIPE: the kernel stopped")
        sh.expect(pexpect.EOF)
        sh.close()
        assert sh.exitstatus == 1
        r = lmos(state, "run", "echo", "hi")  # no stale lock, no stale socket in the way
        assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
        assert kernel_pid(str(state)) != kpid
    finally:
        if sh is not None:
            sh.close(force=True)
        stop_kernel(state)
