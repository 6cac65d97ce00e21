"""Where a cluster sequence runs: least loaded, with prefix affinity; and when it moves.

Placement.  A replica's prefix cache only helps sequences placed on it, so a
new sequence goes to the replica that already holds the longest run of its
leading full KV blocks (processes that share a system prompt land together),
unless that replica is busier than the least loaded one by more than
``slack`` sequences: then load wins.  With no prefix anywhere it is simply the
least loaded.  ``mode="random"`` places uniformly at random (the baseline the
benchmark compares against).  The prefixes a replica holds are predicted from
what was placed there (the same chain of block hashes the driver's cache
keys on), kept in a bounded LRU; what really hit is reported by the replicas
and counted in :class:`PlacementStats`.

Migration.  Sequences finish unevenly and a dead replica's sequences crowd the
survivors, so after each step the driver asks :func:`imbalance` whether the
busiest replica has at least two more active sequences than the idlest; if so
the cheapest sequences move.  Moving a sequence means moving its KV blocks
(bytes over the network) or dropping them and recomputing on the target (a
prefill there): :func:`choose_move` compares the two estimated times.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

PlacementMode = Literal["affinity", "random", "least"]
MoveKind = Literal["move", "recompute"]
_ROOT = 0x5EED


def prefix_hashes(tokens: Sequence[int], block_size: int) -> list[int]:
    """Chain hashes of the full blocks a prefix cache could share (never the last token's block)."""
    out: list[int] = []
    prev = _ROOT
    for i in range((len(tokens) - 1) // block_size):
        prev = hash((prev, tuple(tokens[i * block_size : (i + 1) * block_size])))
        out.append(prev)
    return out


class PlacementStats(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0  # tokens of every sequence admitted to a replica
    hit_tokens: int = 0  # of those, found in the replica's prefix cache
    placed: int = 0
    affinity_placed: int = 0  # placed by prefix rather than by load
    migrations: int = 0
    moved_kv: int = 0  # migrations that moved KV blocks
    recomputed: int = 0  # migrations and resumes that recompute from tokens
    resumed: int = 0  # sequences resumed after their replica died
    replica_deaths: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class Placement:
    """Per-replica load and predicted prefixes; picks a replica for each new sequence."""

    def __init__(self, replicas: int, block_size: int, mode: PlacementMode = "affinity", *,
                 slack: int = 2, seed: int = 0, max_prefixes: int = 1 << 16) -> None:
        self.mode: PlacementMode = mode
        self.block_size = block_size
        self.slack = slack
        self.max_prefixes = max_prefixes
        self.loads = [0] * replicas
        self.alive = [True] * replicas
        self.prefixes: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(replicas)]
        self.rng = random.Random(seed)
        self.stats = PlacementStats()

    def live(self) -> list[int]:
        return [i for i, ok in enumerate(self.alive) if ok]

    def choose(self, tokens: Sequence[int], exclude: Iterable[int] = ()) -> int:
        """The replica for a sequence of ``tokens`` (ValueError when none is alive)."""
        banned = set(exclude)
        cands = [i for i in self.live() if i not in banned] or self.live()
        if not cands:
            raise ValueError("no live replica")
        if self.mode == "random":
            return self.rng.choice(cands)
        least = min(cands, key=lambda i: (self.loads[i], i))
        if self.mode == "least":
            return least
        hashes = prefix_hashes(tokens, self.block_size)
        best, depth = least, 0
        for i in cands:
            d = 0
            have = self.prefixes[i]
            for h in hashes:
                if h not in have:
                    break
                d += 1
            if d > depth or (d == depth and d > 0 and self.loads[i] < self.loads[best]):
                best, depth = i, d
        if depth > 0 and self.loads[best] <= self.loads[least] + self.slack:
            if best != least:
                self.stats.affinity_placed += 1
            return best
        return least

    def placed(self, replica: int, tokens: Sequence[int]) -> None:
        """``tokens`` now live on ``replica``: count its load and remember its prefixes."""
        self.loads[replica] += 1
        self.stats.placed += 1
        self.remember(replica, tokens)

    def remember(self, replica: int, tokens: Sequence[int]) -> None:
        have = self.prefixes[replica]
        for h in prefix_hashes(tokens, self.block_size):
            have[h] = None
            have.move_to_end(h)
        while len(have) > self.max_prefixes:
            have.popitem(last=False)

    def removed(self, replica: int) -> None:
        self.loads[replica] = max(0, self.loads[replica] - 1)

    def died(self, replica: int) -> None:
        self.alive[replica] = False
        self.loads[replica] = 0
        self.prefixes[replica].clear()
        self.stats.replica_deaths += 1

    def record_hits(self, hits: Iterable[tuple[int, int]]) -> None:
        for prompt, hit in hits:
            self.stats.prompt_tokens += prompt
            self.stats.hit_tokens += hit


def imbalance(active: dict[int, int], live: Sequence[int], threshold: int = 2) -> tuple[int, int, int] | None:
    """``(busiest, idlest, how many to move)`` when the busiest live replica has at least
    ``threshold`` more active sequences than the idlest; None when balanced."""
    if len(live) < 2:
        return None
    counts = {i: active.get(i, 0) for i in live}
    src = max(live, key=lambda i: (counts[i], -i))
    dst = min(live, key=lambda i: (counts[i], i))
    gap = counts[src] - counts[dst]
    if gap < threshold:
        return None
    return src, dst, gap // 2


def choose_move(computed: int, kv_bytes: int, prefill_tok_s: float, bandwidth: float,
                latency: float = 0.005) -> tuple[MoveKind, float]:
    """Move the KV blocks or recompute them on the target, whichever is estimated faster.

    Moving costs the bytes over the network plus a round trip (the source copies its
    blocks out, the target copies them in); recomputing costs a prefill of the computed
    tokens at the target's measured prefill rate.  Returns the choice and its estimate.
    """
    if computed <= 0 or kv_bytes <= 0:
        return "recompute", 0.0
    move = kv_bytes / max(bandwidth, 1.0) + latency
    recompute = computed / max(prefill_tok_s, 1.0)
    return ("move", move) if move < recompute else ("recompute", recompute)
