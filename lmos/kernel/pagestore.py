"""The swap store of context pages: SQLite tables in the kernel's journal.

Why the journal's database rather than a file of its own: a page-out must be
durable before the page leaves the window (an acknowledged page-out is never
lost), and the journal already gives one WAL database per state directory,
durable transactions run off the event loop (:meth:`Journal.write`) and pids
that never repeat across restarts, so rows keyed by ``(pid, page)`` can never be
confused between processes.  Token ids are stored as they were in the window
(little-endian uint32), so a page read back renders to exactly the same tokens.

A page is written whole once, when it is created; later writes (evicted,
paged in, moved) change its metadata only, and eviction adds its recall
postings (kernel/recall.py).  Tokens and text of a swapped page are read back
from here, in a worker thread, when it is paged in or recalled.  The store
quota (kernel/quota.py) is charged for a page's bytes when it is first written
and refunded when the rows of an ended process are deleted.
"""

from __future__ import annotations

import array
import sqlite3
import sys
import time
from collections.abc import Iterable
from typing import Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.kernel import recall
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


_INSERT = ("INSERT OR REPLACE INTO mem_pages(pid, page, pos, role, title, text, tokens, ntokens, state, "
           "pinned, last_use, nwords) VALUES(?,?,?,?,?,?,?,?,?,?,?,0)")
_META = "UPDATE mem_pages SET pos=?, state=?, pinned=?, last_use=?, nwords=? WHERE pid=? AND page=?"
_COLS = "page, pos, role, title, text, tokens, state, pinned, last_use"
ENDED = ("exited", "killed")  # process states whose pages nobody can use again (without retention)


def _page(r: tuple[Any, ...]) -> Page:
    return Page(id=r[0], pos=r[1], role=r[2], title=r[3], text=r[4], tokens=unpack_tokens(r[5]),
                state=PageState(r[6]), pinned=bool(r[7]), last_use=r[8], stored=True)


