"""Recovery of a process's paged context (kernel/memory.py) after a crash.

Every page of a paged context is written to the store when it is made, and every
change of its state (evicted, paged in) before the change is acknowledged, so the
``mem_pages`` and ``mem_core`` rows of a process that was running at a crash hold
its whole page table.  When the recovered process goes live
(:func:`lmos.syscalls.recovery.go_live`), :func:`restore` rebuilds its
:class:`~lmos.kernel.memory.ContextMemory` from those rows: resident pages with
their tokens, each run of swapped pages as one stub (their tokens stay in the
store, as before the crash), the core memory, and the page and position counters.

The store can be one step ahead of the journal: the pages a generation added are
committed before its journal row, and a crash between the two leaves pages of a
step the program never saw.  The journal therefore records, with each paged
generation and each checkpoint, the next page id (``gen.mem_next``); pages from
that id on are deleted at recovery (their bytes given back to the quota), and the
program's repeated step adds them again.  What is not rebuilt: a page run's stub
after page-ins (the run is re-formed from the swapped pages that are left, so its
count may be smaller) and ``mem_ctl`` settings (the defaults apply again).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from lmos.drivers.base import Driver
from lmos.kernel.memmanager import MemoryManager
from lmos.kernel.memory import ContextMemory
from lmos.kernel.pages import Page, PageState, merge_runs
from lmos.kernel.pagestore import unpack_tokens
from lmos.kernel.quota import PAGE_BYTES

_COLS = "page, pos, role, title, text, tokens, state, pinned, last_use, ntokens"


async def restore(manager: MemoryManager, pid: int, drv: Driver, uid: int | None,
                  next_id: int | None, resident: set[int] | None = None) -> ContextMemory | None:
    """Rebuild ``pid``'s context memory from the store; None if it had none.

    ``next_id``: the first page id the journal does not vouch for (None: keep every page).
    ``resident``: the pages resident after the last step the journal holds (None: as stored);
    an eviction the unjournaled step made is undone with its pages."""
    store = manager.store
    journal = store.journal
    has = await journal.aquery("SELECT EXISTS(SELECT 1 FROM mem_pages WHERE pid=?), "
                               "EXISTS(SELECT 1 FROM mem_core WHERE pid=?)", (pid, pid))
    if not any(has[0]):
        return None
    if next_id is not None:
        cut = next_id

        def trim(c: sqlite3.Connection) -> None:
            if store.quota is not None and uid is not None:
                n = c.execute(f"SELECT COALESCE(SUM({PAGE_BYTES}), 0) FROM mem_pages "
                              "WHERE pid=? AND page >= ?", (pid, cut)).fetchone()[0]
                if n:
                    store.quota.charge(c, uid, -int(n), f"context memory of pid {pid}")
            c.execute("DELETE FROM mem_terms WHERE pid=? AND page >= ?", (pid, cut))
            c.execute("DELETE FROM mem_pages WHERE pid=? AND page >= ?", (pid, cut))

        await journal.write(trim)
    want = resident or set()
    # swapped pages without their contents (RAM keeps only their runs' stubs), unless they come back
    full = "state='resident'" + (f" OR page IN ({','.join(str(int(i)) for i in want)})" if want else "")
    rows = await journal.aquery(
        f"SELECT page, pos, role, title, CASE WHEN {full} THEN text ELSE '' END, "
        f"CASE WHEN {full} THEN tokens ELSE NULL END, state, pinned, last_use, ntokens "
        "FROM mem_pages WHERE pid=? ORDER BY pos", (pid,))
    core = store.load_core(pid)
    if not rows and not core:
        return None
    m = manager.get(pid, drv, uid)
    pages = [Page(id=r[0], pos=r[1], role=r[2], title=r[3], text=r[4] or "",
                  tokens=unpack_tokens(r[5]) if r[5] is not None else [], state=PageState(r[6]),
                  pinned=bool(r[7]), last_use=r[8], stored=True) for r in rows]
    if resident is not None:  # as the last journaled step left them; the next flush stores the change
        for p in pages:
            state = PageState.RESIDENT if p.id in resident else PageState.SWAPPED
            if state is not p.state and (state is PageState.SWAPPED or p.tokens):
                p.state = state
                m._dirty[p.id] = p
    swapped = [(p, r[9]) for p, r in zip(pages, rows, strict=True) if not p.resident]
    m.pages = merge_runs(list(pages))
    m.core = core
    m._core_tokens = None
    m._next_id = max((p.id for p in pages), default=0) + 1
    m._next_pos = max((p.pos for p in pages), default=0) + 1
    m.turn = max((p.last_use for p in pages), default=0)
    m.n_swapped = len(swapped)
    m.swapped_tokens = sum(int(n) for _, n in swapped)
    return m


def page_marks(manager: MemoryManager, pid: int) -> dict[str, Any]:
    """What a journal row records of ``pid``'s context memory after its step: the next page id and
    the resident pages ({} without a context memory)."""
    m = manager.peek(pid)
    if m is None:
        return {}
    return {"mem_next": m._next_id, "mem_resident": [p.id for p in m.resident()]}
