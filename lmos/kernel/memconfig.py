"""Per-process settings and counters of context memory (see kernel/memory.py).

Settings are per process, not kernel-wide, because apps differ: a chat app
wants automatic recall, a batch summariser may not, and a benchmark turns
prefix reuse off to measure what it saves.  ``mem_ctl`` changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True)
class MemSettings:
    """Per-process paging knobs (``mem_ctl``); zeros mean "derive from the window"."""

    window: int = 0  # tokens; 0 = the model's max_model_len
    reserve: int = 0  # tokens kept free for generation; 0 = window // 8
    low_watermark: float = 0.5  # evict down to this fraction of the window
    page_tokens: int = 0  # largest page; longer messages are split; 0 = window // 8
    policy: str = "lru"
    auto_recall: bool = True  # before a user turn, page in the best matches if they fit
    recall_k: int = 2
    recall_min_score: float = 2.0  # BM25 score an automatic recall must beat
    recall_margin: float = 1.5  # ...and the best page it leaves out, by this factor
    prefix_reuse: bool = True  # False re-prefills the whole window each turn (for comparison)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class MemStats:
    turns: int = 0
    evictions: int = 0  # eviction events (each frees down to the low watermark)
    pages_evicted: int = 0
    page_ins: int = 0
    recalls: int = 0
    prefill_tokens: int = 0  # tokens handed to the driver to compute by syncs
    reprefill_tokens: int = 0  # of those, tokens that had KV before the sync
