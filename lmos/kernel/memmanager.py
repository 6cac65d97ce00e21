"""The kernel's context memories (kernel/memory.py), and what becomes of them when a process ends."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field

from lmos.drivers.base import Driver
from lmos.errors import Errno, SyscallError
from lmos.kernel.kvsync import sync_sequence
from lmos.kernel.memory import ContextMemory
from lmos.kernel.pagestore import PageStore

log = logging.getLogger("lmos.memory")


@dataclass
class MemoryManager:
    """The kernel's context memories, one per process that uses paging (created on first use).

    When a process ends its pages are deleted from the store and their bytes
    given back to its owner's quota, unless ``keep_ended`` (the config's
    ``keep_ended_pages``) keeps them for replay; then they count against the
    quota until deleted.  At boot, pages of processes that ended under an
    earlier kernel are swept the same way.
    """

    store: PageStore
    keep_ended: bool = False
    mems: dict[int, ContextMemory] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.keep_ended and not self.store.journal.read_only:
            try:
                self.store.sweep_ended()
            except (sqlite3.Error, SyscallError) as exc:  # a read-only state directory: nothing to free
                log.warning("could not delete the pages of ended processes: %s", exc)

    def get(self, pid: int, drv: Driver, uid: int | None = None) -> ContextMemory:
        m = self.mems.get(pid)
        if m is None:
            if drv.tokenizer is None:
                raise SyscallError(Errno.EINVAL, "context memory needs a model with a tokenizer")
            m = self.mems[pid] = ContextMemory(pid, drv.tokenizer, drv.limits.max_model_len, self.store, uid)
        return m

    def peek(self, pid: int) -> ContextMemory | None:
        return self.mems.get(pid)

    def sync(self, pid: int, drv: Driver, window: list[int]) -> int:
        """Driver sequence := window (prefix kept); returns the tokens now pending."""
        m = self.mems.get(pid)
        reuse = m.settings.prefix_reuse if m is not None else True
        kept, re = sync_sequence(drv, pid, window, reuse)
        if m is not None:
            m.stats.prefill_tokens += len(window) - kept
            m.stats.reprefill_tokens += re
        return len(window) - kept

    async def release(self, pid: int) -> None:
        """The process ended: drop its table from RAM and (without retention) its rows from the store.

        A failed delete is logged, not raised: the next boot's sweep deletes them."""
        m = self.mems.pop(pid, None)
        if m is None or self.keep_ended:
            return
        try:
            async with m.lock:
                await self.store.delete(pid, m.uid)
        except (sqlite3.Error, SyscallError) as exc:
            log.warning("could not delete the pages of pid %d: %s", pid, exc)
