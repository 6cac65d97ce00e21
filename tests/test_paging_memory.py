"""Paging frees memory: swapped pages live in the store only, and come back exactly.

Also: the on-disk recall index ranks as rank_bm25's BM25Okapi did in RAM, the
pages of an ended process are deleted (unless kept), and the per-uid store
quota stays equal to what the database holds through eviction, page-in and
deletion.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.drivers.scripted import ByteTokenizer, ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.kernel.journal import Journal
from lmos.kernel.memory import ContextMemory
from lmos.kernel.pages import Page, PageState, SwapRun
from lmos.kernel.pagestore import PageStore
from lmos.kernel.quota import StoreQuota
from lmos.kernel.recall import rank, words
from lmos.syscalls.client import Sys

WINDOW = 600
VOCAB = ["harbour", "vault", "code", "river", "bread", "train", "north", "meeting", "lantern", "copper",
         "signal", "market", "pine", "glass", "salt", "mill", "ferry", "orchard", "42", "7351"]


def turn(rng: random.Random, i: int) -> str:
    return f"turn {i}: " + " ".join(rng.choice(VOCAB) for _ in range(rng.randrange(4, 14))) + ".\n"


async def converse(m: ContextMemory, tok: ByteTokenizer, turns: int, seed: int = 0) -> dict[int, list[int]]:
    """``turns`` appended messages; returns every page's tokens as created."""
    rng = random.Random(seed)
    made: dict[int, list[int]] = {}
    for i in range(turns):
        for p in await m.append(tok.encode(turn(rng, i)), "user", False):
            made[p.id] = list(p.tokens)
    return made


