"""lmosh and lmos driven as a person would: in a real terminal (pexpect), and by exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pexpect
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from lmos.cli.terminal import ShellCompleter

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
        # PID PPID UID STATE GEN APP
        assert r.returncode == 0 and re.search(rf"{pid}\s+\d+\s+\d+\s+blocked\s+0\s+sleep", r.stdout), r
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
        sh.expect(r'wants to overwrite "/notes.txt".*Allow\? \[y/N\]')
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
                "run generate --max-tokens 3 hello &; run sleep 0.3 &; top -n 1; apps; models; mem %2; "
                "kill %2", entry=ENTRY)
    out = r.stdout
    assert re.search(r"PID\s+STATE\s+TOK/S\s+GEN\s+KV\s+PAGES\s+APP", out), out
    assert re.search(r"\d+\s+\w+\s+[\d.]+\s+\d+\s+\S+\s+\S+\s+sleep", out), out
    assert "assistant" in out and "calc-agent" in out and "team" in out
    assert re.search(r"default\s+scripted\s+window \d+ tokens", out)
    # mem: a readable table, not JSON
    assert re.search(r"^process \d+: no context memory .*\nKV cache: none$", out, re.M), out


HEADS = ["Acme beats estimates", "Bank shares plunge"]


def test_results_after_the_stream_wait_after_done_and_failures(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path, model="scripted:neutral")
    try:
        # sentiment-monitor streams its labels, then returns records: they follow as a table
        sh.sendline(f"run sentiment-monitor '{HEADS[0]}' '{HEADS[1]}'")
        sh.expect("neutralneutral")
        sh.expect(r"headline.*label")  # the header (bold on a terminal)
        sh.expect(r"Acme beats estimates\s+neutral")
        sh.expect(r"Bank shares plunge\s+neutral")
        sh.expect(r"alerts: \(none\)")
        sh.expect(PROMPT)

        # an agent-free app whose result is what it streamed: not repeated
        sh.sendline("run echo said once")
        sh.expect(r"said once\r\n")
        sh.expect(PROMPT)
        assert "said once" not in sh.before

        # a background job's result can be read after the prompt reported it Done
        sh.sendline(f"run sentiment-monitor '{HEADS[1]}' &")
        sh.expect(r"\[1\] (\d+)")
        pid = sh.match.group(1)
        sh.expect(PROMPT)
        time.sleep(1.0)
        sh.sendline("")
        sh.expect(r"\[1\] Done \(exit 0\)\s+sentiment-monitor")
        sh.expect(PROMPT)
        sh.sendline("wait %1")
        sh.expect(rf"{pid}: exit 0\r\n")
        sh.expect(r"Bank shares plunge\s+neutral")
        sh.expect(PROMPT)
        sh.sendline(f"wait {pid}")  # read once, like a reaped process
        sh.expect(r"lmosh: wait: ECHILD")
        sh.expect(PROMPT)
        sh.sendline("run sleep 0.1 &; run sleep 0.2 &; wait")  # plain wait: every job
        sh.expect(r"(\d+): exit 0  0\.1\r\n")
        sh.expect(r"(\d+): exit 0  0\.2\r\n")
        sh.expect(PROMPT)

        # a failing app: its name, the errno and the reason
        sh.sendline("run support how long is shipping?")
        sh.expect(r"lmosh: support: ENOENT: [^\r\n]*/support/faq\.md")
        sh.expect(PROMPT)
        sh.sendline("run --json echo a b")
        sh.expect(r'"a b"')
        sh.expect(PROMPT)

        # Ctrl-C ends the waiting, not the job or the shell
        sh.sendline("run sleep 30 &; wait")
        sh.expect(r"\[\d+\] (\d+)")
        pid = sh.match.group(1)
        time.sleep(0.5)
        sh.sendintr()
        sh.expect(rf"\^C \(still running: {pid}\)")
        sh.expect(PROMPT)
        sh.sendline("jobs")
        sh.expect(rf"{pid}\s+blocked\s+sleep 30")
        sh.expect(PROMPT)
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


def test_lmos_run_prints_the_result_and_json_for_scripts(tmp_path: Path) -> None:
    common = ("--model", "scripted:neutral", "--state-dir", str(tmp_path))
    r = run_cli("run", "--json", "sentiment-monitor", *HEADS, *common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"labels": [{"headline": h, "label": "neutral"} for h in HEADS],
                                    "alerts": []}  # tokens are not streamed in this mode
    r = run_cli("run", "sentiment-monitor", *HEADS, *common)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "neutralneutral" and lines[1] == "labels"  # the stream, then the result
    assert lines[2].split() == ["headline", "label"] and "\x1b" not in r.stdout  # no colour in a pipe
    assert re.match(r"Acme beats estimates\s+neutral$", lines[4]) and lines[-1] == "alerts: (none)"
    r = run_cli("run", "echo", "once", *common)
    assert r.stdout == "once\n"  # what was streamed is not repeated
    r = run_cli("run", "--json", "sleep", "0.01", *common)
    assert (r.returncode, json.loads(r.stdout)) == (0, 0.01)
    r = run_cli("run", "support", "how", "long?", *common)
    assert r.returncode == 1 and r.stdout == ""
    assert re.fullmatch(r"lmos: support: ENOENT: [^\n]*/support/faq\.md[^\n]*\n", r.stderr), r.stderr
    r = run_cli("run", "--json", "support", "how?", *common)
    assert r.returncode == 1 and r.stdout == "" and r.stderr.startswith("lmos: support: ENOENT: ")
    r = run_cli("run", "generate", "--max-tokens", "3", "hello", *common)
    assert r.returncode == 2 and "lmos run APP -- --option VALUE" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("run", "generate", *common, "--", "--max-tokens", "3", "hello")  # app flags after --
    assert (r.returncode, r.stdout) == (0, "neu\n"), r.stderr  # the scripted model's reply, cut at 3


def test_help_lists_every_command_and_bad_input_never_ends_the_shell(tmp_path: Path) -> None:
    from lmos.userland.shell.core import command_table, help_text

    text = help_text()
    missing = [c for c in command_table() if not re.search(rf"(^|[\s|]){re.escape(c)}\b", text, re.M)]
    assert not missing, missing
    r = run_cli("--model", "scripted", "--state-dir", str(tmp_path), "-c",
                "bogus; run 'open quote; top -n x; run; run --json; fg; wait; mem 1 2", entry=ENTRY)
    assert "Traceback" not in r.stderr and r.returncode == 1
    r = run_cli("--model", "scripted", "--state-dir", str(tmp_path), "-c",
                "top -n x; run --json x &; wait; wait %7; kill %9; mem 1 2; cat /nope; run echo alive",
                entry=ENTRY)
    errors = r.stderr.splitlines()
    assert errors[:-1] == ["lmosh: usage: top [-n N]", "lmosh: run: --json runs in the foreground",
                           "lmosh: wait: no background jobs", "lmosh: wait: no such job %7",
                           "lmosh: kill: no such job %9", "lmosh: usage: mem PID"], r.stderr
    assert re.fullmatch(r"lmosh: cat: ENOENT: no such file[^:]*: /nope", errors[-1]), r.stderr
    assert r.stdout == "alive\n" and r.returncode == 0  # the shell went on; the last command's status


def completions(comp: ShellCompleter, text: str) -> list[str]:
    """The word under the cursor as each completion would leave it (less the space Tab types after it)."""
    async def collect() -> list[str]:
        doc = Document(text, len(text))
        done = [text[:len(text) + c.start_position] + c.text
                async for c in comp.get_completions_async(doc, CompleteEvent())]
        return [d.rstrip(" ").rpartition(" ")[2] for d in done]

    return anyio.run(collect)


def test_tab_completion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = ShellCompleter()
    comp.apps = ["sentiment-monitor", "support", "echo"]
    comp.pids = ["7", "12"]
    assert {"run", "wait", "help"} <= set(completions(comp, ""))
    assert completions(comp, "wa") == ["wait"]
    assert completions(comp, "run s") == ["sentiment-monitor", "support"]
    assert completions(comp, "run --json e") == ["echo"]
    assert completions(comp, "run ") == ["--json", "sentiment-monitor", "support", "echo"]
    assert completions(comp, "kill 1") == ["12"]
    assert completions(comp, "ps; wait ") == ["7", "12"]  # after a ;, a new command
    assert completions(comp, "run echo ") == []  # an app's own arguments: nothing to guess
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "app.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert completions(comp, "run ./my") == ["./myapp/"]  # a host folder holding an app
    assert completions(comp, "run ./myapp/") == ["./myapp/app.toml"]

    async def store(word: str) -> list[str]:
        return [p for p in ["/support/", "/notes.txt"] if p.startswith(word or "/")]

    comp.store_paths = store
    assert completions(comp, "cat /su") == ["/support/"]
    assert completions(comp, "ls ") == ["/support/", "/notes.txt"]
    assert completions(comp, "get -r /su") == ["/support/"]  # options do not count as arguments
    assert completions(comp, "get -r /support ./my") == ["./myapp/"]  # get's second argument: the host
    assert completions(comp, "put ./myapp/app.toml /n") == ["/notes.txt"]
    assert completions(comp, "install --force ./my") == ["./myapp/"]
    assert completions(comp, "uninstall su") == ["support"]
    assert completions(comp, "ps; run --json su") == ["support"]
    assert completions(comp, "run echo s") == []
    assert completions(comp, "run echo ./my") == []  # an app's arguments are its own
    assert completions(comp, "cat -") == []


def test_the_shell_lists_store_paths_for_completion() -> None:
    from kutil import kernel

    from lmos.cli.terminal import LineTerminal
    from lmos.syscalls.table import AppSpec
    from lmos.userland.shell import Shell

    async def main(sys: Any, argv: list[str]) -> Any:
        sh = Shell(sys, LineTerminal([]))
        return {w: await sh.store_paths(w) for w in ["", "/sup", "/support/f", "no", "/nope/x"]}

    async def go() -> Any:
        async with kernel() as k:
            await k.syscall("fs_write", path="/support/faq.md", data="Q? A.\n")
            await k.syscall("fs_write", path="/notes.txt", data="n\n")
            k.programs.register(AppSpec("paths", main, frozenset({"*"})))
            w = await k.wait(await k.spawn("paths"))
            assert w.exit_status == 0, w.error
            return w.result

    got = anyio.run(go)
    assert got == {"": ["/notes.txt", "/support/"], "/sup": ["/support/"], "/support/f": ["/support/faq.md"],
                   "no": ["/notes.txt"], "/nope/x": []}


def test_an_agent_answer_is_shown_once_then_what_was_not_streamed(tmp_path: Path) -> None:
    answer = "Refunds take five days."
    r = run_cli("--model", f"scripted:{answer}", "--state-dir", str(tmp_path), "-c",
                "write /support/faq.md How long do refunds take? Refunds take 5 business days.; "
                "run support how long do refunds take; run chat hi; run chat hello &; wait %1", entry=ENTRY)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    faq = "/support/faq.md: How long do refunds take? Refunds take 5 business days."
    assert lines[:2] == [answer, f"sources: {faq}"], r.stdout  # support's answer, then its sources
    assert lines[2] == answer  # chat streamed its answer, and there is nothing more to say
    assert re.fullmatch(r"\[1\] \d+", lines[3])
    assert re.fullmatch(r"\d+: exit 0  " + re.escape(answer), lines[4])  # not streamed: wait shows it
    assert len(lines) == 5, r.stdout


def test_an_agent_record_shows_a_flag_only_when_it_is_on() -> None:
    from lmos.userland.shell.render import render_result
    rec = {"text": "Ask a colleague.", "handoff": False, "sources": "faq.md", "calls": [], "steps": 1,
           "finish_reason": "answer"}
    assert render_result(rec) == "Ask a colleague.\nsources: faq.md"
    assert render_result({**rec, "handoff": True}) == "Ask a colleague.\nhandoff: true\nsources: faq.md"
    assert render_result({"ok": False}) == '{\n  "ok": false\n}'  # not an agent record: shown as it is


def test_tab_completes_in_a_real_terminal(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path, model="scripted:neutral")
    try:
        sh.sendline("write /support/faq.md hello from the faq")
        sh.expect(PROMPT)
        time.sleep(0.5)  # prompt_toolkit in raw mode before typing
        sh.send("cat /sup")
        sh.expect_exact("/sup")
        time.sleep(0.5)
        sh.send("\t")  # the file store, through a syscall
        sh.expect_exact("port/")
        time.sleep(0.5)
        sh.send("\t")
        sh.expect_exact("faq.md")
        sh.send("\r")
        sh.expect("hello from the faq")
        sh.expect(PROMPT)
        time.sleep(0.5)
        sh.send("run sentiment-m")
        sh.expect_exact("sentiment-m")
        time.sleep(0.5)
        sh.send("\t")
        sh.expect_exact("onitor")
        sh.send(" 'Oil falls'\r")
        sh.expect(r"Oil falls\s+neutral")
        sh.expect(PROMPT)
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()
