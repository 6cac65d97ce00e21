"""Per-process settings and counters of context memory (see kernel/memory.py).

Settings are per process, not kernel-wide, because apps differ: a chat app
wants automatic recall, a batch summariser may not, and a benchmark turns
prefix reuse off to measure what it saves.  ``mem_ctl`` changes them.  Also
here: the window geometry those settings give, and :func:`deep_size`, how
``mem_stat`` counts the bytes context memory holds in RAM.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.kernel.pages import get_policy


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


class Geometry:
    """The window's sizes, derived from the settings (a base of :class:`lmos.kernel.memory.ContextMemory`)."""

    settings: MemSettings
    model_len: int

    @property
    def limit(self) -> int:
        w = self.settings.window
        return min(w, self.model_len) if w > 0 else self.model_len

    @property
    def reserve(self) -> int:
        return self.settings.reserve or max(1, self.limit // 8)

    @property
    def high(self) -> int:
        return self.limit - self.reserve

    @property
    def low(self) -> int:
        return min(self.high, int(self.limit * self.settings.low_watermark))

    @property
    def page_tokens(self) -> int:
        return self.settings.page_tokens or max(16, self.limit // 8)

    def configure(self, **changes: Any) -> None:
        s = self.settings
        new = MemSettings(**{**s.as_dict(), **{k: v for k, v in changes.items() if v is not None}})
        get_policy(new.policy)
        if new.window < 0 or new.reserve < 0 or new.page_tokens < 0 or new.recall_k < 1:
            raise SyscallError(Errno.EINVAL, "window, reserve and page_tokens must be >= 0, recall_k >= 1")
        if not 0.0 < new.low_watermark <= 1.0:
            raise SyscallError(Errno.EINVAL, "low_watermark must be in (0, 1]")
        self.settings = new
        if self.reserve >= self.limit:
            self.settings = s
            raise SyscallError(Errno.EINVAL,
                               f"reserve {self.reserve} leaves no room in a window of {self.limit}")


def deep_size(obj: object, skip: tuple[object, ...] = ()) -> int:
    """Bytes of ``obj`` and everything it reaches (containers, slots, attributes), each object once."""
    seen = {id(x) for x in skip}
    todo = [obj]
    total = 0
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            todo += [*o.keys(), *o.values()]
        elif isinstance(o, list | tuple | set | frozenset):
            todo += list(o)
        elif not isinstance(o, str | bytes | int | float | bool | type) and o is not None:
            todo += [getattr(o, a) for c in type(o).__mro__ for a in getattr(c, "__slots__", ())
                     if hasattr(o, a)]
            if hasattr(o, "__dict__"):
                todo.append(vars(o))
    return total
