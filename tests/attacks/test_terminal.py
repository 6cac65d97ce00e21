"""Attack: an app writes to the user's terminal (issue 13 item 10).

Every path by which process text reaches a terminal is tried with the same
payload: OSC 52 (sets the clipboard), OSC 0 (the window title), CSI cursor
movement and line erase (overwrite what the shell printed), BEL, a C1 CSI
(``\\x9b``, a one-byte ESC [), and a bidi override.  The raw characters must
never reach the output; their escaped forms must, so the user sees that the
app tried; newlines and tabs survive; and the shell (or the next command)
goes on working.
"""

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
from kutil import kernel

from lmos.cli.terminal import LineTerminal
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.table import AppSpec
from lmos.userland.shell import shell_main
from lmos.userland.shell.termsafe import Neutralizer, json_safe, neutralize

OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"  # the clipboard becomes "rm -rf ~"
TITLE = "\x1b]0;pwned\x07"
CURSOR = "\x1b[2K\x1b[1A\x1b[2J\r"  # erase the line, go up, clear the screen, back to column 0
C1 = "\x9b31m\x9d0;t\x9c"  # CSI and OSC as single C1 characters
BIDI = "\u202egnp.exe"  # shows as "exe.png"
PAYLOAD = f"{OSC52}{TITLE}a\tb\n{CURSOR}{C1}{BIDI}\x7f\x00end"
ARGV = PAYLOAD.replace("\x00", "")  # as a command-line argument (which cannot hold a NUL)
RAW = ["\x1b", "\x07", "\x9b", "\x9d", "\x9c", "\u202e", "\x7f", "\x00"]
SHOWN = ["\\x1b]52;c;cm0gLXJmIH4K\\x07", "\\x1b]0;pwned\\x07", "\\x1b[2K\\x1b[1A", "\\x9b31m",
         "\\u202egnp.exe",
         "\\x0d"]

ENTRY = "from lmos.cli import shell_main; shell_main()"
LMOS = "from lmos.cli import main; main()"


def assert_neutral(text: str) -> None:
    leaked = [ch for ch in RAW if ch in text]
    assert not leaked, f"raw control characters reached the terminal: {leaked!r} in {text!r}"


def assert_shown(text: str) -> None:
    missing = [s for s in SHOWN if s not in text]
    assert not missing, f"not shown visibly: {missing} in {text!r}"


def test_neutralize_keeps_text_and_shows_controls() -> None:
    out = neutralize(PAYLOAD)
    assert_neutral(out)
    assert_shown(out)
    assert "a\tb\n" in out and out.endswith("\\x7f\\x00end")
    assert neutralize("line one\r\nline two\n") == "line one\nline two\n"
    assert neutralize("héllo — 日本 🙂 \\x1b") == "héllo — 日本 🙂 \\x1b"  # text and backslashes untouched
    assert neutralize("\ud800") == "\\ud800"  # a lone surrogate cannot even be encoded


def test_a_sequence_split_across_tokens_is_still_neutralised() -> None:
    for size in (1, 2, 3, 7):
        safe = Neutralizer()
        pieces = [PAYLOAD[i:i + size] for i in range(0, len(PAYLOAD), size)]
        out = "".join(safe.feed(p) for p in pieces) + safe.flush()
        assert out == neutralize(PAYLOAD), size
    safe = Neutralizer()
    assert safe.feed("ok\r") == "ok" and safe.feed("\nnext") == "\nnext"  # \r\n split across tokens
    assert safe.feed("x\r") == "x" and safe.flush() == "\\x0d"


def test_json_results_stay_valid_and_inert() -> None:
    doc = json_safe(json.dumps({"k": PAYLOAD}, ensure_ascii=False))
    assert_neutral(doc)
    assert json.loads(doc) == {"k": PAYLOAD}  # the same value, escaped in JSON's own way


class Captured(LineTerminal):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.out: list[str] = []

    def write(self, text: str) -> None:
        self.out.append(text)

    def write_err(self, text: str) -> None:
        self.out.append(text)


async def writer(sys: Any, argv: list[str]) -> Any:
    """An app that writes the payload in pieces (an escape split between writes), then returns it
    in a result: a string, table cells and keys, a field; with ``fail`` it fails with it instead."""
    for i in range(0, len(PAYLOAD), 3):
        await sys.call("write", text=PAYLOAD[i:i + 3])
    if argv == ["fail"]:
        raise SyscallError(Errno.EINVAL, PAYLOAD)
    return {"summary": PAYLOAD, "rows": [{"name": PAYLOAD, f"k{OSC52}": 1}, {"name": "x", f"k{OSC52}": 2}],
            "nested": {"deep": [PAYLOAD]}}


def shell_output(lines: list[str], driver: Any = None, files: dict[str, str] | None = None) -> str:
    term = Captured(lines)

    async def main(sys: Any, argv: list[str]) -> Any:
        return await shell_main(sys, argv, term, list(lines))

    async def go() -> None:
        async with kernel(driver) as k:
            for path, data in (files or {}).items():
                await k.syscall("fs_write", path=path, data=data)
            k.programs.register(AppSpec("writer", writer, frozenset()))
            k.programs.register(AppSpec("lmosh", main, frozenset({"*"})))
            w = await k.wait(await k.spawn("lmosh"))
            assert w.exit_status == 0, w.error

    anyio.run(go)
    return "".join(term.out)


def test_lmosh_neutralises_streams_results_errors_and_cat() -> None:
    out = shell_output(["run writer", "run writer fail", "run writer &", "wait %1", "run --json writer",
                        "cat /evil.txt", f"write /echoed.txt '{ARGV}'", "cat /echoed.txt",
                        "run generate hello",
                        "run echo after the attack"],
                       ScriptedDriver(PAYLOAD), files={"/evil.txt": PAYLOAD})
    assert_neutral(out)
    assert_shown(out)
    # stream, result, failure, wait, json, two cats, the model's stream
    assert out.count("\\x1b]52;c;cm0gLXJmIH4K\\x07") >= 9, out
    assert out.rstrip().endswith("after the attack")  # the shell went on


