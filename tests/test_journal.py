"""State directory: exclusive lock, schema version, pids never repeat, durable writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from kutil import kernel

from lmos.errors import Errno, SyscallError
from lmos.kernel.journal import PID_CHUNK, SCHEMA_VERSION, Journal

pytestmark = pytest.mark.anyio


async def test_state_dir_is_locked_and_pids_never_repeat(tmp_path: Path) -> None:
    d = str(tmp_path / "state")
    async with kernel(state_dir=d) as k:
        first = (await k.complete("a", max_tokens=2)).pid
        with pytest.raises(SyscallError) as ei:
            async with kernel(state_dir=d):
                pass
        assert ei.value.errno is Errno.EBUSY
    async with kernel(state_dir=d) as k:
        second = (await k.complete("b", max_tokens=2)).pid
        assert second > first
        rows = k.core.journal.query("SELECT pid, app, state, exit_status FROM processes ORDER BY pid")
        assert rows[0] == (first, "llm.complete", "exited", 0)


async def test_schema_version_and_wal(tmp_path: Path) -> None:
    j = Journal.open(str(tmp_path))
    assert j.schema_version == SCHEMA_VERSION
    assert j.query("PRAGMA journal_mode")[0][0] == "wal"
    j.close()
    conn = sqlite3.connect(tmp_path / "lmos.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(SyscallError) as ei:
        Journal.open(str(tmp_path))
    assert ei.value.errno is Errno.EINVAL


async def test_durable_write_survives_reopen(tmp_path: Path) -> None:
    j = Journal.open(str(tmp_path))
    await j.write(lambda c: c.execute("INSERT INTO meta(key, value) VALUES('k', 'v')"))
    # simulate a crash: no close(), no flush of queued writes; a new process opens the database
    other = sqlite3.connect(tmp_path / "lmos.db")
    assert other.execute("SELECT value FROM meta WHERE key='k'").fetchone() == ("v",)
    other.close()
    j.close()


def test_pid_allocation_spans_chunks(tmp_path: Path) -> None:
    j = Journal.open(str(tmp_path))
    pids = [j.alloc_pid() for _ in range(PID_CHUNK + 5)]
    j.close()
    j = Journal.open(str(tmp_path))
    assert j.alloc_pid() > max(pids)
    assert len(set(pids)) == len(pids)
    j.close()