class PageStore:
    """Reads and durable writes of one kernel's pages and core memory."""

    def __init__(self, journal: Journal, quota: StoreQuota | None = None) -> None:
        self.journal = journal
        self.quota = quota  # the per-uid store quota shared with files and kv (kernel/quota.py)

    async def save(self, pid: int, pages: Iterable[Page], core: dict[str, str] | None = None,
                   uid: int | None = None) -> None:
        """Write ``pages`` (and, if given, the whole core memory) in one committed transaction.

        A page not yet stored is written whole; a stored one only its metadata,
        plus its recall postings when it is swapped (deleted when it is not).
        With ``uid`` (and a quota) the bytes new rows add are charged to that uid
        first: EDQUOT refuses the whole write, so nothing of it is stored.
        """
        pages = list(pages)
        now = time.time()

        def charge(c: sqlite3.Connection) -> None:
            if self.quota is None or uid is None:
                return
            delta = sum(page_bytes(len(p.tokens), p.text, p.title) for p in pages if not p.stored)
            if core is not None:
                delta += sum(text_bytes(k, v) for k, v in core.items())
                delta -= c.execute(f"SELECT COALESCE(SUM({CORE_BYTES}), 0) FROM mem_core WHERE pid=?",
                                   (pid,)).fetchone()[0]
            self.quota.charge(c, uid, delta, f"context memory of pid {pid}")

        def tx(c: sqlite3.Connection) -> None:
            charge(c)
            new = [p for p in pages if not p.stored]
            c.executemany(_INSERT, [(pid, p.id, p.pos, p.role, p.title, p.text, pack_tokens(p.tokens),
                                     len(p.tokens), p.state.value, int(p.pinned), p.last_use) for p in new])
            c.executemany("DELETE FROM mem_terms WHERE pid=? AND page=?", [(pid, p.id) for p in pages])
            for p in pages:
                nwords = 0
                if not p.resident:  # words of a page being swapped out: it still has its text here
                    terms, nwords = recall.postings(p.text)
                    c.executemany("INSERT INTO mem_terms(pid, term, page, tf) VALUES(?,?,?,?)",
                                  [(pid, t, p.id, n) for t, n in terms])
                c.execute(_META, (p.pos, p.state.value, int(p.pinned), p.last_use, nwords, pid, p.id))
            if core is not None:
                c.execute("DELETE FROM mem_core WHERE pid=?", (pid,))
                c.executemany("INSERT INTO mem_core(pid, name, value, mtime) VALUES(?,?,?,?)",
                              [(pid, k, v, now) for k, v in core.items()])

        if pages or core is not None:
            await self.journal.write(tx)
        for p in pages:
            p.stored = True

    async def fetch(self, pid: int, ids: list[int]) -> list[Page]:
        """The swapped pages ``ids`` of ``pid``, tokens and text read back (in a worker thread).

        ENOENT names the first id that is not a swapped page of ``pid``."""
        if not ids:
            return []
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows += await self.journal.aquery(
                f"SELECT {_COLS} FROM mem_pages WHERE pid=? AND state='swapped' AND page IN "
                f"({','.join('?' * len(chunk))})", (pid, *chunk))
        found = {r[0]: r for r in rows}
        for i in ids:
            if i not in found:
                raise SyscallError(Errno.ENOENT, f"no swapped page p{i} in pid {pid}")
        return [_page(found[i]) for i in ids]

    async def rank(self, pid: int, terms: list[str], k: int, min_score: float = 0.0,
                   margin: float = 0.0) -> list[tuple[int, float]]:
        """BM25 over the swapped pages of ``pid`` (kernel/recall.py), in a worker thread."""
        return await anyio.to_thread.run_sync(recall.rank, self.journal.query, pid, terms, k, min_score,
                                              margin)

    async def swapped(self, pid: int) -> list[tuple[int, int, str, str, int, bool, int]]:
        """The swapped pages of ``pid`` without their contents: (id, pos, role, title, tokens, pinned,
        last_use) in window order."""
        rows = await self.journal.aquery("SELECT page, pos, role, title, ntokens, pinned, last_use FROM "
                                         "mem_pages WHERE pid=? AND state='swapped' ORDER BY pos", (pid,))
        return [(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    async def delete(self, pid: int, uid: int | None) -> None:
        """Delete every page, posting and core field of ``pid`` and give their bytes back to ``uid``."""
        def tx(c: sqlite3.Connection) -> None:
            if self.quota is not None and uid is not None:
                n = c.execute(f"SELECT COALESCE(SUM({PAGE_BYTES}), 0) FROM mem_pages WHERE pid=?",
                              (pid,)).fetchone()[0]
                n += c.execute(f"SELECT COALESCE(SUM({CORE_BYTES}), 0) FROM mem_core WHERE pid=?",
                               (pid,)).fetchone()[0]
                self.quota.charge(c, uid, -n, f"context memory of pid {pid}")
            for table in ("mem_terms", "mem_pages", "mem_core"):
                c.execute(f"DELETE FROM {table} WHERE pid=?", (pid,))

        await self.journal.write(tx)

    def sweep_ended(self) -> int:
        """At boot: delete the pages of processes that ended under an earlier kernel (a crash between
        a process's end and the deletion, or a state directory from before deletion); their bytes go
        back to their owners.  Processes that were running at a crash keep theirs.  Returns how many
        processes had pages."""
        ended = f"SELECT pid FROM processes WHERE state IN ({','.join('?' * len(ENDED))})"

        def tx(c: sqlite3.Connection) -> int:
            pids = c.execute(f"SELECT pid FROM mem_pages WHERE pid IN ({ended}) UNION "
                             f"SELECT pid FROM mem_core WHERE pid IN ({ended})", (*ENDED, *ENDED)).fetchall()
            if not pids:
                return 0
            if self.quota is not None:
                for kind, table in ((PAGE_BYTES, "mem_pages"), (CORE_BYTES, "mem_core")):
                    for uid, n in c.execute(f"SELECT p.uid, SUM({kind}) FROM {table} m JOIN processes p ON "
                                            f"p.pid = m.pid WHERE p.state IN ({','.join('?' * len(ENDED))}) "
                                            "GROUP BY p.uid", ENDED).fetchall():
                        if uid is not None:
                            self.quota.charge(c, uid, -int(n or 0), "context memory of ended processes")
            for table in ("mem_terms", "mem_pages", "mem_core"):
                c.execute(f"DELETE FROM {table} WHERE pid IN ({ended})", ENDED)
            return len(pids)

        return self.journal.transaction_sync(tx)

    def load(self, pid: int) -> list[Page]:
        """The stored page table of ``pid`` in window order, contents included (blocking; for tests
        and tools, not the paging path)."""
        rows = self.journal.query(f"SELECT {_COLS} FROM mem_pages WHERE pid=? ORDER BY pos", (pid,))
        return [_page(r) for r in rows]

    def load_core(self, pid: int) -> dict[str, str]:
        rows = self.journal.query("SELECT name, value FROM mem_core WHERE pid=? ORDER BY name", (pid,))
        return {r[0]: r[1] for r in rows}
