"""The state database's schema, as the migrations that build it (applied by :mod:`lmos.kernel.journal`).

Each entry upgrades the schema by one version (``PRAGMA user_version``).  Later issues append
entries; existing ones never change, so old state directories migrate forward, and a state
directory with a newer version than :data:`SCHEMA_VERSION` is refused at start.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE processes (
        pid INTEGER PRIMARY KEY, ppid INTEGER, uid INTEGER, app TEXT, argv TEXT, model TEXT,
        state TEXT, exit_status INTEGER, error TEXT, created REAL, ended REAL);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, pid INTEGER, uid INTEGER, name TEXT,
        cap TEXT, decision TEXT, errno INTEGER, duration_us INTEGER, digest TEXT);
    CREATE INDEX audit_pid ON audit(pid);
    """,
    # v2 (userland): the per-user virtual filesystem and the kv_get/kv_set store.
    """
    CREATE TABLE files (
        uid INTEGER NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, data BLOB,
        size INTEGER NOT NULL DEFAULT 0, owner INTEGER NOT NULL, tainted INTEGER NOT NULL DEFAULT 0,
        mtime REAL NOT NULL, PRIMARY KEY (uid, path));
    CREATE TABLE kvstore (
        uid INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, mtime REAL NOT NULL,
        PRIMARY KEY (uid, key));
    """,
    # v3 (context memory): swapped/resident context pages and core memory, per pid.
    """
    CREATE TABLE mem_pages (
        pid INTEGER NOT NULL, page INTEGER NOT NULL, pos INTEGER NOT NULL, role TEXT NOT NULL,
        title TEXT NOT NULL, text TEXT NOT NULL, tokens BLOB NOT NULL, ntokens INTEGER NOT NULL,
        state TEXT NOT NULL, pinned INTEGER NOT NULL, last_use INTEGER NOT NULL, PRIMARY KEY (pid, page));
    CREATE TABLE mem_core (
        pid INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, mtime REAL NOT NULL,
        PRIMARY KEY (pid, name));
    """,
    # v4 (security): a kv value written by a tainted process taints whoever reads it, like a file.
    """
    ALTER TABLE kvstore ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
    """,
    # v5 (paging frees memory): the recall index of swapped pages lives on disk, not in RAM
    # (kernel/recall.py): a page's content words and their counts, while it is swapped.
    """
    ALTER TABLE mem_pages ADD COLUMN nwords INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE mem_terms (
        pid INTEGER NOT NULL, term TEXT NOT NULL, page INTEGER NOT NULL, tf INTEGER NOT NULL,
        PRIMARY KEY (pid, term, page)) WITHOUT ROWID;
    """,
    # v6 (durable processes): the syscall journal, one row per completed syscall of a process, in
    # order (kernel/sysjournal.py); journals kept after their process was reaped, with their size
    # (charged to the owner's store quota) and when they expire; a process's capabilities and result.
    """
    CREATE TABLE sysjournal (
        pid INTEGER NOT NULL, step INTEGER NOT NULL, ts REAL NOT NULL, name TEXT NOT NULL,
        request BLOB NOT NULL, result BLOB, errno INTEGER NOT NULL, error TEXT NOT NULL, cap TEXT,
        decision TEXT NOT NULL, duration_us INTEGER NOT NULL, gen TEXT, prompt BLOB,
        tainted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (pid, step));
    CREATE TABLE sysjournal_kept (
        pid INTEGER PRIMARY KEY, uid INTEGER NOT NULL, bytes INTEGER NOT NULL, until REAL NOT NULL);
    CREATE INDEX sysjournal_kept_until ON sysjournal_kept(until);
    ALTER TABLE processes ADD COLUMN caps TEXT;
    ALTER TABLE processes ADD COLUMN result TEXT;
    """,
    # v7 (durable processes): a process's limits as spawned (token quota, priority, weight, wall time,
    # children), as JSON, so that a process recovered after a crash keeps them (syscalls/recovery.py).
    """
    ALTER TABLE processes ADD COLUMN limits TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
