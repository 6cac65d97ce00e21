"""The swap store of context pages: SQLite tables in the kernel's journal.

Why the journal's database rather than a file of its own: a page-out must be
durable before the page leaves the window (an acknowledged page-out is never
lost), and the journal already gives one WAL database per state directory,
durable transactions run off the event loop (:meth:`Journal.write`) and pids
that never repeat across restarts, so rows keyed by ``(pid, page)`` can never be
confused between processes.  Token ids are stored as they were in the window
(little-endian uint32), so a page read back renders to exactly the same tokens.
"""

from __future__ import annotations

import array
import sqlite3
import sys
import time
from collections.abc import Iterable

from lmos.kernel.journal import Journal
from lmos.kernel.pages import Page, PageState
from lmos.kernel.quota import CORE_BYTES, PAGE_BYTES, StoreQuota, page_bytes, text_bytes


def pack_tokens(ids: list[int]) -> bytes:
    a = array.array("I", ids)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def unpack_tokens(blob: bytes) -> list[int]:
    a = array.array("I")
    a.frombytes(blob)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


_UPSERT = ("INSERT INTO mem_pages(pid, page, pos, role, title, text, tokens, ntokens, state, pinned, "
           "last_use) VALUES(?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(pid, page) DO UPDATE SET pos=excluded.pos, "
           "role=excluded.role, title=excluded.title, text=excluded.text, tokens=excluded.tokens, "
           "ntokens=excluded.ntokens, state=excluded.state, pinned=excluded.pinned, "
           "last_use=excluded.last_use")


class PageStore:
    """Reads and durable writes of one kernel's pages and core memory."""

    def __init__(self, journal: Journal, quota: StoreQuota | None = None) -> None:
        self.journal = journal
        self.quota = quota  # the per-uid store quota shared with files and kv (kernel/quota.py)

    @staticmethod
    def _row(pid: int, p: Page) -> tuple[object, ...]:
        return (pid, p.id, p.pos, p.role, p.title, p.text, pack_tokens(p.tokens), len(p.tokens),
                p.state.value, int(p.pinned), p.last_use)

    async def save(self, pid: int, pages: Iterable[Page], core: dict[str, str] | None = None,
                   uid: int | None = None) -> None:
        """Write ``pages`` (and, if given, the whole core memory) in one committed transaction.

        With ``uid`` (and a quota) the bytes they add are charged to that uid first: EDQUOT
        refuses the whole write, so nothing of it is stored."""
        pages = list(pages)
        rows = [self._row(pid, p) for p in pages]
        now = time.time()

        def charge(c: sqlite3.Connection) -> None:
            if self.quota is None or uid is None:
                return
            delta = sum(page_bytes(len(p.tokens), p.text, p.title) for p in pages)
            ids = [p.id for p in pages]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                delta -= c.execute(f"SELECT COALESCE(SUM({PAGE_BYTES}), 0) FROM mem_pages WHERE pid=? AND "
                                   f"page IN ({marks})", (pid, *chunk)).fetchone()[0]
            if core is not None:
                delta += sum(text_bytes(k, v) for k, v in core.items())
                delta -= c.execute(f"SELECT COALESCE(SUM({CORE_BYTES}), 0) FROM mem_core WHERE pid=?",
                                   (pid,)).fetchone()[0]
            self.quota.charge(c, uid, delta, f"context memory of pid {pid}")

        def tx(c: sqlite3.Connection) -> None:
            charge(c)
            if rows:
                c.executemany(_UPSERT, rows)
            if core is not None:
                c.execute("DELETE FROM mem_core WHERE pid=?", (pid,))
                c.executemany("INSERT INTO mem_core(pid, name, value, mtime) VALUES(?,?,?,?)",
                              [(pid, k, v, now) for k, v in core.items()])

        if rows or core is not None:
            await self.journal.write(tx)

    def load(self, pid: int) -> list[Page]:
        """The stored page table of ``pid`` in window order (blocking; small)."""
        rows = self.journal.query(
            "SELECT page, pos, role, title, text, tokens, state, pinned, last_use FROM mem_pages "
            "WHERE pid=? ORDER BY pos", (pid,))
        return [Page(id=r[0], pos=r[1], role=r[2], title=r[3], text=r[4], tokens=unpack_tokens(r[5]),
                     state=PageState(r[6]), pinned=bool(r[7]), last_use=r[8]) for r in rows]

    def load_core(self, pid: int) -> dict[str, str]:
        rows = self.journal.query("SELECT name, value FROM mem_core WHERE pid=? ORDER BY name", (pid,))
        return {r[0]: r[1] for r in rows}
