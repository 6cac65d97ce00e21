"""Pinned pages given at spawn (``spawn(pin=[...])``, syscalls/mem.py spawn_pins): the child's paged
context starts with them; pages that do not fit the model's window are refused at spawn (ENOSPC),
before any process exists; a crash before the child's first step does not lose them.
The remote driver's case (the server's window) is in test_remote_faults.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from kutil import kernel

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.table import AppSpec

pytestmark = pytest.mark.anyio
PIN = "RULES: answer in French."


def _driver(window: int) -> ScriptedDriver:
    """Its reply says whether the pinned text is in the window it generates from."""
    return ScriptedDriver(lambda text: "pinned" if PIN in text else "bare", max_model_len=window)


async def paged_turn(sys: Sys, argv: list[str]) -> Any:
    if argv:
        await sys.sleep(float(argv[0]))
    r = await sys.llm_generate(" hello", page=True, max_tokens=8)
    st = await sys.call("mem_stat", pages=True)
    return [r.text, [[pg.role, pg.pinned] for pg in st.page_table]]


def _booted(window: int, **cfg: Any) -> lmos.Kernel:
    k = kernel(_driver(window), **cfg)
    k.programs.register(AppSpec("t.turn", paged_turn, frozenset({"llm", "mem"})))
    return k


async def test_pinned_pages_start_the_childs_context() -> None:
    async with _booted(256) as k:
        w = await k.wait(await k.spawn("t.turn", pin=[PIN, "second pinned page"]))
        assert w.exit_status == 0, w.error
        text, table = w.result
        assert text == "pinned"
        assert table[:2] == [["system", True], ["system", True]]  # first, pinned, then the turn's pages
        assert [pinned for _, pinned in table[2:]] == [False] * (len(table) - 2)
        w = await k.wait(await k.spawn("t.turn"))  # without: nothing pinned, the model never sees it
        assert w.result[0] == "bare"


async def test_pinned_pages_that_do_not_fit_are_refused_at_spawn() -> None:
    async with _booted(64) as k:  # 64 tokens, 8 kept for generating: 56 for pinned pages
        before = len(await k.ps())
        for pin in (["x" * 57], ["x" * 30, "y" * 27]):
            with pytest.raises(SyscallError) as e:
                await k.spawn("t.turn", pin=pin)
            assert e.value.errno is Errno.ENOSPC and "do not fit" in e.value.message
        assert len(await k.ps()) == before  # no process was made
        assert not k.core.memory.mems
        w = await k.wait(await k.spawn("t.turn", pin=["x" * 30, "y" * 26]))  # 56 fit: spawned...
        assert w.errno == Errno.ENOSPC  # ...but its turn's prompt does not fit beside them
        w = await k.wait(await k.spawn("t.turn", pin=["x" * 30, "y" * 18]))
        assert w.exit_status == 0, w.error


async def test_pinned_pages_survive_a_crash_before_the_childs_first_step(tmp_path: Path) -> None:
    pin = [PIN + " Then more rules, sentence after sentence." * 3]  # longer than a page (32 tokens)
    async with _booted(256, state_dir=str(tmp_path / "ref")) as k:
        want = (await k.wait(await k.spawn("t.turn", pin=pin))).result
    assert want[0] == "pinned" and len([r for r in want[1] if r == ["system", True]]) > 1
    async with _booted(256, state_dir=str(tmp_path / "a")) as k:
        pid = await k.spawn("t.turn", ["0.5"], pin=pin)
        b = tmp_path / "b"  # what a kill -9 now would leave (the child is in its sleep)
        b.mkdir()
        src, dst = sqlite3.connect(tmp_path / "a" / "lmos.db"), sqlite3.connect(b / "lmos.db")
        src.backup(dst)
        src.close()
        dst.close()
        await k.kill_and_reap(pid)
    async with _booted(256, state_dir=str(tmp_path / "b")) as k:
        with anyio.fail_after(20):
            w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result == want  # the same pages: none lost, none twice