def test_lmosh_neutralises_in_a_real_terminal(tmp_path: Path) -> None:
    reply = ARGV  # the model's reply (argv cannot hold a NUL)
    argv = ["-c", ENTRY, "--model", f"scripted:{reply}", "--state-dir", str(tmp_path)]
    sh = pexpect.spawn(sys.executable, argv,
                       encoding="utf-8", timeout=30, dimensions=(40, 200),
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "xterm",
                            "PROMPT_TOOLKIT_NO_CPR": "1"})
    try:
        sh.expect("lmosh\\$")
        # the model streams the payload token by token (a byte each); the terminal is the user's, so its
        # own prompt codes are fine, but none of the app's sequences may arrive raw
        sh.sendline("run generate hello")
        sh.expect_exact("\\x1b]52;c;cm0gLXJmIH4K\\x07")
        sh.expect_exact("end")
        sh.expect("lmosh\\$")
        seen = sh.before
        sh.sendline("run echo still in charge")
        sh.expect("still in charge")
        sh.expect("lmosh\\$")
        seen += sh.before
        for raw in (OSC52, TITLE, "\x1b[2J", "\x9b", "\u202e"):
            assert raw not in seen
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LMOS, *args], capture_output=True, text=True, timeout=120,
                          errors="surrogateescape")


def test_lmos_run_neutralises_stream_result_and_error(tmp_path: Path) -> None:
    sd = ("--state-dir", str(tmp_path), "--model", f"scripted:{ARGV}")
    r = run_cli("run", "generate", *sd, "--", "hi")  # streamed, token by token
    assert r.returncode == 0, r.stderr
    assert_neutral(r.stdout)
    assert_shown(r.stdout)
    r = run_cli("run", "echo", ARGV, *sd)
    assert r.returncode == 0 and "\\x1b]0;pwned\\x07" in r.stdout
    assert_neutral(r.stdout)
    r = run_cli("run", "--json", "echo", ARGV, *sd)
    assert_neutral(r.stdout)
    assert json.loads(r.stdout) == ARGV
    r = run_cli("run", "sleep", ARGV, *sd)  # fails, quoting it
    assert r.returncode != 0
    assert_neutral(r.stderr)
    assert len(r.stderr.splitlines()) == 1, r.stderr


def test_a_code_app_printing_escapes_is_neutralised(tmp_path: Path) -> None:
    app = tmp_path / "painter"
    app.mkdir()
    (app / "app.toml").write_text("name = 'painter'\nversion = '1.0'\ndescription = 'paints'\n"
                                  "capabilities = []\n[entry]\nkind = 'code'\nsource = 'main.py'\n")
    (app / "main.py").write_text(
        f"print({OSC52!r}, end='')\nprint({TITLE!r} + 'x')\nprint({CURSOR!r} + {C1!r})\n"
        f"result = {{'title': {TITLE!r}, 'bidi': {BIDI!r}}}\n")
    state = str(tmp_path / "s")
    r = subprocess.run([sys.executable, "-c", ENTRY, "--model", "scripted", "--state-dir", state,
                        "-c", f"run {app}; run echo next"], capture_output=True, text=True, timeout=120)
    if "weak isolation" in r.stderr or "allow_weak_isolation" in r.stderr:
        pytest.skip(f"sandboxed code cannot run here: {r.stderr.strip()}")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert_neutral(out)
    for shown in ("\\x1b]52;c;cm0gLXJmIH4K\\x07", "\\x1b]0;pwned\\x07", "\\x9b31m", "\\u202egnp.exe"):
        assert shown in out, out
    assert re.search(r"^next$", r.stdout, re.M)


def test_shell_messages_quoting_process_data_are_neutralised() -> None:
    out = shell_output([f"kill '{ARGV}'", f"cat '/{OSC52}'", f"run '{TITLE}x'", f"mem '{CURSOR}'",
                        f"nosuch{BIDI}", "run echo ok"])
    assert_neutral(out)
    assert out.rstrip().endswith("ok")


def test_neutralising_is_cheap_for_long_streams() -> None:
    text = ("plain words and numbers 12345 " * 2000) + "\x1b[2J"
    start = time.perf_counter()
    for _ in range(50):
        neutralize(text)
    assert time.perf_counter() - start < 2.0


def test_lmos_cp_to_a_terminal_is_shown_safely_and_to_a_pipe_exactly(tmp_path: Path) -> None:
    sd = ("--state-dir", str(tmp_path))  # no kernel needed: the store is opened directly
    w = subprocess.run([sys.executable, "-c", LMOS, "write", "lmos:/evil.txt", *sd], input=PAYLOAD.encode(),
                       capture_output=True, timeout=120)
    assert w.returncode == 0, w.stderr
    piped = subprocess.run([sys.executable, "-c", LMOS, "cp", "lmos:/evil.txt", "-", *sd],
                           capture_output=True, timeout=120)
    assert piped.stdout == PAYLOAD.encode()  # a copy is a copy
    tty = pexpect.spawn(sys.executable, ["-c", LMOS, "cp", "lmos:/evil.txt", "-", *sd], timeout=60,
                        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "xterm"})
    tty.expect(pexpect.EOF)
    shown = tty.before.decode("utf-8", "replace")
    tty.close()
    assert_neutral(shown)
    assert "\\x1b]52;c;cm0gLXJmIH4K\\x07" in shown and shown.rstrip().endswith("end")
