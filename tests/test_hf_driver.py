"""HFDriver greedy output equals ``model.generate`` run alone, token for token.

Every scenario runs for Llama, Qwen2 and Mistral configs (grouped-query
attention: 4 heads over 2 KV heads) at block sizes 1, 16 and 64.
"""

from __future__ import annotations

import pytest
import torch

from lmos.drivers.base import KVLocation, StepItem, StepPlan
from lmos.drivers.hf import HFDriver
from tests.models import ARCHS, Loop, make_driver, prompt, reference

BLOCKS = (1, 16, 64)
matrix = pytest.mark.parametrize("arch", ARCHS)
blocks = pytest.mark.parametrize("bs", BLOCKS)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@matrix
@blocks
def test_mixed_lengths_join_leave_chunked_prefill(arch: str, bs: int) -> None:
    d = make_driver(arch, bs)
    loop = Loop(d, chunk=16)  # prompts longer than 16 are prefilled over several steps
    plan = {0: (prompt(0, 5), 14), 1: (prompt(1, 23), 6), 2: (prompt(2, 40), 10)}
    late = {3: (prompt(3, 70), 8, 4), 4: (prompt(4, 9), 12, 9)}  # id: (prompt, new, join at step)
    for sid, (p, n) in plan.items():
        loop.add(sid, p, n)
    mixed = []

    def hook(step: int) -> None:
        for sid, (p, n, at) in late.items():
            if step == at:
                loop.add(sid, p, n)
        # record that a prefill chunk ran in the same step as decodes
        items = loop.plan().items
        mixed.append(any(i.num_tokens > 1 for i in items) and any(i.num_tokens == 1 for i in items))
        # sequences that are done leave (their blocks return to the pool)
        for sid in list(loop.want):
            if len(loop.out[sid]) >= loop.want[sid] and sid in d.table.seqs:
                d.free(sid)

    out = loop.run(hook)
    assert any(mixed)
    for sid, (p, n) in plan.items():
        assert out[sid] == reference(arch, p, n), sid
    for sid, (p, n, _) in late.items():
        assert out[sid] == reference(arch, p, n), sid
    for sid in list(d.table.seqs):
        d.free(sid)
    assert d.kv_free() == d.limits.num_blocks
    d.table.alloc.check()


@matrix
@blocks
def test_preemption_swap_and_recompute(arch: str, bs: int) -> None:
    d = make_driver(arch, bs)
    loop = Loop(d, chunk=32)
    ps = {0: prompt(10, 30), 1: prompt(11, 17), 2: prompt(12, 45)}
    for sid, p in ps.items():
        loop.add(sid, p, 12)
    free_before: list[int] = []

    def hook(step: int) -> None:
        if step == 4:
            free_before.append(d.kv_free())
            d.step(StepPlan(swap_out=[0], drop=[1]))
            loop.paused |= {0, 1}
            c0, c1 = d.cost(0), d.cost(1)
            assert c0.location is KVLocation.HOST and c0.blocks == 0 and c0.swap_bytes > 0
            assert c1.location is KVLocation.NONE and d.pending(1) == d.length(1)
            assert d.kv_free() > free_before[0]
            assert d.kv_needed(0, 1) >= c0.swap_bytes // d.pool.block_bytes
        if step == 8:
            d.step(StepPlan(swap_in=[0]))
            assert d.cost(0).location is KVLocation.DEVICE and d.pending(0) == 1
            loop.paused -= {0, 1}

    out = loop.run(hook)
    for sid, p in ps.items():
        assert out[sid] == reference(arch, p, 12), sid


@matrix
@blocks
def test_shared_prefix_copy_on_write(arch: str, bs: int) -> None:
    d = make_driver(arch, bs)
    base = prompt(20, 70)
    a, b = [*base, *prompt(21, 5)], [*base, *prompt(22, 9)]
    loop = Loop(d)
    loop.add(0, a, 10)
    d.step(StepPlan(items=[StepItem(0, len(a) - 1, sample=False)]))  # a's prompt but its last token
    loop.add(1, b, 10)
    shared = len(base) // bs
    assert d.pending(1) == len(b) - shared * bs
    sa, sb = d.table.get(0), d.table.get(1)
    assert sa.blocks[:shared] == sb.blocks[:shared]
    used = d.limits.num_blocks - d.kv_free()
    assert used == len(sa.blocks)  # b holds nothing of its own yet
    assert d.cost(1).exclusive_blocks == 0 and d.cost(0).exclusive_blocks == len(sa.blocks) - shared
    out = loop.run()
    assert out[0] == reference(arch, a, 10)
    assert out[1] == reference(arch, b, 10)
    # after divergence the shared prefix blocks are still held by both
    assert d.table.get(0).blocks[:shared] == d.table.get(1).blocks[:shared]
    total = len(d.table.get(0).blocks) + len(d.table.get(1).blocks) - shared
    assert d.limits.num_blocks - d.kv_free() == total


