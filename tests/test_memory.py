"""Virtual context memory through the syscalls, on the scripted driver (byte tokens)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from kutil import Recorder, kernel

from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.kernel.pages import PageState
from lmos.kernel.pagestore import PageStore
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio

WINDOW = 1536
CAPS = ["llm", "mem"]
FACT = "The access code of the north vault is 7351."
FILLER = ["The weather report mentioned light rain over the harbour district.",
          "Several trains were delayed because of maintenance on the bridge.",
          "A new bakery opened near the library and sells rye bread.",
          "The committee postponed its meeting about the park benches.",
          "Cyclists asked for wider lanes along the river promenade."]


def answer_from_window(window: str) -> str:
    """Answer the last question from what is in the window, as a model with that context would."""
    last = window.rsplit("user:", 1)[-1]
    if "?" not in last:
        return "noted."
    m = re.search(r"access code of the north vault is (\d+)", window)
    return f"The code is {m.group(1)}." if m else "I do not know."


def filler_turn(i: int) -> str:
    return f"user: note {i}. " + " ".join(FILLER[(i + j) % len(FILLER)] for j in range(2)) + "\nassistant: "


async def test_fact_paged_out_then_recalled_in_a_conversation_ten_windows_long() -> None:
    drv = ScriptedDriver(answer_from_window, max_model_len=WINDOW)
    async with kernel(drv) as k:
        async def app(sys: Sys, argv: list[str]) -> Any:
            await sys.mem_append("system: You are a helpful assistant.\n", role="system", pin=True)
            await sys.llm_generate(f"user: remember this. {FACT}\nassistant: ", page=True, max_tokens=40)
            total = 0
            i = 0
            while total < 10 * WINDOW:
                r = await sys.llm_generate(filler_turn(i), page=True, max_tokens=40)
                total += r.prompt_tokens + r.completion_tokens
                i += 1
            before = await sys.mem_stat(pages=True)
            fact_page = next(p for p in before.page_table if "north vault" in p.title or p.id == 2)
            window_before = sys_window(k, sys.pid)
            r = await sys.llm_generate("user: what is the access code of the north vault?\nassistant: ",
                                       page=True, max_tokens=40)
            after = await sys.mem_stat(pages=True)
            return [fact_page.state, window_before, r.text, before.evictions, before.turns,
                    after.recalls, before.page_table[0].state]

        pid = await k.spawn(app, caps=CAPS)
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        state, window_before, text, evictions, turns, recalls, sys_state = w.result
        assert state == "swapped" and "north vault" not in window_before.split("[paged out")[0]
        assert "7351" not in window_before  # the fact really was out of the window...
        assert "[paged out: " in window_before and "mem_recall" in window_before
        assert text == "The code is 7351."  # ...and came back by automatic recall
        assert recalls >= 1
        assert sys_state == "resident"  # the pinned system prompt never left
        assert 1 <= evictions <= turns // 2  # watermarks: eviction is rare


def sys_window(k: Any, pid: int) -> str:
    m = k.core.memory.peek(pid)
    return str(m.window_text())


async def test_without_recall_the_fact_is_unknown_and_explicit_recall_pages_in_at_the_end() -> None:
    drv = Recorder(answer_from_window, max_model_len=WINDOW)
    async with kernel(drv) as k:
        async def app(sys: Sys, argv: list[str]) -> Any:
            await sys.mem_ctl(auto_recall=False)
            await sys.llm_generate(f"user: {FACT}\nassistant: ", page=True, max_tokens=40)
            for i in range(40):
                await sys.llm_generate(filler_turn(i), page=True, max_tokens=40)
            ev = (await sys.mem_stat()).evictions
            while (await sys.mem_stat()).evictions == ev:  # stop just after an eviction: room to recall
                i += 1
                await sys.llm_generate(filler_turn(i), page=True, max_tokens=40)
            q = "user: what is the access code of the north vault?\nassistant: "
            miss = await sys.llm_generate(q, page=True, max_tokens=40)
            length = drv.length(sys.pid)
            rec = await sys.mem_recall("north vault access code", k=1)
            kept_prefix = drv.tokens(sys.pid)[:length] == k.core.memory.peek(sys.pid).window_tokens()[:length]
            hit = await sys.llm_generate(q, page=True, max_tokens=40)
            stat = await sys.mem_stat(pages=True)
            assert stat.evictions == ev + 1
            return [miss.text, [h.id for h in rec.hits], rec.paged_in, kept_prefix, hit.text,
                    [p.id for p in stat.page_table][-4:]]

        pid = await k.spawn(app, caps=CAPS)
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        miss, hits, paged_in, kept_prefix, hit, tail = w.result
        assert miss == "I do not know."
        assert hits == [1] and paged_in == [1]
        assert kept_prefix  # recall appended at the end: the old window is still a prefix
        assert hit == "The code is 7351."
        assert tail[-3] == 1  # the recalled page sits after the conversation so far (then question, reply)


async def test_unchanged_prefix_is_not_recomputed() -> None:
    drv = Recorder("ok.", max_model_len=WINDOW)
    async with kernel(drv) as k:
        async def app(sys: Sys, argv: list[str]) -> Any:
            out = []
            for i in range(30):
                before = len(drv.log)
                st0 = await sys.mem_stat()
                r = await sys.llm_generate(filler_turn(i), page=True, max_tokens=10)
                st1 = await sys.mem_stat()
                computed = sum(n for step in drv.log[before:] for s, n in step if s == sys.pid)
                out.append([r.prompt_tokens, r.completion_tokens, computed, st1.evictions - st0.evictions,
                            st1.reprefill_tokens - st0.reprefill_tokens])
            return out

        pid = await k.spawn(app, caps=CAPS)
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        quiet = [t for t in w.result[1:] if t[3] == 0]
        evicting = [t for t in w.result[1:] if t[3] > 0]
        assert quiet and evicting
        for prompt, completion, computed, _, re_pre in quiet:
            # the new prompt, the previous reply's last token (sampled, not yet computed), and the
            # reply's own decode steps: nothing of the old window
            assert computed <= prompt + completion + 1 and re_pre == 0
        assert all(t[4] > 0 for t in evicting)


async def test_pinned_pages_core_memory_and_stubs() -> None:
    drv = ScriptedDriver("ok.", max_model_len=WINDOW)
    async with kernel(drv) as k:
        async def app(sys: Sys, argv: list[str]) -> Any:
            await sys.llm_generate("system: obey the rules.\n", page=True, pin=True, role="system",
                                   max_tokens=4)
            await sys.mem_write("user_name", "Ada")
            for i in range(60):
                await sys.llm_generate(filler_turn(i), page=True, max_tokens=10)
            st = await sys.mem_stat(pages=True)
            return [msgspec_builtins(st), await sys.mem_read(), sys_window(k, sys.pid)]

        pid = await k.spawn(app, caps=CAPS)
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        st, core, window = w.result
        table = st["page_table"]
        assert table[0]["pinned"] and table[0]["state"] == "resident"
        assert core == {"user_name": "Ada"}
        assert window.startswith("[core memory]\nuser_name: Ada\n[/core memory]\nsystem: obey the rules.")
        swapped = [p["id"] for p in table if p["state"] == "swapped"]
        assert swapped and st["swapped_pages"] == len(swapped)
        stubs = re.findall(r"\[paged out: (\d+) pages p(\d+)\.\.p(\d+)|\[paged out: p(\d+) ", window)
        assert stubs
        named = set()
        for _, a, b, single in stubs:
            named |= {int(single)} if single else {int(a), int(b)}
        assert min(swapped) in named and all(i in swapped for i in named)
        assert st["window_tokens"] <= st["window"] and st["stub_tokens"] > 0
        assert st["kv_location"] == "device" and st["kv_blocks"] >= st["window_tokens"] // 16  # driver cost()


def msgspec_builtins(x: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(x)


async def test_bad_requests_get_clear_errors() -> None:
    async with kernel(ScriptedDriver("ok.", max_model_len=WINDOW)) as k:
        async def app(sys: Sys, argv: list[str]) -> Any:
            errs = []
            for call, args in [("mem_page_in", {"page_ids": [99]}),
                               ("mem_write", {"name": "bad name", "value": "x"}),
                               ("mem_ctl", {"policy": "random"}), ("mem_ctl", {"reserve": 10_000}),
                               ("llm_generate", {"prompt": "x", "page": True, "reset": True}),
                               ("mem_read", {"name": "missing"}),
                               ("mem_append", {"text": "x" * 700, "pin": True}),
                               ("mem_append", {"text": "y" * 700, "pin": True})]:
                try:
                    await sys.call(call, **args)
                    errs.append("ok")
                except SyscallError as e:
                    errs.append(e.errno.name)
            st = await sys.mem_stat()
            return [*errs, st.window_tokens, st.resident_pages]  # the refused page left nothing behind

        pid = await k.spawn(app, caps=CAPS)
        w = await k.wait(pid)
        assert w.result == ["ENOENT", "EINVAL", "EINVAL", "EINVAL", "EINVAL", "ENOENT", "ok", "ENOSPC",
                            700, 4]

        async def nocap(sys: Sys, argv: list[str]) -> Any:
            try:
                await sys.mem_read()
            except SyscallError as e:
                return e.errno == Errno.EPERM
            return False

        pid = await k.spawn(nocap, caps=["llm"])
        assert (await k.wait(pid)).result is True


async def test_plain_processes_keep_append_only_behaviour() -> None:
    async with kernel(ScriptedDriver(max_model_len=WINDOW)) as k:
        r = await k.complete("hello", max_tokens=20)
        assert r.text == "hello"
        assert k.core is not None and not k.core.memory.mems


async def test_pages_read_back_exactly_after_restart(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    snapshot: dict[str, Any] = {}
    # keep_ended_pages: the pages outlive the process (else they are deleted when it ends)
    async with kernel(ScriptedDriver("fine, thanks.", max_model_len=WINDOW), state_dir=state,
                      keep_ended_pages=True) as k:
        async def app(sys: Sys, argv: list[str]) -> Any:
            await sys.mem_append("system: be brief.\n", role="system", pin=True)
            await sys.mem_write("goal", "write the report")
            for i in range(25):
                await sys.llm_generate(filler_turn(i), page=True, max_tokens=20)
            await sys.mem_recall("bakery rye bread", k=1)
            m = k.core.memory.peek(sys.pid)
            resident = {p.id: (p.text, list(p.tokens)) for p in m.resident()}
            pages = PageStore(k.core.journal).load(sys.pid)
            assert {p.id: (p.text, p.tokens) for p in pages if p.id in resident} == resident
            assert [p.id for p in pages] == [r[0] for r in await m.page_table()]
            snapshot["pages"] = [(p.id, p.pos, p.role, p.title, p.text, p.tokens, p.state, p.pinned,
                                  p.last_use) for p in pages]
            snapshot["core"] = dict(m.core)
            return sys.pid

        pid = await k.spawn(app, caps=CAPS)
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
    assert any(p[6] is PageState.SWAPPED for p in snapshot["pages"])
    async with kernel(ScriptedDriver(max_model_len=WINDOW), state_dir=state, keep_ended_pages=True) as k2:
        assert k2.core is not None
        store = PageStore(k2.core.journal)
        back = [(p.id, p.pos, p.role, p.title, p.text, p.tokens, p.state, p.pinned, p.last_use)
                for p in store.load(pid)]
        assert back == snapshot["pages"]
        assert store.load_core(pid) == snapshot["core"]
        assert store.load(pid + 1) == []
        r = await k2.complete("x", max_tokens=2)
        assert r.pid > pid  # pids never repeat, so stored pages cannot be confused
