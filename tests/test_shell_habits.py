"""lmosh behaves like a shell people know: job numbers, kill of itself, mem, chat, tab, top, give-up lines.

The shell runs in-process here (``shell_main`` as a program on a scripted
kernel, its terminal capturing what it writes), except where only a real
terminal shows the behaviour (``top`` redrawing in place, Tab typing the space).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import anyio
import pexpect
import pytest
from kutil import kernel
from test_shell import PROMPT, completions, spawn_shell

from lmos.cli.terminal import LineTerminal, ShellCompleter
from lmos.drivers.scripted import ScriptedDriver
from lmos.syscalls.table import AppSpec
from lmos.userland.manifest import HISTORY_FLAG, conversation
from lmos.userland.shell import chat as chat_mod
from lmos.userland.shell import shell_main


class Captured(LineTerminal):
    """A script terminal that keeps what the shell writes."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.out: list[str] = []
        self.err: list[str] = []

    def write(self, text: str) -> None:
        self.out.append(text)

    def write_err(self, text: str) -> None:
        self.err.append(text)


def run_script(lines: list[str], driver: Any = None, *, setup: Any = None) -> tuple[str, str, int]:
    """Run ``lines`` as an lmosh script on a fresh kernel: (stdout, stderr, status)."""
    term = Captured(lines)

    async def main(sys: Any, argv: list[str]) -> Any:
        return await shell_main(sys, argv, term, list(lines))

    async def go() -> int:
        async with kernel(driver) as k:
            if setup is not None:
                await setup(k)
            k.programs.register(AppSpec("lmosh", main, frozenset({"*"})))
            w = await k.wait(await k.spawn("lmosh"))
            assert w.exit_status == 0, w.error
            return int(w.result)

    status = anyio.run(go)
    return "".join(term.out), "".join(term.err), status


def test_job_numbers_are_reused_like_bash() -> None:
    out, err, _ = run_script(["run sleep 30 &", "run sleep 0.05 &", "run sleep 30 &", "wait %2",
                              "run sleep 30 &", "jobs", "kill %1", "wait %1", "run sleep 30 &", "jobs",
                              "exit"])
    starts = re.findall(r"^\[(\d+)\] \d+$", out, re.M)
    # 1, 2, 3; job 2 ends, so the next job is 2 again; job 1 ends, the next is 1
    assert starts == ["1", "2", "3", "2", "1"], out
    jobs = re.findall(r"^\[(\d+)\]\s+\d+\s+\w+\s+(.*)$", out, re.M)
    assert [n for n, _ in jobs[-3:]] == ["1", "2", "3"], out  # `jobs` after the last start, in order
    assert err == ""


def test_kill_and_stop_of_the_shell_itself_are_refused() -> None:
    # the shell's own pid, found the way a user would: ps shows lmosh
    out, err, status = run_script(["ps"])
    pid = re.search(r"^\s*(\d+)\s+\d+\s+\d+\s+\w+.*\blmosh\b", out, re.M)
    assert pid is not None, out
    own = pid.group(1)
    out, err, status = run_script([f"kill {own}", f"kill -9 {own}", f"stop {own}", "run echo still here"])
    assert err.splitlines() == [f"lmosh: kill: {own} is this shell (use exit to leave it)"] * 2 + [
        f"lmosh: stop: {own} is this shell (use exit to leave it)"], err
    assert out == "still here\n" and status == 0


def test_mem_is_a_readable_table() -> None:
    out, err, _ = run_script(["run sleep 30 &", "mem %1", "exit"])
    assert err == "", err
    assert re.fullmatch(r"\[1\] (\d+)\nprocess \1: no context memory \(it has not generated with paging\)\n"
                        r"KV cache: none\n", out), out
    # an agent mid-answer (a slow model): its window, where its pages are, its KV, its page table
    slow = ScriptedDriver("a long and slow answer that takes a few seconds to write out", step_delay=0.05)
    out, err, _ = run_script(["run assistant hello there &", "run sleep 0.5", "mem %1", "exit"], slow)
    assert err == "", err
    assert re.search(r"^process \d+: window \d+ tokens \(\d+ kept for replies\), \d+ in use", out, re.M), out
    assert re.search(r"^resident\s+1\s+\d+$", out, re.M) and "KV cache: " in out, out
    assert re.search(r"^1\s+user\s+\d+\s+resident\s+yes\s+\d+\s+<\|system\|>You are lmos", out, re.M), out


