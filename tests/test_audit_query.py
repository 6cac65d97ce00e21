"""``audit_query`` and ``lmos audit``: filters, per-user scoping, the operator's view, table and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.cli.audit import parse_since
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys

ALICE, BOB = 5001, 5002  # neither is the operator (this test's own uid owns the in-memory kernel)
LMOS = "from lmos.cli import main; main()"


async def worker(sys: Sys, argv: list[str]) -> Any:
    """Some allowed calls, one refused (no ``mem`` capability), one failing (no such file)."""
    await sys.call("getpid")
    await sys.call("time")
    for call, args in (("mem_read", {}), ("fs_read", {"path": "/nope"})):
        try:
            await sys.call(call, **args)
        except SyscallError:
            pass
    return sys.pid


def query_as(k: Any, as_uid: int, caps: list[str], /, **args: Any) -> Any:
    async def q(sys: Sys, argv: list[str]) -> Any:
        try:
            r = await sys.call("audit_query", **args)
        except SyscallError as e:
            return e.errno.name
        return [(row.pid, row.uid, row.name, row.decision, row.errname, row.app) for row in r.rows], r.more

    return k.spawn(q, caps=caps, uid=as_uid)


async def run_query(k: Any, as_uid: int, caps: list[str], /, **args: Any) -> Any:
    w = await k.wait(await query_as(k, as_uid, caps, **args))
    assert w.exit_status == 0, w.error
    return w.result


@pytest.mark.anyio
async def test_filters_scoping_and_the_operator_view() -> None:
    async with kernel(ScriptedDriver("ok", max_model_len=256)) as k:
        t0 = time.time()
        a = (await k.wait(await k.spawn(worker, caps=["fs.read"], uid=ALICE))).result
        b = (await k.wait(await k.spawn(worker, caps=["fs.read"], uid=BOB))).result

        # a user sees their own rows only, and is refused another's rather than shown nothing
        rows, more = await run_query(k, ALICE, ["proc"])
        assert {r[1] for r in rows} == {ALICE} and not more
        assert {"getpid", "time", "mem_read", "fs_read"} <= {r[2] for r in rows if r[0] == a}
        assert await run_query(k, ALICE, ["proc"], uid=BOB) == "EPERM"
        assert await run_query(k, ALICE, ["llm"]) == "EPERM"  # without proc, no audit at all
        assert await run_query(k, ALICE, ["proc"], pid=b) == ([], False)  # Bob's pid: none of Alice's rows

        # filters: pid, refusals, syscall glob, time, limit
        rows, _ = await run_query(k, ALICE, ["proc"], pid=a, denied=True)
        assert [(r[2], r[3], r[4]) for r in rows] == [("mem_read", "deny", "EPERM")]
        rows, _ = await run_query(k, ALICE, ["proc"], pid=a, syscall="fs_*")
        assert [(r[2], r[3], r[4]) for r in rows] == [("fs_read", "error", "ENOENT")]
        rows, _ = await run_query(k, ALICE, ["proc"], pid=a, syscall="getpid")
        assert len(rows) == 1 and rows[0][5].startswith("py:worker")  # the app, from the processes table
        assert (await run_query(k, ALICE, ["proc"], pid=a, since=time.time() + 60))[0] == []
        assert len((await run_query(k, ALICE, ["proc"], pid=a, since=t0))[0]) >= 4
        rows, more = await run_query(k, ALICE, ["proc"], pid=a, limit=2)
        assert len(rows) == 2 and more
        assert [r[2] for r in rows] == ["mem_read", "fs_read"]  # the newest two, oldest first

        # the operator (this test's uid owns the in-memory kernel; and init) sees every user's rows
        me = os.getuid()
        rows, _ = await run_query(k, me, ["proc"], denied=True)
        assert {(r[0], r[1]) for r in rows} >= {(a, ALICE), (b, BOB)}
        rows, _ = await run_query(k, me, ["proc"], uid=BOB, syscall="mem_read")
        assert [(r[0], r[3]) for r in rows] == [(b, "deny")]
        assert k.sys is not None
        init_view = await k.sys.call(1, "audit_query", {"pid": b})
        assert {r.name for r in init_view.rows} >= {"getpid", "mem_read"}

        # the query is itself audited (and refused queries as denials)
        rows, _ = await run_query(k, ALICE, ["proc"], syscall="audit_query")
        assert any(r[3] == "allow" for r in rows) and any(r[3] == "deny" for r in rows)


def test_since_accepts_ages_dates_and_seconds() -> None:
    now = 1_800_000_000.0
    assert parse_since("10m", now) == now - 600
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1700000000", now) == 1_700_000_000
    assert parse_since("2026-11-29T17:00:00", now) > 1_700_000_000
    with pytest.raises(SyscallError) as e:
        parse_since("yesterday-ish", now)
    assert e.value.errno == Errno.EINVAL


def lmos(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LMOS, *args, "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=120)


def test_the_cli_prints_a_table_and_json(tmp_path: Path) -> None:
    state = tmp_path / "state"

    async def populate() -> int:
        async with kernel(ScriptedDriver("ok", max_model_len=256), state_dir=str(state)) as k:
            return int((await k.wait(await k.spawn(worker, caps=["fs.read"]))).result)

    pid = anyio.run(populate)
    out = lmos(state, "audit", "--pid", str(pid), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    names = [r["name"] for r in doc["rows"]]
    assert {"getpid", "mem_read", "fs_read"} <= set(names) and doc["more"] is False
    assert all(r["pid"] == pid for r in doc["rows"])
    table = lmos(state, "audit", "--pid", str(pid), "--denied")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TIME", "PID", "UID", "APP", "SYSCALL", "DECISION", "ERRNO", "CAP", "US"]
    assert len(lines) == 2 and "mem_read" in lines[1] and "deny" in lines[1] and "EPERM" in lines[1]
    bad = lmos(state, "audit", "--since", "someday")
    assert bad.returncode == 1 and "EINVAL" in bad.stderr and "Traceback" not in bad.stderr
