"""Property tests of the page table: random conversations against the window's invariants."""

from __future__ import annotations

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmos.drivers.base import SamplingParams
from lmos.drivers.scripted import ByteTokenizer, ScriptedDriver
from lmos.errors import SyscallError
from lmos.kernel.journal import Journal
from lmos.kernel.kvsync import common_prefix, sync_sequence
from lmos.kernel.memory import ContextMemory
from lmos.kernel.pages import PageState, SwapRun
from lmos.kernel.pagestore import PageStore

WORDS = ["alpha", "harbour", "vault", "code", "river", "bread", "train", "north", "meeting", "42", "rain"]

op = st.one_of(
    st.tuples(st.just("turn"), st.lists(st.sampled_from(WORDS), min_size=1, max_size=60),
              st.integers(0, 40), st.booleans()),
    st.tuples(st.just("pin"), st.lists(st.sampled_from(WORDS), min_size=1, max_size=8), st.just(0),
              st.just(False)),
    st.tuples(st.just("page_in"), st.lists(st.integers(1, 80), min_size=1, max_size=3), st.just(0),
              st.just(False)),
    st.tuples(st.just("core"), st.sampled_from(WORDS), st.integers(0, 30), st.just(False)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=st.integers(200, 700), low=st.sampled_from([0.3, 0.5, 0.7]),
       policy=st.sampled_from(["lru", "fifo", "largest"]), auto=st.booleans(),
       ops=st.lists(op, min_size=1, max_size=40))
def test_random_conversations_keep_the_window_invariants(window: int, low: float, policy: str, auto: bool,
                                                         ops: list[tuple[object, ...]]) -> None:
    anyio.run(_conversation, window, low, policy, auto, ops)


async def _conversation(window: int, low: float, policy: str, auto: bool,
                        ops: list[tuple[object, ...]]) -> None:
    journal = Journal.open(":memory:")
    tok = ByteTokenizer()
    drv = ScriptedDriver("ok")
    drv.add(1, [], SamplingParams())
    m = ContextMemory(1, tok, window, PageStore(journal))
    m.configure(low_watermark=low, policy=policy, auto_recall=auto, recall_min_score=0.0)
    pinned_seen: set[int] = set()
    try:
        for kind, arg, n, flag in ops:
            before_len, before_ev = m.window_len(), m.stats.evictions
            grow = 0
            before_window = m.window_tokens()
            try:
                if kind == "turn":
                    ids = tok.encode(" ".join(arg) + "\n")  # type: ignore[arg-type]
                    grow = len(ids)
                    w = await m.begin_turn(ids, "user" if flag else "tool", False)
                    if m.stats.evictions == before_ev and not auto:
                        assert before_len + grow <= m.high  # no eviction below the high watermark
                    assert w == m.window_tokens()
                    assert len(w) <= m.high  # the window never passes the high watermark
                    await m.end_turn(tok.encode("r" * int(n))[: m.limit - len(w)])  # type: ignore[call-overload]
                elif kind == "pin":
                    await m.append(tok.encode(" ".join(arg)), "system", True)  # type: ignore[arg-type]
                elif kind == "page_in":
                    await m.page_in([i for i in arg if i < m._next_id])  # type: ignore[attr-defined]
                else:
                    await m.write_core(str(arg), "v" * int(n) if n else None)  # type: ignore[call-overload]
            except SyscallError as e:
                assert e.errno.name in ("ENOSPC", "ENOENT")
                assert m.window_tokens() == before_window  # a refused operation changes nothing
                continue
            assert m.window_len() <= m.limit
            if m.stats.evictions > before_ev:
                # eviction only past the high watermark, then down to the low one
                # (or until nothing is left to evict)
                assert m.stats.evictions == before_ev + 1
                evictable = [p for p in m.resident() if not p.pinned]
                assert kind == "turn" or m.window_len() <= m.high  # (a turn's reply may use the reserve)
                assert before_len + grow > m.high or kind != "turn"
                biggest = max((len(p.tokens) for p in m.resident()), default=0)
                # down to the low mark, give or take a page and a stub
                assert not evictable or kind == "turn" or m.window_len() <= m.low + biggest + 100
            for p in m.pages:
                assert isinstance(p, SwapRun) or p.resident  # RAM holds resident pages and runs only
            pinned = {p.id for p in m.resident() if p.pinned}
            assert pinned_seen <= pinned  # pinned pages are never evicted
            pinned_seen = pinned
            # the driver sync keeps exactly the common prefix
            old = drv.tokens(1)
            kept, _ = sync_sequence(drv, 1, m.window_tokens())
            assert drv.tokens(1) == m.window_tokens()
            assert kept == common_prefix(old, m.window_tokens())
            if m.stats.evictions == before_ev and kind == "turn":
                assert kept == len(old)  # an ordinary turn only appends
        stored = {p.id: p for p in PageStore(journal).load(1)}
        for p in m.resident():  # every page is in the swap store, in its current state
            assert stored[p.id].tokens == p.tokens and stored[p.id].state is p.state
        swapped = [p for p in stored.values() if p.state is PageState.SWAPPED]
        assert len(swapped) == m.n_swapped == len(stored) - len(m.resident())  # swapped: in the store only
        assert sum(len(p.tokens) for p in swapped) == m.swapped_tokens
    finally:
        journal.close()


def test_stubs_merge_runs_and_stay_put_when_a_page_comes_back() -> None:
    async def run() -> None:
        journal = Journal.open(":memory:")
        tok = ByteTokenizer()
        m = ContextMemory(7, tok, 400, PageStore(journal))
        m.configure(auto_recall=False, page_tokens=40)
        try:
            await m.append(tok.encode("system: rules\n"), "system", True)
            for i in range(12):
                await m.append(tok.encode(f"turn {i}: {'abcdefghij' * 2}\n"), "user", False)
            assert m.stats.evictions == 1
            swapped = [r[0] for r in await m.page_table() if r[4] == "swapped"]
            text = m.window_text()
            # one stub for the whole run of consecutive swapped pages, naming its ends
            assert text.count("[paged out:") == 1
            assert f"{len(swapped)} pages p{swapped[0]}..p{swapped[-1]}" in text
            before = m.window_tokens()
            await m.page_in([swapped[1]])
            after = m.window_tokens()
            assert after[:len(before)] == before  # the stub did not change: the whole old window is a prefix
            assert tok.decode(after[len(before):]) == m.page(swapped[1]).text
        finally:
            journal.close()

    anyio.run(run)


def test_long_messages_split_at_sentence_ends() -> None:
    journal = Journal.open(":memory:")
    tok = ByteTokenizer()
    m = ContextMemory(8, tok, 4000, PageStore(journal))
    m.configure(page_tokens=64)
    text = " ".join(f"Sentence number {i} is here." for i in range(20))
    chunks = m._chunks(tok.encode(text))
    assert tok.decode([t for c in chunks for t in c]) == text
    assert all(len(c) <= 64 for c in chunks)
    assert all(tok.decode(c).rstrip().endswith(".") for c in chunks)
    journal.close()