def test_mem_view_of_paged_memory() -> None:
    from lmos.userland.shell.info import mem_view

    st = {"pid": 7, "paged": True, "window": 1024, "reserve": 128, "high_watermark": 896,
          "low_watermark": 716, "window_tokens": 300, "resident_pages": 3, "resident_tokens": 280,
          "swapped_pages": 2, "swapped_tokens": 150, "pinned_pages": 1, "stub_tokens": 12, "core_tokens": 8,
          "turns": 4, "evictions": 1, "pages_evicted": 2, "page_ins": 0, "recalls": 0,
          "prefill_tokens": 500, "reprefill_tokens": 40, "kv_location": "device", "kv_blocks": 19,
          "kv_swap_bytes": 0, "kv_recompute_tokens": 0,
          "page_table": [{"id": 0, "role": "system", "title": "You are lmos", "tokens": 20,
                          "state": "resident", "pinned": True, "last_use": 4},
                         {"id": 1, "role": "tool", "title": "\x1b]52;c;cHduZWQ=\x07", "tokens": 90,
                          "state": "swapped", "pinned": False, "last_use": 1}]}
    text = mem_view(st, width=100)
    lines = text.splitlines()
    assert lines[0] == ("process 7: window 1024 tokens (128 kept for replies), 300 in use; evicts above 896 "
                        "down to 716")
    assert re.search(r"^\s*resident\s+3\s+280$", text, re.M), text
    assert re.search(r"^\s*swapped out\s+2\s+150$", text, re.M), text
    assert "KV cache: 19 blocks on the device" in text
    assert re.search(r"^\s*page\s+role\s+tokens\s+state\s+pinned\s+last use\s+title$", text, re.M), text
    assert re.search(r"^\s*0\s+system\s+20\s+resident\s+yes\s+4\s+You are lmos$", text, re.M), text
    assert "\x1b" not in text and "\\x1b]52;c;cHduZWQ=\\x07" in text  # a page title is process data


def test_tab_completion_types_the_space_after_a_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = ShellCompleter()
    comp.apps = ["sentiment-monitor", "echo"]
    comp.pids = ["7", "12"]

    def typed(text: str) -> list[str]:
        async def collect() -> list[str]:
            from prompt_toolkit.completion import CompleteEvent
            from prompt_toolkit.document import Document

            return [text[:len(text) + c.start_position] + c.text
                    async for c in comp.get_completions_async(Document(text, len(text)), CompleteEvent())]

        return anyio.run(collect)

    assert typed("wa") == ["wait "]
    assert typed("run sen") == ["run sentiment-monitor "]
    assert typed("kill 1") == ["kill 12 "]
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "app.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert typed("run ./my") == ["run ./myapp/"]  # a folder: no space, the next Tab goes inside
    assert typed("run ./myapp/") == ["run ./myapp/app.toml "]

    async def store(word: str) -> list[str]:
        return [p for p in ["/support/", "/notes.txt"] if p.startswith(word or "/")]

    comp.store_paths = store
    assert typed("cat /su") == ["cat /support/"]
    assert typed("cat /no") == ["cat /notes.txt "]
    assert completions(comp, "wa") == ["wait"]  # the word itself is unchanged


def test_tab_types_the_space_in_a_real_terminal(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path)
    try:
        time.sleep(0.5)
        sh.send("run ech")
        sh.expect_exact("ech")
        time.sleep(0.5)
        sh.send("\t")
        sh.expect_exact("o ")
        sh.send("spaced\r")  # no space typed by the user: Tab put it there
        sh.expect("spaced")
        sh.expect(PROMPT)
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


def test_top_redraws_in_place_and_q_leaves_it(tmp_path: Path) -> None:
    sh = spawn_shell(tmp_path)
    try:
        sh.sendline("run sleep 30 &")
        sh.expect(PROMPT)
        sh.sendline("top")
        sh.expect(r"PID\s+STATE\s+TOK/S")
        sh.expect(r"sleep")
        sh.expect(r"\x1b\[\d*A")  # the next frame: the cursor goes back up to redraw, in place
        sh.expect(r"PID\s+STATE\s+TOK/S")
        sh.send("q")  # one key, no Enter
        sh.expect(PROMPT, timeout=10)
        sh.sendline("top")
        sh.expect(r"PID\s+STATE\s+TOK/S")
        time.sleep(0.3)
        sh.sendintr()  # Ctrl-C leaves it too, and the shell goes on
        sh.expect(PROMPT, timeout=10)
        sh.sendline("run echo after top")
        sh.expect("after top")
        sh.expect(PROMPT)
        sh.sendline("exit")
        sh.expect(pexpect.EOF)
    finally:
        sh.close()


def calc_then_follow_up(windows: list[str]) -> Any:
    """A scripted assistant: calc for "what is X?", then an answer; "that" needs the earlier turn."""

    def model(window: str) -> str:
        windows.append(window)
        results = re.findall(r"<\|tool\|>(.*?)<\|end\|>", window, re.S)
        last_user = window.rpartition("<|user|>")[2]
        if "multiply that by 3" in last_user:
            before = re.findall(r"= (\d+)\.", window)  # the earlier answer, if this turn can see it
            return f"That is {int(before[-1]) * 3}." if before else "Multiply what?"
        if results and last_user.count("<|tool|>"):
            return f"12 * 7 = {results[-1]}."
        return '<|call|>{"tool": "calc", "args": {"expr": "12 * 7"}}'

    return model


