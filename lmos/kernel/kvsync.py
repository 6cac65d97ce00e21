"""Syncing a driver sequence with an assembled window, keeping the KV of the common prefix.

A change in the window invalidates KV only after its first changed token: the
positions (and so the rotary embeddings) of everything before it are the same.
So the sync truncates the driver sequence at the first difference and appends
the rest; whatever came before stays cached in the driver.
"""

from __future__ import annotations

from lmos.drivers.base import Driver


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix (slice compares, then a short scan)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, step = 0, 256
    while lo + step <= n and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


def sync_sequence(drv: Driver, seq_id: int, window: list[int], reuse: bool = True) -> tuple[int, int]:
    """Make the driver sequence equal ``window``, keeping the common prefix's KV.

    Returns ``(kept, recomputed)``: tokens kept from the old sequence, and tokens
    that had KV before and must be computed again (those after the first change).
    """
    cur = drv.tokens(seq_id)
    computed = len(cur) - drv.pending(seq_id)
    kept = common_prefix(cur, window) if reuse else 0
    if kept < len(cur):
        drv.truncate(seq_id, kept)
    if kept < len(window):
        drv.append(seq_id, window[kept:])
    return kept, max(0, min(computed, len(window)) - kept)
