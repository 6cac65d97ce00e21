"""Installed apps, persisted in the state directory's database.

The kernel stores what the operator installed as opaque records: a name, a
version, a content hash, the manifest text, the app's files and the
capabilities granted at install.  What those mean (parsing the manifest,
compiling the code, building the runnable app) is the business of the layers
above; keeping the kernel ignorant of it is what lets it never import them.

Why a table of its own created here rather than a journal migration: the app
store is optional state that other features never join against, and
``CREATE TABLE IF NOT EXISTS`` lets an older state directory gain it on first
use without renumbering the journal's ordered migrations.

Every change is a durable write (:meth:`Journal.write`): when ``put`` or
``delete`` returns, the change is committed with ``synchronous=FULL``, so an
acknowledged install survives a crash, and a failed one leaves nothing behind.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import msgspec

from lmos.kernel.journal import Journal

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY, version TEXT NOT NULL, hash TEXT NOT NULL, manifest TEXT NOT NULL,
    files TEXT NOT NULL, caps TEXT NOT NULL, trusted INTEGER NOT NULL, installed_by INTEGER NOT NULL,
    installed_at REAL NOT NULL)
"""
COLUMNS = "name, version, hash, manifest, files, caps, trusted, installed_by, installed_at"


class AppRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One installed app, as stored."""

    name: str
    version: str
    hash: str  # sha256 hex of the canonical file set
    manifest: str  # the text of app.toml
    files: dict[str, str]  # relative path -> UTF-8 text (app.toml included)
    caps: list[str]  # granted at install: exactly what the running app gets
    trusted: bool = False  # granted in-process Python (entry.kind = "python")
    installed_by: int = 0  # uid
    installed_at: float = 0.0  # unix time


class AppDB:
    """The ``apps`` table of one journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        journal.transaction_sync(lambda c: c.execute(SCHEMA))

    def all(self) -> list[AppRecord]:
        rows = self.journal.query(f"SELECT {COLUMNS} FROM apps ORDER BY name")
        return [_record(r) for r in rows]

    def get(self, name: str) -> AppRecord | None:
        rows = self.journal.query(f"SELECT {COLUMNS} FROM apps WHERE name=?", (name,))
        return _record(rows[0]) if rows else None

    async def put(self, rec: AppRecord) -> AppRecord:
        """Insert or replace ``rec`` (stamped with the time now); returns once committed."""
        rec = msgspec.structs.replace(rec, installed_at=rec.installed_at or time.time())
        params = (rec.name, rec.version, rec.hash, rec.manifest, json.dumps(rec.files, sort_keys=True),
                  json.dumps(sorted(rec.caps)), int(rec.trusted), rec.installed_by, rec.installed_at)

        def write(c: sqlite3.Connection) -> None:
            c.execute(f"INSERT OR REPLACE INTO apps({COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?)", params)

        await self.journal.write(write)
        return rec

    async def delete(self, name: str) -> bool:
        """Remove ``name``; True if it was there.  Returns once committed."""

        def write(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM apps WHERE name=?", (name,)).rowcount > 0

        return await self.journal.write(write)


def _record(r: tuple[Any, ...]) -> AppRecord:
    return AppRecord(name=str(r[0]), version=str(r[1]), hash=str(r[2]), manifest=str(r[3]),
                     files=json.loads(str(r[4])), caps=json.loads(str(r[5])), trusted=bool(r[6]),
                     installed_by=int(r[7]), installed_at=float(r[8]))