@matrix
@blocks
def test_fork_then_diverge(arch: str, bs: int) -> None:
    d = make_driver(arch, bs)
    p = prompt(30, 37)
    loop = Loop(d)
    loop.add(0, p, 6)
    loop.run()
    d.fork(0, 1)
    assert d.tokens(1) == d.tokens(0) and d.pending(1) == 1
    assert d.table.get(0).blocks == d.table.get(1).blocks
    used = d.limits.num_blocks - d.kv_free()
    d.append(1, [7, 8, 9])  # the child diverges: its next write copies the shared partial block
    loop.want[0], loop.want[1], loop.out[1] = 14, 8, []
    loop.run()
    parent, child = d.tokens(0), d.tokens(1)
    assert parent[len(p) :][:14] == reference(arch, p, 14)
    base = [*p, *reference(arch, p, 6), 7, 8, 9]
    assert child[len(base) :][:8] == reference(arch, base, 8)
    if (len(p) + 6) % bs:  # the last block was partial and shared: the writer got a copy
        assert d.table.get(0).blocks[-1] != d.table.get(1).blocks[-1]
    assert d.limits.num_blocks - d.kv_free() > used


@matrix
@blocks
def test_truncate_then_continue(arch: str, bs: int) -> None:
    d = make_driver(arch, bs)
    p = prompt(40, 33)
    loop = Loop(d)
    loop.add(0, p, 10)
    first = loop.run()[0]
    d.truncate(0, len(p) + 3)
    d.append(0, [5, 6])
    loop.want[0], loop.out[0] = 6, []
    out = loop.run()[0]
    assert out == reference(arch, [*p, *first[:3], 5, 6], 6)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_decode_cache_reused_in_steady_decoding(arch: str) -> None:
    """The decode batch's working KV copy is reused step to step and gives the same tokens."""
    outs = []
    for enabled in (True, False):
        d = make_driver(arch, 16, decode_cache=enabled)
        loop = Loop(d, chunk=16)
        ps = {i: prompt(200 + i, 10 + 17 * i) for i in range(4)}
        for sid, p in ps.items():
            loop.add(sid, p, 20 + 3 * sid)

        def hook(step: int, d: HFDriver = d, loop: Loop = loop) -> None:
            if step == 12:
                d.truncate(1, d.length(1) - 2)  # invalidates row 1's KV: the copy must be rebuilt
                loop.out[1] = loop.out[1][:-2]

        outs.append(loop.run(hook))
        if enabled:
            cache = d._decode_cache
            assert cache is not None and cache.hits > cache.rebuilds > 1
    assert outs[0] == outs[1]
    for sid in range(4):
        assert outs[0][sid] == reference(arch, prompt(200 + sid, 10 + 17 * sid), 20 + 3 * sid)


def test_decode_cache_keys_on_members_positions_and_kv_version() -> None:
    from lmos.drivers.hf_attention import DecodeCache

    pool = make_driver("llama", 4).pool
    cache = DecodeCache()
    assert cache.plan(((1, 5),), [10], pool)  # first decode batch: gather
    assert not cache.plan(((1, 5),), [11], pool)  # one position further: reuse
    assert cache.plan(((1, 5),), [11], pool)  # not one further (recomputed position): gather
    assert cache.plan(((1, 6),), [12], pool)  # same row, KV invalidated (new version): gather
    assert cache.plan(((1, 6), (2, 1)), [13, 4], pool)  # a new member: gather
    assert not cache.plan(((1, 6), (2, 1)), [14, 5], pool)
    assert cache.plan(((1, 6), (2, 1)), [15, cache.cap], pool)  # outgrew the copy: gather, larger
    assert cache.cap > 15


def test_decode_cache_bounded_by_its_memory_cap() -> None:
    from lmos.drivers.hf_attention import DecodeCache

    pool = make_driver("llama", 4).pool
    per_row = 128 * pool.shape.bytes_per_token()  # one row of a 128-slot copy
    cache = DecodeCache(max_bytes=2 * per_row)
    assert cache.plan(((1, 0), (2, 0)), [60, 70], pool) is True  # 2 rows x 128 slots fit
    assert cache.plan(((1, 0), (2, 0), (3, 0)), [61, 71, 5], pool) is None  # 3 rows would not
    assert cache.rows == 0  # the copy was dropped, not kept stale
