"""One store quota per uid: files, kv values and context-memory pages together.

Everything a user's processes leave in the kernel's database counts against
one budget (``MAX_STORE_BYTES`` by default): file contents, kv keys and values,
the syscall journals kept after their process ended (kernel/sysjournal.py),
and the pages and core memory of context memory (which outlive their process:
a page-out must stay readable).  Separate limits per kind would let one user
fill the disk by spreading over the kinds, or by starting process after
process that each page out a full context.  Past the budget a write fails with
EDQUOT and says what would have been stored and how much is in use.

Usage is counted in memory, per uid, and loaded once from the database (the
first charge), so a check costs a dict lookup rather than a scan.  Every
charge happens inside a journal transaction, which the journal serialises, so
the counts need no lock of their own; the charge is the last step before the
write it pays for, so a refused write changes nothing.  Deletions give bytes
back; kv and file deletes are counted by what the row held.
"""

from __future__ import annotations

import sqlite3

from lmos.errors import Errno, SyscallError

MAX_STORE_BYTES = 64 << 20  # per uid: files + kv + context pages

# Bytes of a row, as SQL: text is counted as UTF-8, token ids as 4 bytes each.
KV_BYTES = "length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))"
PAGE_BYTES = "4 * ntokens + length(CAST(text AS BLOB)) + length(CAST(title AS BLOB))"
CORE_BYTES = "length(CAST(name AS BLOB)) + length(CAST(value AS BLOB))"


def page_bytes(ntokens: int, text: str, title: str) -> int:
    raw = len(text.encode("utf-8", "surrogatepass")) + len(title.encode("utf-8", "surrogatepass"))
    return 4 * ntokens + raw


def text_bytes(*parts: str) -> int:
    return sum(len(p.encode("utf-8", "surrogatepass")) for p in parts)


class StoreQuota:
    """Bytes each uid keeps in the store, against one limit."""

    def __init__(self, limit: int = MAX_STORE_BYTES) -> None:
        self.limit = limit
        self._used: dict[int, int] | None = None

    def _load(self, c: sqlite3.Connection) -> dict[int, int]:
        used: dict[int, int] = {}

        def add(rows: list[tuple[int | None, int | None]]) -> None:
            for uid, n in rows:
                if uid is not None:
                    used[uid] = used.get(uid, 0) + int(n or 0)

        add(c.execute("SELECT uid, SUM(size) FROM files GROUP BY uid").fetchall())
        add(c.execute(f"SELECT uid, SUM({KV_BYTES}) FROM kvstore GROUP BY uid").fetchall())
        add(c.execute(f"SELECT p.uid, SUM({PAGE_BYTES}) FROM mem_pages m JOIN processes p ON p.pid = m.pid "
                      "GROUP BY p.uid").fetchall())
        add(c.execute(f"SELECT p.uid, SUM({CORE_BYTES}) FROM mem_core m JOIN processes p ON p.pid = m.pid "
                      "GROUP BY p.uid").fetchall())
        add(c.execute("SELECT uid, SUM(bytes) FROM sysjournal_kept GROUP BY uid").fetchall())
        return used

    def used(self, c: sqlite3.Connection, uid: int) -> int:
        if self._used is None:
            self._used = self._load(c)
        return self._used.get(uid, 0)

    def charge(self, c: sqlite3.Connection, uid: int, delta: int, what: str) -> None:
        """Account ``delta`` bytes to ``uid`` (inside a transaction); EDQUOT if it would pass the limit."""
        now = self.used(c, uid)
        if delta > 0 and now + delta > self.limit:
            raise SyscallError(Errno.EDQUOT, f"{what} needs {delta} more bytes, but uid {uid} already stores "
                               f"{now} of its {self.limit}-byte quota (files, kv values and context pages "
                               f"together)")
        assert self._used is not None
        self._used[uid] = max(0, now + delta)
