"""lmosh and lmos driven as a person would: in a real terminal (pexpect), and by exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

PROMPT = "lmosh\\$"
ENTRY = "from lmos.cli import shell_main; shell_main()"
LMOS = "from lmos.cli import main; main()"


def spawn_shell(tmp_path: Path, model: str = "scripted") -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-c", ENTRY, "--model", model, "--state-dir", str(tmp_path)],
                          encoding="utf-8", timeout=30, dimensions=(40, 200),
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "xterm",
                               "PROMPT_TOOLKIT_NO_CPR": "1"})
    child.expect(PROMPT)
    return child


def ctrl_d(sh: pexpect.spawn) -> None:
    """Press Ctrl-D at the prompt.  On a loaded machine the prompt text can appear before
    prompt_toolkit switches the terminal to raw mode, and a ^D typed then is lost: retry."""
    for _ in range(5):
        time.sleep(0.3)
        sh.sendeof()
        if sh.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=8) == 0:
            return
    raise AssertionError("lmosh did not exit on Ctrl-D")


def test_interactive_session(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path)
    try:
        sh.sendline("run echo hello from a process")
        sh.expect("hello from a process")
        sh.expect(PROMPT)

        sh.sendline("run generate --max-tokens 5 abcdefgh")
        sh.expect("abcde")
        sh.expect(PROMPT)

        sh.sendline("run sleep 30 &")
        sh.expect(r"\[1\] (\d+)")
        bg = int(sh.match.group(1))
        sh.expect(PROMPT)
        sh.sendline("jobs")
        sh.expect(rf"\[1\]\s+{bg}\s+\w+\s+sleep 30")
        sh.expect(PROMPT)
        sh.sendline("ps")
        sh.expect(rf"{bg}\s+\d+\s+\d+\s+blocked")
        sh.expect(PROMPT)
        sh.sendline(f"kill {bg}")
        sh.expect(PROMPT)
        sh.sendline("")  # the next prompt reports the finished job
        sh.expect(r"\[1\] Done \(killed \(status -15\)\)\s+sleep 30")
        sh.expect(PROMPT)

        sh.sendline("bogus")
        sh.expect("lmosh: bogus: command not found")
        sh.expect(PROMPT)

        # Ctrl-C interrupts the foreground process, not the shell
        sh.sendline("run sleep 60")
        sh.expect_exact("sleep 60")  # the echoed command line
        time.sleep(0.5)
        sh.sendintr()
        sh.expect(r"\^C \(SIGINT to \d+\)")
        sh.expect("EINTR")
        sh.expect(PROMPT)
        sh.sendline("run echo still alive")
        sh.expect("still alive")
        sh.expect(PROMPT)

        sh.sendline("run sleep 30 &")
        sh.expect(PROMPT)
        ctrl_d(sh)  # clean exit, background job reaped
    finally:
        sh.close()
    assert sh.exitstatus == 0, sh.before


def test_stop_cont_wait_and_logs(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path)
    try:
        sh.sendline("run sleep 0.5 &")
        sh.expect(r"\[1\] (\d+)")
        pid = sh.match.group(1)
        sh.expect(PROMPT)
        sh.sendline(f"stop {pid}; ps")
        sh.expect(rf"{pid}\s+\d+\s+\d+\s+stopped")
        sh.expect(PROMPT)
        sh.sendline(f"cont {pid}; wait {pid}")
        sh.expect(rf"{pid}: exit 0")
        sh.expect(PROMPT)
        sh.sendline("run sleep 0.01 &")
        sh.expect(r"\[\d+\] (\d+)")
        other = sh.match.group(1)
        sh.expect(PROMPT)
        sh.sendline(f"wait {other}; logs {other}")
        sh.expect(r"sleep\s+\d+us\s+ok")  # the process's own syscall trace
        sh.expect(PROMPT)
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


def run_cli(*args: str, stdin: str | None = None, entry: str = LMOS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", entry, *args], capture_output=True, text=True, timeout=120,
                          input=stdin)


def test_non_interactive_and_exit_codes(tmp_path: Path) -> None:
    sd = str(tmp_path)
    r = run_cli("--model", "scripted", "--state-dir", sd, "-c", "run echo one; run echo two", entry=ENTRY)
    assert r.returncode == 0 and r.stdout.split() == ["one", "two"], r
    r = run_cli("--model", "scripted", "--state-dir", sd, stdin="run echo piped\n", entry=ENTRY)
    assert r.returncode == 0 and "piped" in r.stdout
    script = tmp_path / "s.lsh"
    script.write_text("run echo from-file\nrun nosuchapp\n")
    r = run_cli("--model", "scripted", "--state-dir", sd, str(script), entry=ENTRY)
    assert "from-file" in r.stdout and r.returncode == 1
    assert r.stderr.strip().splitlines() == ["lmosh: run: ENOENT: no such app: nosuchapp"]

    r = run_cli("run", "echo", "hi", "--model", "scripted", "--state-dir", sd)
    assert (r.returncode, r.stdout.strip()) == (0, "hi")
    r = run_cli("run", "sleep", "x", "--model", "scripted", "--state-dir", sd)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "EINVAL" in r.stderr
    r = run_cli("run", "nope", "--model", "scripted", "--state-dir", sd)
    assert (r.returncode, r.stderr) == (1, "lmos: ENOENT: no such app: nope\n")
    r = run_cli("run", "echo", "--model", str(tmp_path / "missing"), "--state-dir", sd)
    assert r.returncode == 1 and r.stderr.startswith("lmos: ENOENT: no model directory")
    assert "Traceback" not in r.stderr
    r = run_cli("frobnicate")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "frobnicate" in r.stderr
    r = run_cli("run", "--bogus-flag", "x")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("ps", "--state-dir", str(tmp_path / "nokernel"))
    assert r.returncode == 1 and "no kernel is running" in r.stderr
    r = run_cli("version")
    assert r.returncode == 0 and re.match(r"lmos \d+\.\d+", r.stdout)


def test_lmos_ps_and_kill_reach_a_running_kernel(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path)
    try:
        sh.sendline("run sleep 60 &")
        sh.expect(r"\[1\] (\d+)")
        pid = sh.match.group(1)
        sh.expect(PROMPT)
        r = run_cli("ps", "--state-dir", str(tmp_path))
        assert r.returncode == 0 and re.search(rf"{pid}\s+\d+\s+blocked\s+0\s+sleep", r.stdout), r
        r = run_cli("kill", pid, "--signal", "KILL", "--state-dir", str(tmp_path))
        assert r.returncode == 0, r
        r = run_cli("kill", "99999", "--state-dir", str(tmp_path))
        assert (r.returncode, r.stderr.strip()) == (1, "lmos: ESRCH: no such process 99999")
        sh.sendline("jobs")
        sh.expect(r"\[1\] Done \(killed \(status -9\)\)")
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


@pytest.mark.parametrize(("cmd", "err"), [("cat /nope.txt", "lmosh: cat: ENOENT"),
                                          ("mem 99999", "lmosh: mem: ESRCH"),
                                          ("kill abc", "lmosh: usage: kill PID")])
def test_commands_fail_with_one_line(tmp_path: Path, cmd: str, err: str) -> None:
    r = run_cli("--model", "scripted", "--state-dir", str(tmp_path), "-c", cmd, entry=ENTRY)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(err), r.stderr


def test_confirmation_is_asked_inline(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path)
    try:
        sh.sendline("write /notes.txt first")
        sh.expect(PROMPT)
        sh.sendline("write /notes.txt second")  # an overwrite: irreversible, so it asks
        sh.expect(r"wants to overwrite /notes.txt\. Allow\? \[y/N\]")
        sh.sendline("n")
        sh.expect("ECANCELED")
        sh.expect(PROMPT)
        sh.sendline("cat /notes.txt")
        sh.expect("first")
        sh.expect(PROMPT)
        sh.sendline("write /notes.txt second")
        sh.expect(r"Allow\? \[y/N\]")
        sh.sendline("y")
        sh.expect(PROMPT)
        sh.sendline("cat /notes.txt")
        sh.expect("second")
        sh.expect(PROMPT)
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


def test_builtin_model_answers_a_calc_question_with_a_tool_call(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path, model="builtin")
    try:
        sh.sendline("run calc-agent what is 12 * 7?")
        sh.expect_exact('<|call|>{"tool": "calc", "args": {"expr": "12 * 7"}}')
        sh.expect("84")
        sh.expect(PROMPT)
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


def test_top_apps_models_mem(tmp_path: Path) -> None:
    r = run_cli("--model", "scripted", "--state-dir", str(tmp_path), "-c",
                "run generate --max-tokens 3 hello &; run sleep 0.3 &; top -n 1; apps; models; mem 1; "
                "kill %2", entry=ENTRY)
    out = r.stdout
    assert re.search(r"PID\s+STATE\s+TOK/S\s+GEN\s+KV\s+PAGES\s+APP", out), out
    assert re.search(r"\d+\s+\w+\s+[\d.]+\s+\d+\s+\S+\s+\S+\s+sleep", out), out
    assert "assistant" in out and "calc-agent" in out and "team" in out
    assert re.search(r"default\s+scripted\s+window \d+ tokens", out)
    assert '"pid": 1' in out or '"pid":1' in out  # mem_stat of init, as JSON
