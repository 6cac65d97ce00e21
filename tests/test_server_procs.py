"""The HTTP process API where a client used to lose data: streams from spawn, results read again, reaping."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from httputil import client, err, served, sse_events
from kutil import kernel
from test_agent import calc_model

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


async def chatty(sys: Sys, argv: list[str]) -> Any:
    """Writes at once, then after a pause: an /events opened after the spawn would miss the first."""
    await sys.call("write", text="first")
    await sys.sleep(float(argv[0]) if argv else 0.0)
    await sys.call("write", text="second")
    return {"answer": 42}


def register(k: lmos.Kernel, name: str, main: Any) -> None:
    k.programs.register(lmos.system.AppSpec(name, main, frozenset()))


async def test_stream_at_spawn_loses_nothing() -> None:
    async with kernel() as k, served(k) as base, client(base) as http:
        register(k, "chatty", chatty)
        async with http.stream("POST", "/v1/processes", json={"app": "chatty", "stream": True}) as r:
            assert r.status_code == 201 and r.headers["content-type"].startswith("text/event-stream")
            events = await sse_events(r)
        kinds = [e for e, _ in events]
        assert kinds[0] == "spawn" and kinds[-1] == "exit"
        pid = json.loads(events[0][1])["pid"]
        assert r.headers["location"] == f"/v1/processes/{pid}"
        outputs = [json.loads(d)["text"] for e, d in events if e == "output"]
        assert outputs == ["first", "second"]
        assert json.loads(events[-1][1])["data"] == {"answer": 42}
        # the stream read the result: the process is reaped, and its result can still be read, again
        assert k.core is not None and pid not in k.core.procs
        for _ in range(3):
            r2 = await http.get(f"/v1/processes/{pid}/result")
            assert r2.status_code == 200 and r2.json()["result"] == {"answer": 42}
        info = (await http.get(f"/v1/processes/{pid}")).json()
        assert info["reaped"] is True and info["exit_status"] == 0


async def test_calc_agent_streamed_from_spawn_shows_its_tool_call_turn() -> None:
    """The case that lost data: the first turn (the calc call) streams before any /events could open."""
    spawn = {"app": "calc-agent", "argv": ["what is 6 * 7?"], "stream": True}
    async with kernel(ScriptedDriver(calc_model)) as k, served(k) as base, client(base) as http, \
            http.stream("POST", "/v1/processes", json=spawn) as r:
        events = await sse_events(r)
    text = "".join(json.loads(d)["text"] for e, d in events if e == "token")
    assert "calc" in text and "6 * 7" in text and text.endswith("The answer is 42.")
    assert events[-1][0] == "exit" and json.loads(events[-1][1])["data"]["text"] == "The answer is 42."


async def test_result_more_than_once_and_reaped_when_read() -> None:
    async with kernel() as k, served(k) as base, client(base) as http:
        register(k, "chatty", chatty)
        pid = (await http.post("/v1/processes", json={"app": "chatty", "argv": ["0.3"]})).json()["pid"]
        assert err(await http.get(f"/v1/processes/{pid}/result")) == (409, "EBUSY")  # still running
        w = (await http.post(f"/v1/processes/{pid}/wait")).json()
        assert w["pid"] == pid and w["exit_status"] == 0 and w["result"] == {"answer": 42}
        assert k.core is not None and pid not in k.core.procs  # reaped on first read
        again = [(await http.get(f"/v1/processes/{pid}/result")).json() for _ in range(2)]
        again.append((await http.post(f"/v1/processes/{pid}/wait")).json())
        assert all(a["result"] == {"answer": 42} and a["pid"] == pid for a in again)
        # an /events opened after the end sees the exit with its result
        async with http.stream("GET", f"/v1/processes/{pid}/events") as ev:
            events = await sse_events(ev)
        assert [e for e, _ in events] == ["exit"] and json.loads(events[0][1])["data"] == {"answer": 42}


async def test_unread_results_are_reaped_after_a_while() -> None:
    async with kernel() as k, served(k, reap_after=0.2) as base, client(base) as http:
        register(k, "chatty", chatty)
        pids = [(await http.post("/v1/processes", json={"app": "chatty"})).json()["pid"] for _ in range(5)]
        assert k.core is not None
        with anyio.fail_after(5):
            while any(p in k.core.procs for p in pids):
                await anyio.sleep(0.05)
        for pid in pids:  # reaped, but the result is kept
            assert (await http.get(f"/v1/processes/{pid}/result")).json()["result"] == {"answer": 42}


async def test_kept_results_are_bounded() -> None:
    async with kernel() as k, served(k, keep_results=3) as base, client(base) as http:
        register(k, "chatty", chatty)
        pids = []
        for _ in range(5):
            pid = (await http.post("/v1/processes", json={"app": "chatty"})).json()["pid"]
            await http.post(f"/v1/processes/{pid}/wait")
            pids.append(pid)
        assert err(await http.get(f"/v1/processes/{pids[0]}/result")) == (404, "ECHILD")
        assert (await http.get(f"/v1/processes/{pids[-1]}/result")).status_code == 200


async def test_two_streams_of_one_process_each_see_everything() -> None:
    async def ticker(sys: Sys, argv: list[str]) -> Any:
        await sys.sleep(0.2)  # both streams are open by now
        for i in range(20):
            await sys.call("write", text=str(i))
        return "ok"

    async with kernel() as k, served(k) as base, client(base) as http:
        register(k, "ticker", ticker)
        pid = (await http.post("/v1/processes", json={"app": "ticker"})).json()["pid"]
        got: list[list[str]] = []

        async def watch() -> None:
            async with http.stream("GET", f"/v1/processes/{pid}/events") as r:
                got.append([json.loads(d)["text"] for e, d in await sse_events(r) if e == "output"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            tg.start_soon(watch)
        assert got == [[str(i) for i in range(20)]] * 2


async def test_http_processes_are_children_of_the_users_session() -> None:
    async with kernel() as k, served(k, uid=1234) as base, client(base) as http:
        register(k, "chatty", chatty)
        pid = (await http.post("/v1/processes", json={"app": "chatty", "argv": ["5"]})).json()["pid"]
        procs = {p["pid"]: p for p in (await http.get("/v1/processes")).json()["procs"]}
        session = procs[procs[pid]["ppid"]]
        assert session["app"] == "http" and session["uid"] == procs[pid]["uid"] == 1234
        assert err(await http.delete(f"/v1/processes/{session['pid']}")) == (403, "EPERM")
        assert (await http.delete(f"/v1/processes/{pid}")).status_code == 200
        assert (await http.post(f"/v1/processes/{pid}/wait")).json()["exit_status"] != 0


async def test_kept_results_are_bounded_in_bytes() -> None:
    async def big(sys: Sys, argv: list[str]) -> Any:
        return "x" * 100_000

    async with kernel() as k, served(k, keep_bytes=250_000) as base, client(base) as http:
        register(k, "big", big)
        pids = []
        for _ in range(4):
            pid = (await http.post("/v1/processes", json={"app": "big"})).json()["pid"]
            assert len((await http.post(f"/v1/processes/{pid}/wait")).json()["result"]) == 100_000
            pids.append(pid)
        codes = [(await http.get(f"/v1/processes/{p}/result")).status_code for p in pids]
        assert codes == [404, 404, 200, 200]


async def test_keys_from_config_map_to_users_by_name_or_uid() -> None:
    """``[users] keys`` in the kernel's config: each key acts as its user; processes run as that uid."""
    async with kernel(users={"keys": {"k-root": "root", "k-2001": "2001"}}) as k, served(k) as base:
        register(k, "chatty", chatty)
        for key, uid in (("k-root", 0), ("k-2001", 2001)):
            async with client(base, key) as http:
                assert (await http.get("/v1/health")).json()["uid"] == uid
                pid = (await http.post("/v1/processes", json={"app": "chatty"})).json()["pid"]
                assert k.core is not None and k.core.procs[pid].uid == uid
        async with client(base) as anonymous:  # keys configured: no key, no entry
            assert err(await anonymous.get("/v1/health")) == (401, "EACCES")
