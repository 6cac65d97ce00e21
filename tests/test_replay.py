"""``proc_replay`` / ``lmos replay`` / ``GET /v1/processes/PID/replay``: steps, verification, --live."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kutil import kernel

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.table import AppSpec

pytestmark = pytest.mark.anyio
LMOS = "from lmos.cli import main; main()"
CAPS = frozenset({"llm", "kv", "fs.read", "fs.write"})
calls = {"n": 0}


async def worker(sys: Sys, argv: list[str]) -> Any:
    """kv, a file, two generations on one context, a refused and a failing call."""
    await sys.kv_set("topic", argv[0])
    topic = await sys.kv_get("topic")
    a = await sys.llm_generate(f"tell me about {topic}", max_tokens=6)
    b = await sys.llm_generate(" and more", max_tokens=4)
    await sys.fs_write(f"/notes-{argv[0]}.txt", a.text + b.text)
    for call, args in (("mem_read", {}), ("fs_read", {"path": "/missing"})):
        try:
            await sys.call(call, **args)
        except SyscallError:
            pass
    return {"a": a.text, "b": b.text}


async def flaky(sys: Sys, argv: list[str]) -> Any:
    """Not deterministic given its syscall results: its second run asks for another key."""
    calls["n"] += 1
    await sys.call("getpid")
    await sys.kv_get(f"key{calls['n']}")
    return "done"


async def result_flaky(sys: Sys, argv: list[str]) -> Any:
    calls["n"] += 1
    await sys.call("getpid")
    return calls["n"]


def register(k: lmos.Kernel) -> None:
    k.programs.register(AppSpec("t.worker", worker, CAPS))
    k.programs.register(AppSpec("t.flaky", flaky, frozenset({"kv"})))
    k.programs.register(AppSpec("t.result", result_flaky, frozenset()))


async def run(k: lmos.Kernel, app: str, argv: list[str] | None = None, uid: int | None = None) -> int:
    pid = await k.spawn(app, argv or [], uid=uid)
    w = await k.wait(pid)
    assert w.exit_status == 0, w.error
    return pid


async def replay(k: lmos.Kernel, **args: Any) -> Any:
    return msgspec.to_builtins(await k.syscall("proc_replay", **args))


async def test_steps_contexts_and_a_verified_rerun_without_side_effects(tmp_path: Path) -> None:
    drv = ScriptedDriver("cycle")
    async with kernel(drv, state_dir=str(tmp_path)) as k:
        register(k)
        pid = await run(k, "t.worker", ["lmos"])
        await k.syscall("kv_delete", key="topic")  # init's uid is the worker's: undo its writes
        await k.syscall("fs_delete", path="/notes-lmos.txt")
        r = await replay(k, pid=pid)
        assert await k.syscall("kv_list") is not None
        with pytest.raises(SyscallError):  # replay re-ran the program: nothing was written again
            await k.syscall("kv_get", key="topic")
        with pytest.raises(SyscallError):
            await k.syscall("fs_stat", path="/notes-lmos.txt")
    assert (r["app"], r["state"], r["exit_status"], r["total_steps"]) == ("t.worker", "exited", 0, 7)
    assert r["rerun"] == "match" and r["verified"] and r["diverged_at"] is None
    steps = r["steps"]
    assert [s["name"] for s in steps] == ["kv_set", "kv_get", "llm_generate", "llm_generate", "fs_write",
                                          "mem_read", "fs_read"]
    assert all(s["rerun"] == "match" for s in steps)
    assert steps[0]["args"] == {"key": "topic", "value": "lmos"} and steps[1]["result"]["value"] == "lmos"
    assert (steps[5]["decision"], steps[5]["errname"], steps[5]["cap"]) == ("deny", "EPERM", "mem")
    assert (steps[6]["decision"], steps[6]["errname"]) == ("error", "ENOENT")
    assert all(s["duration_us"] >= 0 and s["ts"] > 0 for s in steps)
    g1, g2 = steps[2], steps[3]
    enc = drv.tokenizer.encode
    # the context the model saw, token by token: the first prompt; then all of it, the reply, the next prompt
    assert g1["context"] == enc("tell me about lmos") and g1["context_check"] == "verified"
    assert g2["context"] == enc("tell me about lmos") + g1["output"] + enc(" and more")
    assert g2["context_text"] == "tell me about lmos" + g1["result"]["text"] + " and more"
    assert g2["context_check"] == "verified" and g2["prompt"] == enc(" and more")


async def test_divergence_names_the_first_step(tmp_path: Path) -> None:
    async with kernel(state_dir=str(tmp_path)) as k:
        register(k)
        calls["n"] = 0
        pid = await run(k, "t.flaky")
        r = await replay(k, pid=pid)
        assert r["rerun"] == "diverged" and not r["verified"]
        assert r["diverged_at"] == 1
        assert "step 1" in r["reason"] and "key2" in r["reason"] and "key1" in r["reason"]
        assert [s["rerun"] for s in r["steps"]] == ["match", "diverged"]
        calls["n"] = 0
        pid = await run(k, "t.result")
        r = await replay(k, pid=pid)
        assert r["rerun"] == "diverged" and r["diverged_at"] == 1 and "returned 2" in r["reason"]


async def test_live_shows_where_the_current_model_differs(tmp_path: Path) -> None:
    async with kernel(ScriptedDriver(lambda window: "abcdef"), state_dir=str(tmp_path)) as k:
        register(k)
        pid = await run(k, "t.worker", ["cats"])
        r = await replay(k, pid=pid, live=True)
        gens = [s for s in r["steps"] if s["name"] == "llm_generate"]
        assert all(s["live_output"] == s["output"] and s["live_differs_at"] is None for s in gens)
        assert r["live"] and r["live_differs_at"] is None
    # a new model on the same state directory: the first reply comes out differently from token 2
    async with kernel(ScriptedDriver(lambda window: "abXYZW"), state_dir=str(tmp_path)) as k:
        r = await replay(k, pid=pid, live=True, rerun=False)
    gens = [s for s in r["steps"] if s["name"] == "llm_generate"]
    first = gens[0]
    assert first["output"][:2] == list(b"ab") and first["live_output"][:6] == list(b"abXYZW")
    assert first["live_differs_at"] == 2 and first["live_text"].startswith("abXYZW")
    assert r["live_differs_at"] == first["step"] == 2
    assert r["rerun"] == "skipped"


async def test_who_may_replay(tmp_path: Path) -> None:
    async def ask(sys: Sys, argv: list[str]) -> Any:
        try:
            r = await sys.call("proc_replay", pid=int(argv[0]))
        except SyscallError as exc:
            return exc.errno.name
        return r.total_steps

    async with kernel(state_dir=str(tmp_path)) as k:
        register(k)
        k.programs.register(AppSpec("t.ask", ask, frozenset({"proc"})))
        pid = await run(k, "t.flaky", uid=5001)
        for uid, want in ((5001, 2), (5002, "EPERM")):
            asker = await k.spawn("t.ask", [str(pid)], uid=uid)
            assert (await k.wait(asker)).result == want
        assert (await replay(k, pid=pid))["total_steps"] == 2  # init is the operator
        with pytest.raises(SyscallError) as ei:
            await replay(k, pid=999_999)
        assert ei.value.errno is Errno.ESRCH
    async with kernel(state_dir=str(tmp_path), journal=False) as k:
        register(k)
        pid = await run(k, "t.flaky")
        with pytest.raises(SyscallError) as ei:
            await replay(k, pid=pid)
        assert ei.value.errno is Errno.ENOENT and "journaling is off" in ei.value.message


async def test_a_killed_process_replays_up_to_where_it_stopped(tmp_path: Path) -> None:
    async def slow(sys: Sys, argv: list[str]) -> None:
        await sys.call("getpid")
        await sys.sleep(60)

    async with kernel(state_dir=str(tmp_path)) as k:
        k.programs.register(AppSpec("t.slow", slow, frozenset()))
        pid = await k.spawn("t.slow")
        while not k.core.journal.query("SELECT 1 FROM sysjournal WHERE pid=?", (pid,)):
            import anyio

            await anyio.sleep(0.01)
        await k.kill(pid)
        await k.wait(pid)
        r = await replay(k, pid=pid)
    assert r["state"] == "killed" and r["rerun"] == "match" and r["verified"]
    assert r["steps"][0]["name"] == "getpid"


def lmos_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LMOS_HOME": str(home)}
    env.pop("LMOS_STATE_DIR", None)
    return subprocess.run([sys.executable, "-c", LMOS, *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the CLI runs in subprocesses: once is enough
async def test_cli_replay_with_no_kernel_running(tmp_path: Path, anyio_backend: str) -> None:
    async with kernel(ScriptedDriver("echo"), state_dir=str(tmp_path)) as k:
        pid = await run(k, "generate", ["hi", "there"])
    out = lmos_cli("replay", str(pid), "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["verified"] and r["rerun"] == "match" and r["app"] == "generate"
    assert [s["name"] for s in r["steps"]] == ["llm_generate"]
    assert r["steps"][0]["context"] == list(b"hi there")
    out = lmos_cli("replay", str(pid), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "llm_generate" in out.stdout and "verified: re-running" in out.stdout
    out = lmos_cli("replay", "999999", home=tmp_path)
    assert out.returncode == 1 and out.stderr.strip() == "lmos: ESRCH: no such process 999999"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio
async def test_http_replay_route(tmp_path: Path, anyio_backend: str) -> None:
    from httputil import client, err, served

    async with kernel(ScriptedDriver("echo"), state_dir=str(tmp_path)) as k, served(k) as base, \
            client(base) as http:
        r = await http.post("/v1/processes", json={"app": "generate", "argv": ["hello"]})
        pid = r.json()["pid"]
        assert (await http.post(f"/v1/processes/{pid}/wait")).status_code == 200
        r = await http.get(f"/v1/processes/{pid}/replay", params={"live": "true"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["verified"] and body["steps"][0]["name"] == "llm_generate"
        assert body["steps"][0]["context_text"] == "hello" and body["live_differs_at"] is None
        assert err(await http.get(f"/v1/processes/{pid}/replay", params={"live": "maybe"})) == (400, "EINVAL")
        assert err(await http.get("/v1/processes/999999/replay")) == (404, "ESRCH")


async def test_a_corrupted_row_is_named(tmp_path: Path) -> None:
    async with kernel(ScriptedDriver(lambda window: "abcdef"), state_dir=str(tmp_path)) as k:
        register(k)
        good = await run(k, "t.worker", ["x"])
        bad = await run(k, "t.worker", ["y"])
        await k.core.journal.write(lambda c: c.execute(
            "UPDATE sysjournal SET result=x'7b7b' WHERE pid=? AND step=1", (bad,)))
        await k.core.journal.write(lambda c: c.execute(
            "UPDATE sysjournal SET gen='{not json' WHERE pid=? AND step=3", (bad,)))
        r = await replay(k, pid=bad)
        assert not r["verified"] and r["diverged_at"] == 1 and "corrupted journal row" in r["reason"]
        assert r["steps"][3]["context_check"] == "corrupted"
        assert (await replay(k, pid=good))["verified"]  # the others are untouched
