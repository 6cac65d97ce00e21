"""Retention of the syscall journals of reaped processes, and what a failed journal write means.

Split from :mod:`lmos.kernel.sysjournal` (the group commit).  A reaped process's journal is
kept ``journal_keep_seconds`` and its bytes are charged to its owner's store quota
(:mod:`lmos.kernel.quota`); one that does not fit is deleted rather than refused, since the
process is gone already.  Expired journals are deleted and their bytes given back.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from lmos.errors import Errno, SyscallError
from lmos.kernel.journal import Journal
from lmos.kernel.quota import StoreQuota
from lmos.kernel.sysjournal_entry import ROW_BYTES

log = logging.getLogger("lmos.sysjournal")


def retain(c: sqlite3.Connection, quota: StoreQuota, keep_seconds: float, pid: int, uid: int) -> None:
    """Inside a transaction: keep the journal of reaped ``pid`` (charged to ``uid``) or delete it."""
    if keep_seconds <= 0:
        c.execute("DELETE FROM sysjournal WHERE pid=?", (pid,))
        return
    n = int(c.execute(f"SELECT COALESCE(SUM({ROW_BYTES}), 0) FROM sysjournal WHERE pid=?",
                      (pid,)).fetchone()[0])
    if n == 0:
        return
    try:
        quota.charge(c, uid, n, f"the journal of pid {pid}")
    except SyscallError as exc:
        log.info("journal of pid %d not kept: %s", pid, exc.message)
        c.execute("DELETE FROM sysjournal WHERE pid=?", (pid,))
        return
    c.execute("INSERT OR REPLACE INTO sysjournal_kept(pid, uid, bytes, until) VALUES(?,?,?,?)",
              (pid, uid, n, time.time() + keep_seconds))


def purge_expired(journal: Journal, quota: StoreQuota, when: float) -> int:
    """Delete the kept journals expired at ``when`` and give their bytes back; how many."""

    def tx(c: sqlite3.Connection) -> int:
        gone = c.execute("SELECT pid, uid, bytes FROM sysjournal_kept WHERE until <= ?", (when,)).fetchall()
        for pid, uid, n in gone:
            c.execute("DELETE FROM sysjournal WHERE pid=?", (pid,))
            c.execute("DELETE FROM sysjournal_kept WHERE pid=?", (pid,))
            quota.charge(c, uid, -int(n), f"the journal of pid {pid}")
        return len(gone)

    return journal.transaction_sync(tx)


def storage_error(exc: sqlite3.Error, what: str) -> SyscallError:
    """The errno a failed SQLite write means: ENOSPC (disk full), EROFS (read-only), else EIO."""
    text = str(exc).lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "full" in text:
        return SyscallError(Errno.ENOSPC, f"{what}: no space left on the device ({exc})")
    if code == sqlite3.SQLITE_READONLY or "readonly" in text or "read-only" in text:
        return SyscallError(Errno.EROFS, f"{what}: the state directory is read-only ({exc})")
    return SyscallError(Errno.EIO, f"{what}: {exc}")
