"""The syscall journal: rows in order, the durability point, generation records, failure, retention."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from kutil import kernel

from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.kernel import sysjournal
from lmos.kernel.journal import MIGRATIONS, SCHEMA_VERSION, Journal
from lmos.kernel.sysjournal import ROW_BYTES
from lmos.syscalls.client import Sys
from lmos.syscalls.journaled import unpack_ids

pytestmark = pytest.mark.anyio


def rows(db: Path, pid: int) -> list[tuple[Any, ...]]:
    """The journal of ``pid`` as another connection sees it: only what is committed."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT step, name, request, result, errno, error, decision, cap, gen, prompt "
                            "FROM sysjournal WHERE pid=? ORDER BY step", (pid,)).fetchall()
    finally:
        conn.close()


async def test_every_syscall_in_order_durable_before_the_program_sees_it(tmp_path: Path) -> None:
    db = tmp_path / "lmos.db"
    seen: list[int] = []  # journal rows committed when the program had each result

    async def prog(sys: Sys, argv: list[str]) -> str:
        me = sys.pid
        await sys.kv_set("color", "blue")
        seen.append(len(rows(db, me)))
        assert await sys.kv_get("color") == "blue"
        seen.append(len(rows(db, me)))
        with pytest.raises(SyscallError):
            await sys.fs_read("/missing")
        seen.append(len(rows(db, me)))
        with pytest.raises(SyscallError):  # no mem capability: refused, and journaled as a denial
            await sys.mem_read()
        seen.append(len(rows(db, me)))
        r = await sys.llm_generate("hello", max_tokens=4)
        seen.append(len(rows(db, me)))
        return r.text

    async with kernel(ScriptedDriver("cycle"), state_dir=str(tmp_path)) as k:
        assert k.core.sysjournal is not None  # on by default with an on-disk state directory
        pid = await k.spawn(prog, caps=["llm", "kv", "fs.read"])
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
    assert seen == [1, 2, 3, 4, 5]  # each result was on disk before the program got it
    got = rows(db, pid)
    assert [r[1] for r in got] == ["kv_set", "kv_get", "fs_read", "mem_read", "llm_generate"]
    assert [r[0] for r in got] == [0, 1, 2, 3, 4]
    assert json.loads(got[0][2]) == {"key": "color", "value": "blue"}
    assert json.loads(got[1][3])["value"] == "blue"
    assert (got[2][4], got[2][3], got[2][6]) == (int(Errno.ENOENT), None, "error")
    assert "/missing" in got[2][5]
    assert (got[3][4], got[3][6], got[3][7]) == (int(Errno.EPERM), "deny", "mem")


async def test_generation_rows_hold_prompt_ranges_and_tokens(tmp_path: Path) -> None:
    drv = ScriptedDriver("cycle")

    async def prog(sys: Sys, argv: list[str]) -> Any:
        a = await sys.llm_generate("hello", max_tokens=5)
        b = await sys.llm_generate(" again", max_tokens=3)
        c = await sys.llm_generate("fresh", max_tokens=2, reset=True)
        return [a.token_ids, b.token_ids, c.token_ids]

    async with kernel(drv, state_dir=str(tmp_path)) as k:
        pid = await k.spawn(prog)
        w = await k.wait(pid)
    outs = w.result
    got = rows(tmp_path / "lmos.db", pid)
    gens = [json.loads(r[8]) for r in got]
    prompts = [unpack_ids(r[9]) for r in got]
    enc = drv.tokenizer.encode
    assert prompts == [enc("hello"), enc(" again"), enc("fresh")]
    assert [json.loads(r[3])["token_ids"] for r in got] == outs  # the tokens produced
    # where each prompt lies in the context: after everything before it (none after a reset)
    assert [g["base"] for g in gens] == [0, 5 + len(outs[0]), 0]
    assert [g["context_tokens"] for g in gens] == [5, 5 + len(outs[0]) + 6, 5]
    assert gens[2]["reset"] is True
    assert all(len(g["context_hash"]) == 16 for g in gens)


async def test_journal_off_and_default_by_state_dir(tmp_path: Path) -> None:
    async def prog(sys: Sys, argv: list[str]) -> None:
        await sys.call("getpid")

    async with kernel(state_dir=":memory:") as k:  # nothing on disk: off unless asked for
        assert k.core.sysjournal is None
    async with kernel(state_dir=":memory:", journal=True) as k:
        pid = await k.spawn(prog)
        await k.wait(pid)
        assert k.core.journal.query("SELECT name FROM sysjournal WHERE pid=?", (pid,)) == [("getpid",)]
    async with kernel(state_dir=str(tmp_path), journal=False) as k:
        assert k.core.sysjournal is None
        pid = await k.spawn(prog)
        await k.wait(pid)
        assert k.core.journal.query("SELECT count(*) FROM sysjournal") == [(0,)]


