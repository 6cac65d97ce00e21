"""KV block allocator: the page-frame table of the KV pool.

The pool is cut into ``num_blocks`` fixed-size blocks of ``block_size`` token
slots.  This module decides *which* block holds what; it never touches tensors,
so it is pure Python and cheap to test exhaustively.

Three mechanisms, as in an OS page allocator:

* **Reference counts.**  A block may sit in several sequences' block tables
  (forked children, sequences that share a prompt prefix).  It returns to the
  allocator when its last holder lets go.
* **Content-hash prefix caching.**  A *full* block can be registered under a
  hash of its tokens chained with the previous block's hash, so the hash names
  the whole prefix up to and including that block.  A later sequence whose
  prompt starts the same way looks the hashes up and shares the blocks instead
  of recomputing them.  A registered block whose last holder leaves is kept as
  *cached* (evictable, least recently released first) rather than wiped: it
  still counts as free capacity, but a lookup can revive it until the
  allocator needs the frame for something else.
* **Copy-on-write.**  Before a sequence writes into a block that someone else
  also holds, :meth:`BlockAllocator.writable` hands it a private block and
  says the contents must be copied first.

Why chained hashes and not just the block's own tokens: KV at a position
depends on every token before it, so two blocks with equal tokens but
different prefixes hold different KV.  The stored token tuple is compared on
lookup too, so a collision of the 64-bit hash of one block cannot alias.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

from lmos.errors import Errno, SyscallError

ROOT_HASH = 0  # the "previous hash" of a sequence's first block


def chain_hash(prev_hash: int, tokens: Sequence[int]) -> int:
    """Hash of one full block given the hash of the block before it.

    Python's hash of a tuple of ints is deterministic across processes (no
    string randomisation is involved), so the hashes are stable.
    """
    return hash((prev_hash, tuple(tokens)))


def prefix_hashes(tokens: Sequence[int], block_size: int, prev_hash: int = ROOT_HASH) -> list[int]:
    """Chained hashes of every *full* block of ``tokens``."""
    out: list[int] = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        prev_hash = chain_hash(prev_hash, tokens[start : start + block_size])
        out.append(prev_hash)
    return out


class BlockAllocator:
    """Free list, reference counts, prefix cache and copy-on-write decisions."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise SyscallError(Errno.EINVAL, f"bad pool shape: {num_blocks} blocks of {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: deque[int] = deque(range(num_blocks))  # never registered, refcount 0
        self._refs = [0] * num_blocks
        self._hash_of: dict[int, int] = {}  # block -> registered chain hash
        self._tokens_of: dict[int, tuple[int, ...]] = {}  # block -> its tokens (collision check)
        self._by_hash: dict[int, int] = {}  # chain hash -> block
        # registered blocks nobody holds, oldest release first (evicted in that order)
        self._cached: OrderedDict[int, None] = OrderedDict()
        self.hits = 0  # blocks served from the prefix cache (figures for benchmarks)
        # blocks handed out for the first time since the last drain: their memory was never written,
        # so a pool allocated uninitialised must clear them before they are read
        self._seen = bytearray(num_blocks)
        self._fresh: list[int] = []

    # ----------------------------------------------------------------- queries
    def num_free(self) -> int:
        """Blocks an allocation can obtain now (truly free plus evictable cached)."""
        return len(self._free) + len(self._cached)

    def num_cached(self) -> int:
        """Of the free blocks, those still holding a cached prefix (revived by a lookup until evicted)."""
        return len(self._cached)

    def num_used(self) -> int:
        return self.num_blocks - self.num_free()

    def refcount(self, block: int) -> int:
        return self._refs[block]

    def is_registered(self, block: int) -> bool:
        return block in self._hash_of

    # ------------------------------------------------------------- allocation
    def allocate(self) -> int:
        """A private block (refcount 1).  Evicts the oldest cached block if needed."""
        if self._free:
            block = self._free.popleft()
        elif self._cached:
            block, _ = self._cached.popitem(last=False)
            self._unregister(block)
        else:
            raise SyscallError(Errno.ENOMEM, "KV pool exhausted")
        self._refs[block] = 1
        if not self._seen[block]:
            self._seen[block] = 1
            self._fresh.append(block)
        return block

    def drain_fresh(self) -> list[int]:
        """Blocks allocated for the first time since the previous call."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def allocate_many(self, count: int) -> list[int]:
        """``count`` private blocks, all or nothing."""
        if count > self.num_free():
            raise SyscallError(Errno.ENOMEM, f"KV pool exhausted: need {count}, {self.num_free()} free")
        return [self.allocate() for _ in range(count)]

    def incref(self, block: int) -> None:
        if self._refs[block] == 0:
            if block not in self._cached:
                raise SyscallError(Errno.EINVAL, f"block {block} is not allocated")
            del self._cached[block]
        self._refs[block] += 1

    def decref(self, block: int) -> None:
        """Release one reference; the last one frees (or caches) the block."""
        refs = self._refs[block]
        if refs <= 0:
            raise SyscallError(Errno.EINVAL, f"block {block} released more often than held")
        self._refs[block] = refs - 1
        if refs == 1:
            if block in self._hash_of:
                self._cached[block] = None
            else:
                self._free.append(block)

    def release(self, blocks: Sequence[int]) -> None:
        for block in blocks:
            self.decref(block)

    # ---------------------------------------------------------- prefix cache
    def lookup(self, block_hash: int, tokens: Sequence[int]) -> int | None:
        """The block registered for this prefix, with a new reference; else None."""
        block = self._by_hash.get(block_hash)
        if block is None or self._tokens_of[block] != tuple(tokens):
            return None
        self.incref(block)
        self.hits += 1
        return block

    def register(self, block: int, block_hash: int, tokens: Sequence[int]) -> int:
        """Publish a just-filled block under ``block_hash``.

        Returns the block the caller should hold from now on: the same block,
        or, when an identical prefix was already registered under another
        block, that one (the caller's block is released, deduplicating two
        sequences that computed the same prefix independently).
        """
        if self._refs[block] <= 0:
            raise SyscallError(Errno.EINVAL, f"block {block} is not allocated")
        if len(tokens) != self.block_size:
            raise SyscallError(Errno.EINVAL, "only full blocks can be registered")
        current = self._hash_of.get(block)
        if current == block_hash:
            return block
        if current is not None:
            self._unregister(block)
        other = self._by_hash.get(block_hash)
        if other is not None and other != block and self._tokens_of[other] == tuple(tokens):
            self.incref(other)
            self.decref(block)
            return other
        if other is not None:  # a colliding hash with other tokens: keep the older entry
            return block
        self._by_hash[block_hash] = block
        self._hash_of[block] = block_hash
        self._tokens_of[block] = tuple(tokens)
        return block

    def unregister(self, block: int) -> None:
        """Withdraw a block from the prefix cache (its contents are about to change)."""
        if block in self._hash_of:
            self._unregister(block)
            if self._refs[block] == 0:  # was cached-evictable: now plainly free
                del self._cached[block]
                self._free.append(block)

    def _unregister(self, block: int) -> None:
        block_hash = self._hash_of.pop(block)
        del self._tokens_of[block]
        if self._by_hash.get(block_hash) == block:
            del self._by_hash[block_hash]

    # --------------------------------------------------------- copy-on-write
    def writable(self, block: int) -> tuple[int, bool]:
        """Make ``block`` safe to write for a caller holding one reference.

        Returns ``(block_to_write, must_copy)``.  A block held by others is
        replaced by a fresh private one (``must_copy``: copy the old contents
        into it before writing) and the caller's reference to the old one is
        dropped.  A private block is written in place, but it leaves the prefix
        cache, since its registered contents are about to change.
        """
        if self._refs[block] <= 0:
            raise SyscallError(Errno.EINVAL, f"block {block} is not allocated")
        if self._refs[block] == 1:
            self.unregister(block)
            return block, False
        fresh = self.allocate()
        self.decref(block)
        return fresh, True

    def check(self) -> None:
        """Assert the internal invariants (used by tests)."""
        free = set(self._free)
        cached = set(self._cached)
        assert len(free) == len(self._free), "duplicate in free list"
        assert not free & cached, "block both free and cached"
        for block in range(self.num_blocks):
            refs = self._refs[block]
            assert refs >= 0
            if block in free:
                assert refs == 0 and block not in self._hash_of
            elif block in cached:
                assert refs == 0 and block in self._hash_of
            else:
                assert refs > 0, f"block {block} leaked"
        for block_hash, block in self._by_hash.items():
            assert self._hash_of[block] == block_hash
        assert set(self._hash_of) == set(self._tokens_of)
