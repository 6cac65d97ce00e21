"""Recovery by replay: a crash is simulated by copying the committed state of a running kernel.

A copy of the database made through SQLite's backup API holds exactly what a
kill -9 would leave: committed rows only.  A kernel booted on the copy recovers
the processes the original was still running.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from kutil import kernel

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.table import AppSpec
from lmos.syscalls.tool import Tool

pytestmark = pytest.mark.anyio
mode = {"flip": False}
gate: dict[str, anyio.Event] = {}


async def worker(sys: Sys, argv: list[str]) -> Any:
    tag = argv[0]
    await sys.kv_set(f"{tag}-start", "1")
    a = await sys.llm_generate(f"first {tag}", max_tokens=4)
    b = await sys.llm_generate(f" second {tag}", max_tokens=30)  # slow: the crash comes during this one
    await sys.fs_write(f"/out-{tag}.txt", a.text + "|" + b.text, mode="append")
    return {"a": a.text, "b": b.text, "t": (await sys.time()).wall > 0}


async def diverger(sys: Sys, argv: list[str]) -> Any:
    await sys.kv_get("other" if mode["flip"] else "d-start")
    await sys.llm_generate("go", max_tokens=30)  # the crash comes during this one
    return "done"


async def effector(sys: Sys, argv: list[str]) -> Any:
    await sys.call("getpid")
    try:
        return await sys.tool_call("launch", {})
    except SyscallError as exc:
        return exc.errno.name


async def turns(sys: Sys, argv: list[str]) -> Any:
    """A long-lived loop that checkpoints each turn (docs/durability.md, checkpoints)."""
    state = (await sys.call("restore")).state or {"turn": 0, "said": []}
    while state["turn"] < 6:
        r = await sys.llm_generate(f" turn {state['turn']}:", max_tokens=20)
        await sys.kv_set(f"turn{state['turn']}", r.text)
        state = {"turn": state["turn"] + 1, "said": [*state["said"], r.text]}
        await sys.call("checkpoint", state=state)
    return state["said"]


async def launch(ctx: Any, args: dict[str, Any]) -> str:
    await gate["launch"].wait()  # the crash comes while the effect runs
    return "launched"


def setup(k: lmos.Kernel) -> None:
    k.programs.register(AppSpec("t.worker", worker, frozenset({"llm", "kv", "fs.read", "fs.write"})))
    k.programs.register(AppSpec("t.diverger", diverger, frozenset({"llm", "kv"})))
    k.programs.register(AppSpec("t.effector", effector, frozenset({"tool:launch"})))
    k.programs.register(AppSpec("t.turns", turns, frozenset({"llm", "kv"})))
    k.tools.register(Tool("launch", "Launch the rocket (an external effect).", {"type": "object",
                                                                             "properties": {}}, launch))


def crash_copy(src: Path, dst: Path) -> None:
    """What a kill -9 of the kernel on ``src`` would leave: the committed database."""
    dst.mkdir()
    a, b = sqlite3.connect(src / "lmos.db"), sqlite3.connect(dst / "lmos.db")
    a.backup(b)
    a.close()
    b.close()


def rows(k: lmos.Kernel, pid: int) -> int:
    return int(k.core.journal.query("SELECT count(*) FROM sysjournal WHERE pid=? AND errno != -1",
                                    (pid,))[0][0])


def drv() -> ScriptedDriver:
    # the reply is a function of the whole context the model sees, as a real model's is
    return ScriptedDriver(lambda window: f"<{len(window)}:{window[-7:][::-1]}>", step_delay=0.02)


def booted(state: Path) -> lmos.Kernel:
    k = kernel(drv(), state_dir=str(state))
    setup(k)  # apps and tools before boot, as installed ones are: recovery runs at boot
    return k


async def reference(tmp_path: Path, tags: list[str]) -> dict[str, Any]:
    async with booted(tmp_path / "ref") as k:
        out = {}
        for t in tags:
            w = await k.wait(await k.spawn("t.worker", [t]))
            assert w.exit_status == 0, w.error
            out[t] = w.result
        return out


async def test_unfinished_processes_go_on_identically(tmp_path: Path) -> None:
    tags = ["x", "y", "z"]
    want = await reference(tmp_path, tags)
    async with booted(tmp_path / "a") as k:
        pids = {t: await k.spawn("t.worker", [t]) for t in tags}
        with anyio.fail_after(20):
            while any(rows(k, pid) < 2 for pid in pids.values()):  # kv_set and the first reply done
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # well into the second generation
        crash_copy(tmp_path / "a", tmp_path / "b")
    async with booted(tmp_path / "b") as k:
        report = k.recovered
        assert sorted(r["pid"] for r in report) == sorted(pids.values())
        assert all(r["recovered"] and r["step"] == 2 for r in report)
        got = {}
        for t, pid in pids.items():
            w = await k.wait(pid)
            assert w.exit_status == 0, w.error
            got[t] = w.result
            # the file written once; the first reply replayed, not regenerated
            assert (await k.syscall("fs_read", path=f"/out-{t}.txt")).data == w.result["a"] + "|" + \
                w.result["b"]
        assert got == want
        r = msgspec.to_builtins(await k.syscall("proc_replay", pid=pids["x"]))
        assert r["verified"], r["reason"]
        audit = k.core.journal.query("SELECT cap FROM audit WHERE name='recovered' AND pid=?", (pids["x"],))
        assert audit == [("recovered at step 2",)]


async def test_a_diverging_program_is_not_recoverable(tmp_path: Path) -> None:
    mode["flip"] = False
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.diverger")
        with anyio.fail_after(20):
            while rows(k, pid) < 1:
                await anyio.sleep(0.01)
        crash_copy(tmp_path / "a", tmp_path / "b")
    mode["flip"] = True  # the program asks for another key than it did before the crash
    try:
        async with booted(tmp_path / "b") as k:
            w = await k.wait(pid)
    finally:
        mode["flip"] = False
    assert w.exit_status == 1 and w.errno == 131
    assert w.error.startswith("ENOTRECOVERABLE: step 0: the recovered program made kv_get")
    assert "other" in w.error and "d-start" in w.error


async def test_an_effect_in_flight_is_reported_not_repeated(tmp_path: Path) -> None:
    gate["launch"] = anyio.Event()
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.effector")
        with anyio.fail_after(20):  # the in-flight row is durable before the tool starts
            while not k.core.journal.query("SELECT 1 FROM sysjournal WHERE pid=? AND errno=-1", (pid,)):
                await anyio.sleep(0.01)
        crash_copy(tmp_path / "a", tmp_path / "b")
        gate["launch"].set()
        assert (await k.wait(pid)).result == "launched"
    gate["launch"] = anyio.Event()  # were it run again, it would hang here
    async with booted(tmp_path / "b") as k:
        assert [r["step"] for r in k.recovered] == [2]
        with anyio.fail_after(10):
            w = await k.wait(pid)
        assert w.result == "EINPROGRESS"
        steps = k.core.journal.query("SELECT step, name, errno FROM sysjournal WHERE pid=? ORDER BY step",
                                     (pid,))
        assert steps[1] == (1, "tool_call", 115)  # the unknown outcome is what the journal says now


async def test_lost_processes_are_reported_and_the_others_recover(tmp_path: Path) -> None:
    async with booted(tmp_path / "a") as k:
        pids = [await k.spawn("t.worker", [t]) for t in ("p", "q")]
        with anyio.fail_after(20):
            while any(rows(k, pid) < 2 for pid in pids):
                await anyio.sleep(0.01)
        crash_copy(tmp_path / "a", tmp_path / "b")
    db = sqlite3.connect(tmp_path / "b" / "lmos.db")
    db.execute("UPDATE sysjournal SET result=x'7b7b' WHERE pid=? AND step=1", (pids[0],))
    db.commit()
    db.close()
    async with booted(tmp_path / "b") as k:
        report = {r["pid"]: r for r in k.recovered}
        assert not report[pids[0]]["recovered"]
        assert report[pids[0]]["reason"].startswith("step 1: corrupted journal row (llm_generate")
        assert report[pids[1]]["recovered"]
        assert (await k.wait(pids[1])).exit_status == 0
        state, error = k.core.journal.query("SELECT state, error FROM processes WHERE pid=?", (pids[0],))[0]
        assert state == "lost" and "corrupted journal row" in error
    # lmos ps --all shows both: the lost one with its reason, the recovered one with its step
    env = {**os.environ, "LMOS_HOME": str(tmp_path / "b")}
    env.pop("LMOS_STATE_DIR", None)
    out = subprocess.run([sys.executable, "-c", "from lmos.cli import main; main()", "ps", "--all", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    procs = {p["pid"]: p for p in json.loads(out.stdout)}
    lost, back = procs[pids[0]], procs[pids[1]]
    assert lost["state"] == "lost" and lost["error"].startswith("lost at recovery: step 1: corrupted")
    assert (back["state"], back["recovered"], back["recovered_at"]) == ("exited", 1, 2)
    text = subprocess.run([sys.executable, "-c", "from lmos.cli import main; main()", "ps", "--all"],
                          capture_output=True, text=True, env=env, timeout=120).stdout
    assert "1x, at step 2" in text and "lost" in text


async def test_checkpoints_compact_the_journal_and_recovery_starts_there(tmp_path: Path) -> None:
    async with booted(tmp_path / "ref") as k:
        w = await k.wait(await k.spawn("t.turns"))
        want = w.result
        assert len(want) == 6
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.turns")
        with anyio.fail_after(20):
            while not k.core.journal.query("SELECT 1 FROM sysjournal WHERE pid=? AND name='checkpoint' AND "
                                           "CAST(request AS TEXT) LIKE '%\"turn\":4%'", (pid,)):
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)  # into turn 4's generation
        await k.core.journal.flush()  # the compaction is a queued write: make the copy show it
        crash_copy(tmp_path / "a", tmp_path / "b")
    async with booted(tmp_path / "b") as k:
        steps = [r[0] for r in k.core.journal.query("SELECT name FROM sysjournal WHERE pid=? ORDER BY step",
                                                    (pid,))]
        assert steps[0] == "checkpoint" and len(steps) <= 3  # compacted: the latest checkpoint and after
        assert k.recovered[0]["step"] > 12  # recovered at the step after the checkpoint, not at 0
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result == want  # the context came back from the checkpoint: the same replies
        r = msgspec.to_builtins(await k.syscall("proc_replay", pid=pid))
        assert r["verified"], r["reason"]
        assert r["steps"][0]["name"] == "checkpoint"


async def test_sandbox_time_and_random_come_from_a_time_syscall() -> None:
    """Code run for a program reads the clock and the seed from one (journaled) time syscall."""
    from lmos.userland.sandbox import execute

    asked: list[str] = []

    def at(wall: float) -> Any:
        async def handler(call: str, payload: dict[str, Any]) -> Any:
            asked.append(call)
            return {"wall": wall, "monotonic": 1.0}
        return handler

    src = ("import datetime, random\n"
           "result = [str(datetime.datetime.now()), str(datetime.date.today()), random.random()]")
    a = await execute(src, syscalls=at(1_700_000_000.5), syscall_names=[], clock=True)
    b = await execute(src, syscalls=at(1_700_000_000.5), syscall_names=[], clock=True)
    c = await execute(src, syscalls=at(1_800_000_000.0), syscall_names=[], clock=True)
    assert a.ok and b.ok and c.ok
    ra, rb, rc = (r.namespace["result"] for r in (a, b, c))
    import datetime

    when = datetime.datetime.fromtimestamp(1_700_000_000.5)
    assert ra == rb and ra[:2] == [str(when), str(when.date())]
    assert rc[0] != ra[0] and rc[2] != ra[2]
    assert asked == ["time", "time", "time"]