def test_eviction_drops_pages_from_ram_and_page_in_reads_them_back_exactly() -> None:
    async def run() -> None:
        journal = Journal.open(":memory:")
        tok = ByteTokenizer()
        m = ContextMemory(3, tok, WINDOW, PageStore(journal))
        m.configure(auto_recall=False)
        try:
            system = await m.append(tok.encode("system: rules\n"), "system", True)
            made = {p.id: list(p.tokens) for p in system}
            made |= await converse(m, tok, 4)
            assert m.stats.evictions == 0
            before_tokens, before_bytes = m.held()
            made |= await converse(m, tok, 400, seed=1)  # ~30 windows of history
            assert m.stats.evictions > 3
            # RAM holds resident pages and one SwapRun per run of swapped pages, nothing per swapped page
            assert all(isinstance(x, SwapRun) or x.resident for x in m.pages)
            assert sum(isinstance(x, SwapRun) for x in m.pages) <= len(m.resident()) + 1
            tokens, held = m.held()
            assert tokens <= WINDOW + 100 and held <= 2 * before_bytes + 4096, (before_tokens, tokens, held)
            assert m.n_swapped == len(made) - len(m.resident())
            # a swapped page comes back from the store exactly as it was made, at the end of the window
            swapped = [r[0] for r in await m.page_table() if r[4] == "swapped"]
            some = [swapped[0], swapped[len(swapped) // 2], swapped[-1]]
            window = m.window_tokens()
            assert await m.page_in(some) == some
            for i in some:
                assert m.page(i).tokens == made[i] and m.page(i).text == tok.decode(made[i])
            assert m.window_tokens()[:len(window)] == window  # the stub stayed: the old window is a prefix
            # explicit recall ranks from the store's index and reads the text back
            target = next(i for i in reversed(swapped) if i not in some)
            hits = await m.rank(tok.decode(made[target]), 1)
            assert hits and hits[0][0].tokens == made[hits[0][0].id]
            stored = {p.id: p.tokens for p in PageStore(journal).load(3)}
            assert stored == made  # nothing lost or changed in the store
        finally:
            journal.close()

    anyio.run(run)


def test_a_failed_page_out_leaves_every_page_in_ram() -> None:
    """The tokens leave RAM only once the store has them: a write that fails changes nothing."""
    async def run() -> None:
        journal = Journal.open(":memory:")
        tok = ByteTokenizer()
        store = PageStore(journal)
        m = ContextMemory(5, tok, WINDOW, store)
        m.configure(auto_recall=False)
        try:
            real = store.save

            async def failing(pid: int, pages: Any, *a: Any, **kw: Any) -> None:
                pages = list(pages)
                if any(not p.resident for p in pages):  # a page-out
                    raise SyscallError(Errno.EIO, "disk gone")
                await real(pid, pages, *a, **kw)

            store.save = failing  # type: ignore[method-assign]
            rng = random.Random(2)
            for i in range(20):
                before = [(p.id, p.state, list(p.tokens)) for p in m.resident()]
                window = m.window_tokens()
                ids = tok.encode(turn(rng, i))
                try:
                    await m.append(ids, "user", False)
                except SyscallError:
                    break
            else:
                raise AssertionError("no eviction was needed")
            assert [(p.id, p.state, list(p.tokens)) for p in m.resident()] == before
            assert m.window_tokens() == window and m.n_swapped == 0 and m.stats.evictions == 0
            store.save = real  # type: ignore[method-assign]
            await m.append(ids, "user", False)  # the same message again: now the page-out succeeds
            assert m.n_swapped > 0 and m.stats.evictions == 1
            stored = {p.id: p.tokens for p in store.load(5)}
            assert all(stored[i] == toks for i, _, toks in before)
        finally:
            journal.close()

    anyio.run(run)


def test_ram_at_fifty_windows_is_within_twice_that_at_two() -> None:
    async def held_after(windows: int) -> tuple[int, int]:
        journal = Journal.open(":memory:")
        tok = ByteTokenizer()
        m = ContextMemory(4, tok, WINDOW, PageStore(journal))
        try:
            await m.append(tok.encode("system: rules\n"), "system", True)
            rng = random.Random(7)
            i = total = 0
            while total < windows * WINDOW:
                ids = tok.encode(turn(rng, i))
                await m.begin_turn(ids, "user", False)
                await m.end_turn(tok.encode("noted."))
                total += len(ids) + 6
                i += 1
            return m.held()
        finally:
            journal.close()

    async def run() -> None:
        t2, b2 = await held_after(2)
        t50, b50 = await held_after(50)
        assert t50 <= 2 * t2 and b50 <= 2 * b2, (t2, b2, t50, b50)

    anyio.run(run)


def test_the_on_disk_index_ranks_as_rank_bm25_did() -> None:
    from rank_bm25 import BM25Okapi

    async def run() -> None:
        journal = Journal.open(":memory:")
        store = PageStore(journal)
        rng = random.Random(11)
        try:
            for trial in range(40):
                pid = 100 + trial
                n = rng.choice([1, 2, 3, 5, 12, 40])
                texts = [" ".join(rng.choice(VOCAB[:rng.randrange(3, len(VOCAB))])
                                  for _ in range(rng.randrange(0, 20))) or "..." for _ in range(n)]
                pages = [Page(id=i + 1, pos=i + 1, role="user", text=t, tokens=[1], state=PageState.SWAPPED)
                         for i, t in enumerate(texts)]
                await store.save(pid, pages)
                query = [rng.choice(VOCAB) for _ in range(rng.randrange(1, 6))]
                k = rng.randrange(1, 4)
                margin = rng.choice([0.0, 1.5])
                got = rank(journal.query, pid, words(" ".join(query)), k, 0.0, margin)
                bm = BM25Okapi([words(t) or [" "] for t in texts])
                scores = bm.get_scores(words(" ".join(query)))
                order = sorted(range(n), key=lambda i: (-float(scores[i]), -pages[i].id))
                floor = max(0.0, margin * float(scores[order[k]])) if margin and n > k else 0.0  # as RAM did
                want = [(pages[i].id, float(scores[i])) for i in order[:k] if float(scores[i]) > floor]
                assert [i for i, _ in got] == [i for i, _ in want], (texts, query)
                assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-12, abs=1e-12)
        finally:
            journal.close()

    anyio.run(run)


def quota_matches(k: Any, uid: int) -> tuple[int, int]:
    """(what the quota counts for ``uid``, what a fresh count of the database says)."""
    core = k.core
    fresh = StoreQuota().used(core.journal.conn, uid)
    return core.memory.store.quota.used(core.journal.conn, uid), fresh


def rows(k: Any, pid: int) -> list[int]:
    j = k.core.journal
    return [j.query(f"SELECT COUNT(*) FROM {t} WHERE pid=?", (pid,))[0][0]
            for t in ("mem_pages", "mem_terms", "mem_core")]


@pytest.mark.anyio
@pytest.mark.parametrize("keep", [False, True])
async def test_an_ended_process_pages_are_deleted_unless_kept_and_the_quota_follows(tmp_path: Path,
                                                                                  keep: bool) -> None:
    state = str(tmp_path / "state")
    seen: dict[str, Any] = {}
    # journal_keep_seconds=0: a reaped process's syscall journal (which also counts against the quota,
    # docs/durability.md) is deleted at reap, so the quota here follows the pages alone
    async with kernel(ScriptedDriver("noted.", max_model_len=WINDOW), state_dir=state,
                      keep_ended_pages=keep, journal_keep_seconds=0) as k:
        uid = k.core.host_uid
        await k.complete("warm up", max_tokens=2)
        await k.core.journal.flush()
        base = quota_matches(k, uid)
        assert base[0] == base[1]

        async def app(sys: Sys, argv: list[str]) -> Any:
            await sys.mem_write("goal", "the report")
            rng = random.Random(3)
            for i in range(40):
                await sys.llm_generate(f"user: {turn(rng, i)}assistant: ", page=True, max_tokens=8)
                if i in (10, 39):  # after evictions: the quota is what the database holds
                    await k.core.journal.flush()
                    seen[f"quota{i}"] = quota_matches(k, uid)
            st = await sys.mem_stat(pages=True)
            await sys.mem_page_in([p.id for p in st.page_table if p.state == "swapped"][:3])
            seen["after_page_in"] = quota_matches(k, uid)
            seen["rows"] = rows(k, sys.pid)
            return st.evictions

        pid = await k.spawn(app, caps=["llm", "mem"])
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result > 0  # it did evict
        for key in ("quota10", "quota39", "after_page_in"):
            assert seen[key][0] == seen[key][1] > base[0], key
        assert all(n > 0 for n in seen["rows"])
        await k.core.journal.flush()
        assert k.core.memory.peek(pid) is None  # RAM is freed either way
        if keep:
            assert rows(k, pid) == seen["rows"] and quota_matches(k, uid) == seen["after_page_in"]
        else:
            assert rows(k, pid) == [0, 0, 0] and quota_matches(k, uid) == base
    if keep:  # a later kernel without retention sweeps what was kept, and gives the bytes back
        async with kernel(ScriptedDriver(max_model_len=WINDOW), state_dir=state,
                          journal_keep_seconds=0) as k2:
            assert rows(k2, pid) == [0, 0, 0]
            assert quota_matches(k2, uid) == base
