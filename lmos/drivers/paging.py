"""Per-sequence block tables: which blocks hold a sequence's KV, and where.

This is the virtual-memory half of the driver (the allocator in
:mod:`lmos.drivers.blocks` is the physical half).  It tracks every sequence's
tokens, how many of them have KV ("computed"), its block table and whether the
KV lives on the device, on the host (swapped) or nowhere (dropped).  It is pure
Python: the tensor copies it asks for (copy-on-write, swap) are returned as
lists of block pairs, and the driver performs them.  Keeping the decisions
apart from the tensors lets the bookkeeping be tested without a model.

Invariant: a non-empty sequence always has at least one pending token.  A
prefix-cache hit never covers the last prompt token and truncation invalidates
the KV of the new last token, so the next step always has a token to compute,
whose logits give the next token.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from lmos.drivers.base import KVLocation, SamplingParams
from lmos.drivers.blocks import ROOT_HASH, BlockAllocator, chain_hash
from lmos.errors import Errno, SyscallError

_versions = itertools.count()


@dataclass
class Seq:
    """One sequence's state (the driver's PCB for a context)."""

    tokens: list[int]
    sampling: SamplingParams
    computed: int = 0  # tokens[:computed] have KV
    blocks: list[int] = field(default_factory=list)  # device block table
    hashes: list[int] = field(default_factory=list)  # chain hashes of the registered full blocks
    location: KVLocation = KVLocation.DEVICE
    host: Any = None  # host copy of the blocks (owned by the driver's pool)
    host_blocks: int = 0  # blocks held in ``host``
    generator: Any = None  # torch.Generator for seeded sampling (owned by the driver)
    # changes whenever computed KV is invalidated (truncate, drop): caches of KV values key on it
    kv_version: int = field(default_factory=lambda: next(_versions))



def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class PageTable:
    """All sequences' block tables over one :class:`BlockAllocator`."""

    def __init__(self, allocator: BlockAllocator, max_model_len: int) -> None:
        self.alloc = allocator
        self.block_size = allocator.block_size
        self.max_model_len = max_model_len
        self.seqs: dict[int, Seq] = {}

    # ------------------------------------------------------------- lookups
    def get(self, seq_id: int) -> Seq:
        seq = self.seqs.get(seq_id)
        if seq is None:
            raise SyscallError(Errno.ENOENT, f"no sequence {seq_id}")
        return seq

    def _check_len(self, n: int) -> None:
        if n > self.max_model_len:
            raise SyscallError(Errno.E2BIG, f"{n} tokens exceed the model window of {self.max_model_len}")

    # -------------------------------------------------------- life cycle
    def add(self, seq_id: int, tokens: list[int], sampling: SamplingParams) -> Seq:
        """Admit a sequence, sharing every full prompt block already cached."""
        if seq_id in self.seqs:
            raise SyscallError(Errno.EEXIST, f"sequence {seq_id} exists")
        self._check_len(len(tokens))
        seq = Seq(tokens=list(tokens), sampling=sampling)
        bs = self.block_size
        prev = ROOT_HASH
        # never cover the last token: it must stay pending to yield logits
        for i in range((len(tokens) - 1) // bs):
            chunk = tokens[i * bs : (i + 1) * bs]
            h = chain_hash(prev, chunk)
            block = self.alloc.lookup(h, chunk)
            if block is None:
                break
            seq.blocks.append(block)
            seq.hashes.append(h)
            prev = h
        seq.computed = len(seq.blocks) * bs
        self.seqs[seq_id] = seq
        return seq

    def append(self, seq_id: int, tokens: list[int]) -> None:
        seq = self.get(seq_id)
        self._check_len(len(seq.tokens) + len(tokens))
        seq.tokens.extend(tokens)

    def truncate(self, seq_id: int, length: int) -> None:
        seq = self.get(seq_id)
        if not 0 <= length <= len(seq.tokens):
            raise SyscallError(Errno.EINVAL, f"cannot truncate {len(seq.tokens)} tokens to {length}")
        del seq.tokens[length:]
        computed = min(seq.computed, max(length - 1, 0))
        if computed == seq.computed:
            return
        seq.computed = computed
        seq.kv_version = next(_versions)
        keep = _ceil_div(computed, self.block_size)
        del seq.hashes[computed // self.block_size :]
        if seq.location is KVLocation.DEVICE:
            self.alloc.release(seq.blocks[keep:])
            del seq.blocks[keep:]
        elif seq.location is KVLocation.HOST:
            seq.host_blocks = min(seq.host_blocks, keep)

    def fork(self, seq_id: int, child_id: int) -> Seq:
        parent = self.get(seq_id)
        if child_id in self.seqs:
            raise SyscallError(Errno.EEXIST, f"sequence {child_id} exists")
        child = Seq(
            tokens=list(parent.tokens),
            sampling=parent.sampling,
            computed=parent.computed,
            blocks=list(parent.blocks),
            hashes=list(parent.hashes),
            location=parent.location,
            host=parent.host,  # host copies are never written after a swap out: safe to share
            host_blocks=parent.host_blocks,
        )
        for block in child.blocks:
            self.alloc.incref(block)
        self.seqs[child_id] = child
        return child

    def free(self, seq_id: int) -> Seq | None:
        seq = self.seqs.pop(seq_id, None)
        if seq is not None:
            self.alloc.release(seq.blocks)
            seq.blocks = []
        return seq

    def drop(self, seq_id: int) -> None:
        seq = self.get(seq_id)
        self.alloc.release(seq.blocks)
        seq.blocks, seq.hashes = [], []
        seq.computed = 0
        seq.kv_version = next(_versions)
        seq.location, seq.host, seq.host_blocks = KVLocation.NONE, None, 0

    # ------------------------------------------------------------ swapping
    def swap_out(self, seq_id: int) -> list[int]:
        """Release the device blocks; returns the blocks to copy to the host first."""
        seq = self.get(seq_id)
        if seq.location is not KVLocation.DEVICE:
            raise SyscallError(Errno.EINVAL, f"sequence {seq_id} is not on the device")
        blocks = seq.blocks
        self.alloc.release(blocks)
        seq.blocks = []
        seq.location, seq.host_blocks = KVLocation.HOST, len(blocks)
        return blocks

    def swap_in(self, seq_id: int) -> list[tuple[int, int]]:
        """Give a swapped sequence device blocks again.

        Returns ``(host_index, device_block)`` pairs to copy.  Full blocks whose
        prefix is still cached on the device are shared instead of copied.
        """
        seq = self.get(seq_id)
        if seq.location is not KVLocation.HOST:
            raise SyscallError(Errno.EINVAL, f"sequence {seq_id} is not swapped out")
        if seq.host_blocks > self.alloc.num_free():
            raise SyscallError(Errno.ENOMEM, f"swap in needs {seq.host_blocks} blocks")
        bs = self.block_size
        copies: list[tuple[int, int]] = []
        for i in range(seq.host_blocks):
            block = None
            if i < len(seq.hashes):
                block = self.alloc.lookup(seq.hashes[i], seq.tokens[i * bs : (i + 1) * bs])
            if block is None:
                block = self.alloc.allocate()
                copies.append((i, block))
            seq.blocks.append(block)
        seq.location, seq.host, seq.host_blocks = KVLocation.DEVICE, None, 0
        # re-publish the copied full blocks so others may share them again
        for i in range(min(len(seq.hashes), len(seq.blocks))):
            chunk = seq.tokens[i * bs : (i + 1) * bs]
            seq.blocks[i] = self.alloc.register(seq.blocks[i], seq.hashes[i], chunk)
        return copies

    # --------------------------------------------------------------- steps
    def kv_needed(self, seq_id: int, num_tokens: int) -> int:
        seq = self.get(seq_id)
        bs = self.block_size
        held = seq.host_blocks if seq.location is KVLocation.HOST else len(seq.blocks)
        need = max(_ceil_div(seq.computed + num_tokens, bs) - held, 0)
        if seq.location is KVLocation.HOST:
            return need + seq.host_blocks
        if seq.computed % bs and num_tokens > 0 and self.alloc.refcount(seq.blocks[-1]) > 1:
            need += 1  # copy-on-write of the shared partial block
        return need

    def prepare(self, seq: Seq, num_tokens: int) -> list[tuple[int, int]]:
        """Make room to compute ``num_tokens`` more tokens; returns COW copies (src, dst)."""
        bs = self.block_size
        copies: list[tuple[int, int]] = []
        if seq.computed % bs:
            last = seq.blocks[-1]
            fresh, must_copy = self.alloc.writable(last)
            if must_copy:
                copies.append((last, fresh))
                seq.blocks[-1] = fresh
        extra = _ceil_div(seq.computed + num_tokens, bs) - len(seq.blocks)
        if extra > 0:
            seq.blocks.extend(self.alloc.allocate_many(extra))
        return copies

    def commit(self, seq: Seq, num_tokens: int) -> None:
        """Mark ``num_tokens`` more tokens computed and publish newly full blocks."""
        seq.computed += num_tokens
        bs = self.block_size
        full = seq.computed // bs
        prev = seq.hashes[-1] if seq.hashes else ROOT_HASH
        for i in range(len(seq.hashes), full):
            chunk = seq.tokens[i * bs : (i + 1) * bs]
            prev = chain_hash(prev, chunk)
            seq.blocks[i] = self.alloc.register(seq.blocks[i], prev, chunk)
            seq.hashes.append(prev)

    def exclusive_blocks(self, seq: Seq) -> int:
        return sum(1 for b in seq.blocks if self.alloc.refcount(b) == 1)
