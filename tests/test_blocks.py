"""Block allocator and page tables: invariants under random operation sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lmos.drivers.base import KVLocation, SamplingParams
from lmos.drivers.blocks import BlockAllocator, chain_hash, prefix_hashes
from lmos.drivers.paging import PageTable
from lmos.errors import Errno, SyscallError

SP = SamplingParams(temperature=0.0)


def test_allocate_until_enomem_then_free() -> None:
    a = BlockAllocator(4, 2)
    blocks = a.allocate_many(4)
    assert sorted(blocks) == [0, 1, 2, 3] and a.num_free() == 0
    with pytest.raises(SyscallError) as e:
        a.allocate()
    assert e.value.errno is Errno.ENOMEM
    a.release(blocks)
    assert a.num_free() == 4
    a.check()


def test_allocate_many_is_all_or_nothing() -> None:
    a = BlockAllocator(3, 2)
    a.allocate()
    with pytest.raises(SyscallError):
        a.allocate_many(3)
    assert a.num_free() == 2


def test_double_release_is_an_error() -> None:
    a = BlockAllocator(2, 2)
    b = a.allocate()
    a.decref(b)
    with pytest.raises(SyscallError) as e:
        a.decref(b)
    assert e.value.errno is Errno.EINVAL


def test_chain_hash_depends_on_prefix() -> None:
    assert chain_hash(1, [1, 2]) != chain_hash(2, [1, 2])
    hs = prefix_hashes([1, 2, 3, 4, 5], 2)
    assert len(hs) == 2 and hs[1] == chain_hash(hs[0], [3, 4])


def test_cached_block_revived_then_evicted_when_needed() -> None:
    a = BlockAllocator(2, 2)
    b = a.allocate()
    h = chain_hash(0, [7, 8])
    assert a.register(b, h, [7, 8]) == b
    a.decref(b)  # cached, still counted free
    assert a.num_free() == 2
    assert a.lookup(h, [7, 8]) == b and a.refcount(b) == 1
    assert a.lookup(h, [7, 9]) is None  # same hash key, other tokens: no alias
    a.decref(b)
    a.allocate_many(2)  # needs the cached frame: evicts it
    assert a.lookup(h, [7, 8]) is None
    a.check()


def test_register_deduplicates_equal_prefixes() -> None:
    a = BlockAllocator(4, 2)
    b1, b2 = a.allocate(), a.allocate()
    h = chain_hash(0, [1, 1])
    assert a.register(b1, h, [1, 1]) == b1
    assert a.register(b2, h, [1, 1]) == b1  # b2 released, b1 now held twice
    assert a.refcount(b1) == 2 and a.refcount(b2) == 0
    a.check()


def test_copy_on_write() -> None:
    a = BlockAllocator(4, 2)
    b = a.allocate()
    a.incref(b)  # shared by two holders
    new, copy = a.writable(b)
    assert copy and new != b and a.refcount(b) == 1 and a.refcount(new) == 1
    same, copy = a.writable(new)
    assert same == new and not copy
    a.check()


def test_page_table_prefix_sharing_and_last_token_pending() -> None:
    t = PageTable(BlockAllocator(16, 4), 100)
    s = t.add(1, list(range(12)), SP)
    t.prepare(s, 12)
    t.commit(s, 12)
    assert len(s.hashes) == 3
    s2 = t.add(2, list(range(12)), SP)  # identical prompt: all but the last block shared
    assert s2.computed == 8 and s2.blocks == s.blocks[:2]
    s3 = t.add(3, [*range(8), 99, 98], SP)
    assert s3.computed == 8
    t.truncate(1, 6)  # the new last token's KV is invalidated: something to compute next
    assert s.computed == 5 and len(s.blocks) == 2 and len(s.hashes) == 1
    assert t.kv_needed(1, 1) == 1  # block 1 is shared with 2 and 3: copy on write
    copies = t.prepare(s, 1)
    assert len(copies) == 1 and copies[0][0] == s2.blocks[1]
    t.alloc.check()


def test_swap_round_trip_reshares_cached_blocks() -> None:
    t = PageTable(BlockAllocator(8, 2), 100)
    a = t.add(1, [1, 2, 3, 4, 5], SP)
    t.prepare(a, 5)
    t.commit(a, 5)
    b = t.fork(1, 2)
    out = t.swap_out(1)
    assert out == b.blocks and a.location is KVLocation.HOST and a.host_blocks == 3
    assert t.kv_needed(1, 0) == 3
    copies = t.swap_in(1)
    # the two full blocks are still held by the fork: shared again, only the partial one is copied
    assert a.blocks[:2] == b.blocks[:2] and [i for i, _ in copies] == [2]
    t.free(1)
    t.free(2)
    assert t.alloc.num_free() == 8
    t.alloc.check()


class PageTableMachine(RuleBasedStateMachine):
    """Random add/fork/step/truncate/swap/drop/free: refcounts always match the tables."""

    def __init__(self) -> None:
        super().__init__()
        self.t = PageTable(BlockAllocator(24, 3), 60)
        self.next_id = 0

    @rule(tokens=st.lists(st.integers(0, 3), min_size=1, max_size=14))
    def add(self, tokens: list[int]) -> None:
        try:
            self.t.add(self.next_id, tokens, SP)
        except SyscallError as e:
            assert e.errno is Errno.ENOMEM
        self.next_id += 1

    @precondition(lambda self: self.t.seqs)
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.t.seqs)))
        s = self.t.seqs[sid]
        pending = len(s.tokens) - s.computed
        if s.location is KVLocation.HOST or pending == 0:
            return
        n = data.draw(st.integers(1, pending))
        if self.t.kv_needed(sid, n) > self.t.alloc.num_free():
            return
        self.t.prepare(s, n)
        self.t.commit(s, n)
        s.location = KVLocation.DEVICE
        s.tokens.append(data.draw(st.integers(0, 3)))

    @precondition(lambda self: self.t.seqs)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        self.t.fork(data.draw(st.sampled_from(sorted(self.t.seqs))), self.next_id)
        self.next_id += 1

    @precondition(lambda self: self.t.seqs)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.t.seqs)))
        self.t.truncate(sid, data.draw(st.integers(0, len(self.t.seqs[sid].tokens))))

    @precondition(lambda self: self.t.seqs)
    @rule(data=st.data(), op=st.sampled_from(["swap_out", "swap_in", "drop", "free"]))
    def move(self, data: st.DataObject, op: str) -> None:
        sid = data.draw(st.sampled_from(sorted(self.t.seqs)))
        try:
            getattr(self.t, op)(sid)
        except SyscallError as e:
            assert e.errno in (Errno.EINVAL, Errno.ENOMEM)

    @invariant()
    def consistent(self) -> None:
        a = self.t.alloc
        a.check()
        held: dict[int, int] = {}
        for s in self.t.seqs.values():
            assert len(s.tokens) - s.computed >= (1 if s.tokens else 0)
            if s.location is KVLocation.DEVICE:
                assert len(s.blocks) == -(-s.computed // 3)
            assert len(s.hashes) <= s.computed // 3
            for b in s.blocks:
                held[b] = held.get(b, 0) + 1
        for b in range(a.num_blocks):
            assert a.refcount(b) == held.get(b, 0)


TestPageTableMachine = PageTableMachine.TestCase
TestPageTableMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


@given(st.lists(st.integers(0, 2), min_size=0, max_size=40), st.integers(1, 5))
def test_prefix_hashes_cover_full_blocks_only(tokens: list[int], bs: int) -> None:
    assert len(prefix_hashes(tokens, bs)) == len(tokens) // bs