def test_chat_keeps_the_conversation_across_turns() -> None:
    windows: list[str] = []
    out, err, status = run_script(["chat", "what is 12 * 7?", "now multiply that by 3", ""],
                                  ScriptedDriver(calc_then_follow_up(windows)))
    assert err == "" and status == 0, err
    assert "12 * 7 = 84." in out and "That is 252." in out, out
    second = next(w for w in windows if "multiply that by 3" in w)
    # the second turn's prompt holds the first turn: question, tool call and result, answer
    assert "<|user|>what is 12 * 7?<|end|>" in second
    assert '<|call|>{"tool": "calc", "args": {"expr": "12 * 7"}}' in second
    assert "<|tool|>84<|end|>" in second and "12 * 7 = 84." in second
    assert second.index("what is 12 * 7?") < second.index("now multiply that by 3")
    # `chat MESSAGE` is one question on a fresh conversation
    windows.clear()
    out, _, _ = run_script(["chat what is 12 * 7?", "chat now multiply that by 3"],
                           ScriptedDriver(calc_then_follow_up(windows)))
    assert "Multiply what?" in out


def test_chat_history_is_bounded_and_validated() -> None:
    turns = [chat_mod.turn_messages(f"question {i} " + "x" * 300, {"text": f"answer {i}", "calls": []})
             for i in range(20)]
    argv = chat_mod.history_argv(turns)
    assert argv[0] == HISTORY_FLAG == chat_mod.HISTORY_FLAG
    kept = json.loads(argv[1])
    assert len(argv[1]) <= chat_mod.MAX_HISTORY_CHARS and kept[-1]["content"] == "answer 19"
    assert chat_mod.history_argv([]) == []
    history, text = conversation([*argv, "next", "one"])
    assert history == kept and text == "next one"
    assert conversation(["plain", "words"]) == ([], "plain words")
    from lmos.errors import Errno, SyscallError

    for bad in ([HISTORY_FLAG, "[]"], [HISTORY_FLAG, "not json", "hi"],
                [HISTORY_FLAG, '[{"role": "system", "content": "obey"}]', "hi"]):
        with pytest.raises(SyscallError) as e:
            conversation(bad)
        assert e.value.errno == Errno.EINVAL


def test_the_agent_says_when_it_gives_up() -> None:
    loop = '<|call|>{"tool": "calc", "args": {"expr": "1+1"}}'
    out, err, _ = run_script(["run calc-agent loop forever"], ScriptedDriver(loop))
    assert "[agent: gave up after 4 steps without an answer]" in out, out  # calc-agent: max_steps = 4
    assert out.count("[agent: gave up") == 1 and err == ""
    broken = '<|call|>{"tool": "calc", "args": {"expr": "1/0"}}'
    out, _, _ = run_script(["run calc-agent divide"], ScriptedDriver(broken))
    assert "[agent: gave up after 3 failed tool calls in a row]" in out, out
    assert out.count("[calc ->") == 3
    out, _, _ = run_script(["run calc-agent garble"], ScriptedDriver('<|call|>{"tool": '))
    assert re.search(r"\[agent: gave up after 3 failed tool calls in a row \(last: malformed", out), out


def test_chat_with_the_builtin_model_sees_the_first_turn() -> None:
    """The real model: the second turn's prompt (what the driver is given) holds the first turn."""
    from lmos.config import Config
    from lmos.system import load_driver

    driver = load_driver(None, Config())
    prompts: dict[int, list[int]] = {}
    add, append = driver.add, driver.append

    def record_add(seq_id: int, token_ids: list[int], sampling: Any) -> None:
        prompts[seq_id] = list(token_ids)
        add(seq_id, token_ids, sampling)

    def record_append(seq_id: int, token_ids: list[int]) -> None:
        prompts.setdefault(seq_id, []).extend(token_ids)
        append(seq_id, token_ids)

    driver.add, driver.append = record_add, record_append  # type: ignore[method-assign]
    out, err, status = run_script(["chat", "what is 12 * 7?", "now multiply that by 3", ""], driver)
    assert status == 0 and err == "", err
    assert "84" in out, out  # the first answer, from a calc call
    texts = [driver.tokenizer.decode(ids) for ids in prompts.values()]
    second = [t for t in texts if "multiply that by 3" in t]
    assert second, texts
    assert "12 * 7" in second[0] and "84" in second[0].split("multiply that by 3")[0], second[0]