async def test_a_failed_commit_fails_the_syscall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full while journaling: the program gets ENOSPC, never a result the journal lacks."""
    full = {"on": False}
    orig = sysjournal.SysJournal._ride

    def ride(self: sysjournal.SysJournal, c: sqlite3.Connection) -> object:
        if full["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return orig(self, c)

    def commit(self: sysjournal.SysJournal, batches: Any, reaped: Any) -> None:
        if full["on"]:
            raise sysjournal.storage_error(sqlite3.OperationalError("database or disk is full"), "journal")
        return orig_commit(self, batches, reaped)

    orig_commit = sysjournal.SysJournal._commit
    monkeypatch.setattr(sysjournal.SysJournal, "_ride", ride)
    monkeypatch.setattr(sysjournal.SysJournal, "_commit", commit)

    async def prog(sys: Sys, argv: list[str]) -> Any:
        await sys.call("getpid")
        full["on"] = True
        try:
            await sys.call("time")
        except SyscallError as exc:
            return exc.errno.name, exc.message
        finally:
            full["on"] = False
        return "ok"

    async with kernel(state_dir=str(tmp_path)) as k:
        pid = await k.spawn(prog)
        w = await k.wait(pid)
        names = k.core.journal.query("SELECT name FROM sysjournal WHERE pid=? ORDER BY step", (pid,))
    errname, message = w.result
    assert errname == "ENOSPC" and "no space" in message
    assert ("time",) not in names and names[0] == ("getpid",)


async def test_retention_charges_the_owner_and_expires(tmp_path: Path) -> None:
    async def prog(sys: Sys, argv: list[str]) -> None:
        for i in range(5):
            await sys.kv_set(f"k{i}", "v" * 100)

    async with kernel(state_dir=str(tmp_path), journal_keep_seconds=3600) as k:
        core = k.core
        sj = core.sysjournal
        pid = await k.spawn(prog, caps=["kv"], uid=4242)
        await k.wait(pid)  # reaped here
        await sj.commit_now()
        kept = core.journal.query("SELECT uid, bytes, until FROM sysjournal_kept WHERE pid=?", (pid,))
        assert kept and kept[0][0] == 4242
        size = core.journal.query(f"SELECT SUM({ROW_BYTES}) FROM sysjournal WHERE pid=?", (pid,))[0][0]
        assert kept[0][1] == size > 500
        assert kept[0][2] > time.time() + 3000
        used = core.journal.transaction_sync(lambda c: core.quota.used(c, 4242))
        kv_bytes = 5 * (2 + 100)
        assert used == kv_bytes + size  # the journal counts against the owner's store quota
        assert sj.purge_expired(now=time.time() + 7200) == 1
        assert core.journal.query("SELECT count(*) FROM sysjournal WHERE pid=?", (pid,)) == [(0,)]
        assert core.journal.transaction_sync(lambda c: core.quota.used(c, 4242)) == kv_bytes
    # the quota counts kept journals after a restart too (loaded from the table)
    async with kernel(state_dir=str(tmp_path), journal_keep_seconds=3600) as k:
        pid2 = await k.spawn(prog, caps=["kv"], uid=4243)
        await k.wait(pid2)
        await k.core.sysjournal.commit_now()
    async with kernel(state_dir=str(tmp_path)) as k:
        core = k.core
        size2 = core.journal.query("SELECT bytes FROM sysjournal_kept WHERE pid=?", (pid2,))[0][0]
        assert core.journal.transaction_sync(lambda c: core.quota.used(c, 4243)) == 5 * (2 + 100) + size2


async def test_no_retention_and_journal_over_quota_are_deleted(tmp_path: Path) -> None:
    async def prog(sys: Sys, argv: list[str]) -> None:
        await sys.call("getpid")

    async with kernel(state_dir=str(tmp_path), journal_keep_seconds=0) as k:
        pid = await k.spawn(prog)
        await k.wait(pid)
        await k.core.sysjournal.commit_now()
        assert k.core.journal.query("SELECT count(*) FROM sysjournal WHERE pid=?", (pid,)) == [(0,)]
    async with kernel(state_dir=str(tmp_path)) as k:
        k.core.quota.limit = 10  # no room: the journal of a reaped process is dropped, not refused
        pid = await k.spawn(prog)
        await k.wait(pid)
        await k.core.sysjournal.commit_now()
        assert k.core.journal.query("SELECT count(*) FROM sysjournal WHERE pid=?", (pid,)) == [(0,)]
        assert k.core.journal.query("SELECT count(*) FROM sysjournal_kept") == [(0,)]


async def test_many_processes_share_group_commits(tmp_path: Path) -> None:
    async def prog(sys: Sys, argv: list[str]) -> None:
        for _ in range(5):
            await sys.call("getpid")

    async with kernel(state_dir=str(tmp_path)) as k:
        pids = [await k.spawn(prog) for _ in range(40)]
        for pid in pids:
            await k.wait(pid)
        sj = k.core.sysjournal
        assert sj.rows == 200
        assert sj.commits < 100  # 200 rows, far fewer transactions
        steps = k.core.journal.query("SELECT pid, group_concat(step) FROM sysjournal GROUP BY pid")
    assert sorted(s for _, s in steps) == ["0,1,2,3,4"] * 40


def test_schema_v5_migrates_to_the_journal(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "lmos.db")
    for v, script in enumerate(MIGRATIONS[:5]):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version={v + 1}")
    conn.execute("INSERT INTO processes(pid, uid, app, state) VALUES(7, 1, 'old', 'exited')")
    conn.commit()
    conn.close()
    j = Journal.open(str(tmp_path))
    try:
        assert j.schema_version == SCHEMA_VERSION >= 6
        assert j.query("SELECT app, caps, result FROM processes WHERE pid=7") == [("old", None, None)]
        assert j.query("SELECT count(*) FROM sysjournal") == [(0,)]
    finally:
        j.close()


def test_a_newer_state_directory_is_refused_naming_both_versions(tmp_path: Path) -> None:
    Journal.open(str(tmp_path)).close()
    conn = sqlite3.connect(tmp_path / "lmos.db")
    conn.execute("UPDATE meta SET value='9.9.0' WHERE key='lmos_version'")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SyscallError) as ei:
        Journal.open(str(tmp_path))
    assert ei.value.errno is Errno.EINVAL
    msg = ei.value.message
    assert f"schema v{SCHEMA_VERSION + 1} (written by lmos 9.9.0)" in msg
    assert f"(schema v{SCHEMA_VERSION})" in msg and "this lmos 0." in msg
