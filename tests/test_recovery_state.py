"""What a recovered process gets back besides its journal: the agent loop's per-turn checkpoints,
its paged context, its token quota, and a "recovered at step N" event for late subscribers.

A crash is simulated as in test_recovery.py: a copy of the database through SQLite's backup API
holds exactly what a kill -9 would leave.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from kutil import kernel

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.table import AppSpec
from lmos.syscalls.tool import Tool
from lmos.userland.manifest import app_spec, parse_manifest

pytestmark = pytest.mark.anyio
TURNS = 5

AGENT = """
name = "counter"
version = "1.0"
description = "counts with calc"
system = "You count."
tools = ["calc"]
capabilities = ["llm"]
max_steps = 8
[entry]
kind = "agent"
"""


def model(window: str) -> str:
    """Calls calc TURNS times, then answers; every reply depends on the whole window it sees."""
    results = re.findall(r"<\|tool\|>(\d+)", window)  # calc's results 1, 2 ... (older ones paged out)
    done = int(results[-1]) if results else 0
    if done < TURNS:
        return '<|call|>{"tool": "calc", "args": {"expr": "' + f"{done} + 1" + '"}}'
    return f"counted {done} in a window of {len(window)}"


async def paged(sys: Sys, argv: list[str]) -> Any:
    """A paged context (kernel/memory.py) that outgrows its window, so pages are swapped out."""
    out = []
    for i in range(12):
        r = await sys.llm_generate(f" question {i} about {'topic ' * 12}", page=True, max_tokens=24)
        out.append(r.text)
    return out


async def spender(sys: Sys, argv: list[str]) -> Any:
    """Generates until its token quota is used up."""
    n = 0
    for _ in range(20):
        r = await sys.llm_generate(" more", max_tokens=7)
        n += r.completion_tokens
        if r.finish_reason == "quota":
            break
    try:
        await sys.llm_generate(" again", max_tokens=7)
    except SyscallError as exc:
        return [n, exc.errno.name]
    return [n, "no quota"]


async def consumer(sys: Sys, argv: list[str]) -> Any:
    """Holds a named and a private channel; takes five jobs, slowly."""
    jobs = await sys.chan_open("jobs")
    mine = await sys.call("chan_open", name="mine", private=True)
    await sys.send(mine.chan, "note to self")
    got = []
    for _ in range(5):
        job = await sys.recv(jobs)
        r = await sys.llm_generate(f" job {job}", max_tokens=12)  # slow: the crash comes between jobs
        got.append([job, r.text])
    again = await sys.call("chan_open", name=mine.name)  # still its own private channel, by name
    return {"got": got, "note": await sys.recv(mine.chan), "same": again.chan == mine.chan}


async def producer(sys: Sys, argv: list[str]) -> Any:
    jobs = await sys.chan_open("jobs")
    for i in range(5):
        await sys.send(jobs, {"n": i})
    return "sent"


async def two_at_once(sys: Sys, argv: list[str]) -> Any:
    """An external effect and a kv_set in flight at once: the first outlives the second."""
    out: dict[str, Any] = {}

    async def launch() -> None:
        try:
            out["launch"] = await sys.tool_call("launch", {})
        except SyscallError as exc:
            out["launch"] = exc.errno.name

    async with anyio.create_task_group() as tg:
        tg.start_soon(launch)
        await anyio.sleep(0.05)
        await sys.kv_set("beside", "1")
    out["after"] = await sys.kv_get("beside")
    return out


async def launch_tool(ctx: Any, args: dict[str, Any]) -> str:
    await GATE[0].wait()
    return "launched"


GATE = [anyio.Event()]


def drv() -> ScriptedDriver:
    def reply(window: str) -> str:
        if "<|system|>" in window:
            return model(window)
        return f"<{len(window)}:{window[-9:][::-1]}>"
    return ScriptedDriver(reply, step_delay=0.01, max_model_len=400)


def booted(state: Path, **cfg: Any) -> lmos.Kernel:
    k = kernel(drv(), state_dir=str(state), **cfg)
    k.programs.register(app_spec(parse_manifest(AGENT)))
    k.programs.register(AppSpec("t.paged", paged, frozenset({"llm", "mem"})))
    k.programs.register(AppSpec("t.spender", spender, frozenset({"llm"}), token_quota=40))
    k.programs.register(AppSpec("t.consumer", consumer, frozenset({"llm", "ipc"})))
    k.programs.register(AppSpec("t.producer", producer, frozenset({"ipc"})))
    k.programs.register(AppSpec("t.two", two_at_once, frozenset({"kv", "tool:launch"})))
    k.tools.register(Tool("launch", "An external effect.", {"type": "object", "properties": {}}, launch_tool))
    return k


def crash_copy(src: Path, dst: Path) -> None:
    dst.mkdir()
    a, b = sqlite3.connect(src / "lmos.db"), sqlite3.connect(dst / "lmos.db")
    a.backup(b)
    a.close()
    b.close()


def journal(k: lmos.Kernel, pid: int) -> list[tuple[int, str, str]]:
    return [(r[0], r[1], bytes(r[2]).decode()) for r in k.core.journal.query(
        "SELECT step, name, request FROM sysjournal WHERE pid=? AND errno=0 ORDER BY step", (pid,))]


async def until(cond: Any, seconds: float = 30) -> None:
    with anyio.fail_after(seconds):
        while not cond():
            await anyio.sleep(0.01)


async def reference(tmp_path: Path, app: str, argv: list[str] | None = None) -> Any:
    async with booted(tmp_path / f"ref-{app}") as k:
        w = await k.wait(await k.spawn(app, argv or []))
        assert w.exit_status == 0, w.error
        return w.result


async def test_an_agent_checkpoints_each_turn_and_recovers_from_the_last(tmp_path: Path) -> None:
    want = await reference(tmp_path, "counter", ["count", "please"])
    assert want["text"].startswith(f"counted {TURNS} ") and want["steps"] == TURNS + 1
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("counter", ["count", "please"])
        await until(lambda: any(n == "checkpoint" and '"next":4' in r for _, n, r in journal(k, pid)))
        await k.core.journal.flush()  # the compaction is a queued write: make the copy show it
        crash_copy(tmp_path / "a", tmp_path / "b")
        seen_pages = k.core.memory.store.load(pid)
    async with booted(tmp_path / "b") as k:
        steps = journal(k, pid)
        assert steps[0][1] == "checkpoint"  # compacted: it starts at a turn's checkpoint
        start = json.loads(steps[0][2])["state"]["next"]
        assert start >= 3 and len(steps) <= 2 * 5  # at most two turns' steps (a compaction is queued)
        [rep] = k.recovered
        assert rep["recovered"] and rep["step"] > steps[0][0] > 2 * 4  # not from step 0
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        # the same answer: the context came back (its paged window has the same length)
        assert w.result["text"] == want["text"] and w.result["steps"] == want["steps"]
        assert [c["result"] for c in w.result["calls"]] == [c["result"] for c in want["calls"]]
        assert len(seen_pages) >= 7  # the pages it had were there to restore
        last = json.loads(journal(k, pid)[0][2])["state"]
        assert last["done"]["text"] == want["text"]  # the answer turn checkpointed too
        r = await k.syscall("proc_replay", pid=pid)  # the compacted journal still verifies
        assert r.verified, r.reason


async def test_a_paged_context_is_restored_from_the_store(tmp_path: Path) -> None:
    want = await reference(tmp_path, "t.paged")
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.paged")
        await until(lambda: len(journal(k, pid)) >= 8)
        crash_copy(tmp_path / "a", tmp_path / "b")
        m = k.core.memory.peek(pid)
        assert m is not None and m.n_swapped > 0  # pages were swapped out before the crash
    async with booted(tmp_path / "b") as k:
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result == want  # each reply is a function of the window: the window came back
        quota = k.core.quota.used(k.core.journal.conn, k.core.host_uid)
        fresh = type(k.core.quota)().used(k.core.journal.conn, k.core.host_uid)
        assert quota == fresh  # what recovery trimmed was given back


async def test_a_step_ahead_in_the_page_store_is_trimmed(tmp_path: Path) -> None:
    """Pages a generation added whose journal row never committed are dropped at recovery."""
    want = await reference(tmp_path, "t.paged")
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.paged")
        await until(lambda: len(journal(k, pid)) >= 5)
        crash_copy(tmp_path / "a", tmp_path / "b")
    db = sqlite3.connect(tmp_path / "b" / "lmos.db")  # as if the last journal row had not committed
    last = db.execute("SELECT max(step) FROM sysjournal WHERE pid=?", (pid,)).fetchone()[0]
    db.execute("DELETE FROM sysjournal WHERE pid=? AND step=?", (pid, last))
    db.commit()
    db.close()
    async with booted(tmp_path / "b") as k:
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result == want


async def test_the_token_quota_and_what_was_used_of_it_come_back(tmp_path: Path) -> None:
    want = await reference(tmp_path, "t.spender")
    assert want == [40, "EDQUOT"]
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.spender")
        await until(lambda: len(journal(k, pid)) >= 3)
        crash_copy(tmp_path / "a", tmp_path / "b")
    async with booted(tmp_path / "b") as k:
        p = k.core.procs[pid]
        assert p.token_quota == 40
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result == want  # not 40 more tokens after the restart


async def run_pair(k: lmos.Kernel) -> int:
    pid = await k.spawn("t.consumer")
    await until(lambda: any(n == "send" for _, n, _ in journal(k, pid)))  # its channels are open
    await k.wait(await k.spawn("t.producer"))
    return pid


async def test_ipc_channels_and_their_acknowledged_messages_come_back(tmp_path: Path) -> None:
    async with booted(tmp_path / "ref") as k:
        w = await k.wait(await run_pair(k))
        assert w.exit_status == 0, w.error
        want = w.result
    assert [g[0] for g in want["got"]] == [{"n": i} for i in range(5)] and want["note"] == "note to self"
    async with booted(tmp_path / "a") as k:
        pid = await run_pair(k)
        await until(lambda: sum(n == "recv" for _, n, _ in journal(k, pid)) >= 2)
        crash_copy(tmp_path / "a", tmp_path / "b")
    async with booted(tmp_path / "b") as k:
        [rep] = k.recovered  # the producer had ended: only the consumer comes back
        assert rep["pid"] == pid
        held = k.core.channels.by_pid[pid]
        assert len(held) == 2  # the named and the private channel, under their old ids
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        # every job exactly once, in order: the ones taken before the crash replayed, the rest from
        # the restored buffer; the private channel's message too, on the handle from before the crash
        assert w.result == want


async def test_two_effects_in_flight_at_once_are_reported_not_lost(tmp_path: Path) -> None:
    GATE[0] = anyio.Event()
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.two")
        await until(lambda: any(n == "kv_set" for _, n, _ in journal(k, pid)))  # done; launch in flight
        crash_copy(tmp_path / "a", tmp_path / "b")
        GATE[0].set()
        assert (await k.wait(pid)).result == {"launch": "launched", "after": "1"}
    GATE[0] = anyio.Event()  # were the launch run again, it would hang here
    async with booted(tmp_path / "b") as k:
        [rep] = k.recovered
        assert rep["recovered"], rep
        with anyio.fail_after(10):
            w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result == {"launch": "EINPROGRESS", "after": "1"}
        kv = k.core.journal.query("SELECT count(*) FROM kvstore WHERE key='beside'")[0][0]
        assert kv == 1  # applied once


async def test_a_late_subscriber_sees_recovered_at_step_n_first(tmp_path: Path) -> None:
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.paged")
        await until(lambda: len(journal(k, pid)) >= 3)
        crash_copy(tmp_path / "a", tmp_path / "b")
    async with booted(tmp_path / "b") as k:
        step = k.recovered[0]["step"]
        await anyio.sleep(0.05)  # the process runs on; nobody is watching yet
        sub = k.core.events.subscribe(pid)
        first = await sub.receive()
        assert (first.kind, first.text, first.data) == ("output", f"recovered at step {step}",
                                                        {"recovered": step})
        again = k.core.events.subscribe(pid)  # every subscriber, not only the first
        assert (await again.receive()).text == f"recovered at step {step}"
        sub.close()
        again.close()
        assert (await k.wait(pid)).exit_status == 0
        assert pid not in k.core.events.sticky  # dropped with the process


async def test_a_process_that_was_never_recovered_has_no_first_event(tmp_path: Path) -> None:
    async with booted(tmp_path / "a") as k:
        pid = await k.spawn("t.spender")
        sub = k.core.events.subscribe(pid)
        ev = await sub.receive()
        assert "recovered" not in ev.text
        sub.close()
        assert (await k.wait(pid)).errno in (0, None, Errno.EDQUOT)
