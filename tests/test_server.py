"""The HTTP API over a real socket: lmos's routes, OpenAI-compatible routes, errors, streams, auth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from httputil import serve_cmd, sse_events, start_serve

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.server import serve
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


class Server:
    def __init__(self, kernel: lmos.Kernel, client: httpx.AsyncClient) -> None:
        self.k, self.http = kernel, client


async def _served(driver: Any, token: str | None = None) -> AsyncIterator[Server]:
    async with lmos.Kernel(model=driver, state_dir=":memory:") as k, anyio.create_task_group() as tg:
        port: list[int] = []
        started = anyio.Event()

        def ready(p: int) -> None:
            port.append(p)
            started.set()

        tg.start_soon(lambda: serve(k, host="127.0.0.1", port=0, uid=1000, token=token, ready=ready))
        await started.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port[0]}", timeout=10) as client:
            yield Server(k, client)
        tg.cancel_scope.cancel()


@pytest.fixture
async def srv() -> AsyncIterator[Server]:
    async for s in _served(ScriptedDriver("echo")):
        yield s


async def test_complete_equals_the_facade(srv: Server) -> None:
    r = await srv.http.post("/v1/complete", json={"prompt": "hello there", "max_tokens": 5, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    direct = await srv.k.complete("hello there", max_tokens=5, temperature=0)
    assert body["text"] == direct.text == "hello"
    assert body["token_ids"] == direct.token_ids and body["finish_reason"] == "length"
    # processes started over HTTP run as the server's uid
    assert body["pid"] > 1


async def test_streamed_completion_loses_no_token(srv: Server) -> None:
    async with srv.http.stream("POST", "/v1/complete", json={"prompt": "abcdefgh", "max_tokens": 8,
                                                              "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = await sse_events(r)
    tokens = [json.loads(d) for e, d in events if e == "token"]
    done = [json.loads(d) for e, d in events if e == "done"]
    assert len(done) == 1 and "".join(t["text"] for t in tokens) == done[0]["text"] == "abcdefgh"
    assert [t["token_id"] for t in tokens] == done[0]["token_ids"]


async def test_bad_requests_are_json_4xx(srv: Server) -> None:
    cases = [
        ("POST", "/v1/complete", b"{not json", 400, "EINVAL"),
        ("POST", "/v1/complete", json.dumps({"prompt": "x", "max_tokens": -1}).encode(), 400, "EINVAL"),
        ("POST", "/v1/complete", json.dumps({"prompt": "x", "bogus": 1}).encode(), 400, "EINVAL"),
        ("POST", "/v1/complete", json.dumps({"max_tokens": 3}).encode(), 400, "EINVAL"),
        ("POST", "/v1/complete", json.dumps({"prompt": "x", "model": "nope"}).encode(), 404, "ENOENT"),
        ("POST", "/v1/processes", json.dumps({"app": "no-such-app"}).encode(), 404, "ENOENT"),
        ("GET", "/v1/processes/999999", b"", 404, "ESRCH"),
        ("GET", "/v1/processes/abc", b"", 400, "EINVAL"),
        ("DELETE", "/v1/processes/999999", b"", 404, "ESRCH"),
        ("GET", "/v1/nowhere", b"", 404, "ENOENT"),
        ("PUT", "/v1/complete", b"", 405, "EINVAL"),
        ("POST", "/v1/completions", json.dumps({"prompt": "x", "n": 2}).encode(), 400, "EINVAL"),
        ("POST", "/v1/completions", json.dumps({"prompt": "x", "model": "gpt-4"}).encode(), 404, "ENOENT"),
    ]
    for method, path, body, status, errno in cases:
        headers = {"content-type": "application/json"} if body else {}
        r = await srv.http.request(method, path, content=body, headers=headers)
        assert r.status_code == status, (path, body, r.text)
        err = r.json()["error"]
        assert err["errno"] == errno and err["message"], (path, err)


async def test_processes_over_http(srv: Server) -> None:
    async def napper(sys: Sys, argv: list[str]) -> str:
        await sys.sleep(30)
        return "woke"

    srv.k.programs.register(lmos.system.AppSpec("napper", napper, frozenset()))
    r = await srv.http.post("/v1/processes", json={"app": "napper"})
    assert r.status_code == 201
    pid = r.json()["pid"]
    info = (await srv.http.get(f"/v1/processes/{pid}")).json()
    assert info["app"] == "napper" and info["uid"] == 1000
    assert pid in [p["pid"] for p in (await srv.http.get("/v1/processes")).json()["procs"]]
    async with srv.http.stream("GET", f"/v1/processes/{pid}/events") as ev:
        assert (await srv.http.delete(f"/v1/processes/{pid}")).status_code == 200
        events = await sse_events(ev)
    assert events[-1][0] == "exit"
    w = (await srv.http.post(f"/v1/processes/{pid}/wait")).json()
    assert w["pid"] == pid and w["exit_status"] != 0
    apps = (await srv.http.get("/v1/apps")).json()["apps"]
    assert "napper" in [a["name"] for a in apps]


async def test_client_disconnect_kills_the_completion() -> None:
    async for s in _served(ScriptedDriver("cycle", step_delay=0.01)):
        with anyio.move_on_after(0.3):
            await s.http.post("/v1/complete", json={"prompt": "x", "max_tokens": 100_000})
        with anyio.fail_after(5):
            while any(p.app == "llm.complete" for p in await s.k.ps()):
                await anyio.sleep(0.02)
        # a streamed one too
        with anyio.move_on_after(0.3):
            async with s.http.stream("POST", "/v1/complete",
                                     json={"prompt": "x", "max_tokens": 100_000, "stream": True}) as r:
                async for _ in r.aiter_lines():
                    pass
        with anyio.fail_after(5):
            while any(p.app == "llm.complete" for p in await s.k.ps()):
                await anyio.sleep(0.02)


async def test_openai_completions_and_chat(srv: Server) -> None:
    models = (await srv.http.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "default"
    r = (await srv.http.post("/v1/completions", json={"model": "default", "prompt": "hello world",
                                                      "max_tokens": 5, "temperature": 0})).json()
    assert r["object"] == "text_completion" and r["choices"][0]["text"] == "hello"
    assert r["choices"][0]["finish_reason"] == "length"
    usage = r["usage"]
    assert usage["completion_tokens"] == 5 and usage["total_tokens"] == usage["prompt_tokens"] + 5
    async with srv.http.stream("POST", "/v1/completions", json={"model": "default", "prompt": "hello world",
                                                                "max_tokens": 5, "stream": True}) as s:
        events = await sse_events(s)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    chat = await srv.http.post("/v1/chat/completions", json={
        "model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40, "user": "x"})
    assert chat.status_code == 200, chat.text
    body = chat.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)


async def test_bearer_token() -> None:
    async for s in _served(ScriptedDriver("echo"), token="s3cret"):
        r = await s.http.get("/v1/health")
        assert r.status_code == 401 and r.json()["error"]["errno"] == "EACCES"
        r = await s.http.get("/v1/health", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await s.http.get("/v1/health", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["status"] == "ok"


def test_lmos_serve_command(tmp_path: Any) -> None:
    """`lmos serve` listens, answers, and exits 0 on SIGINT; a taken port is one line and exit 1."""
    import os
    import signal
    import subprocess

    env = {**os.environ, "LMOS_HOME": str(tmp_path)}
    cmd = serve_cmd("scripted:hello", tmp_path / "state")
    proc, port = start_serve(cmd, env)
    try:
        url = f"http://127.0.0.1:{port}/v1/complete"
        r = httpx.post(url, json={"prompt": "x", "max_tokens": 5}, timeout=10)
        assert r.status_code == 200 and r.json()["text"] == "hello"
        # a second `lmos serve` attaches to the same kernel, which finds the port taken
        taken = subprocess.run([*cmd[:-4], "--port", str(port), "--state-dir", str(tmp_path / "state")],
                               capture_output=True, text=True, env=env, timeout=60)
        assert taken.returncode == 1
        assert taken.stderr.strip().count("\n") == 0 and "EBUSY" in taken.stderr, taken.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


async def test_concurrent_clients(srv: Server) -> None:
    """Many clients at once, streamed and not: each gets its own complete answer."""
    results: dict[int, str] = {}

    async def plain(i: int) -> None:
        r = await srv.http.post("/v1/complete", json={"prompt": f"plain-{i:02d}", "max_tokens": 8})
        results[i] = r.json()["text"]

    async def streamed(i: int) -> None:
        async with srv.http.stream("POST", "/v1/complete",
                                   json={"prompt": f"strm-{i:02d}", "max_tokens": 7, "stream": True}) as r:
            events = await sse_events(r)
        results[100 + i] = "".join(json.loads(d)["text"] for e, d in events if e == "token")

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(plain, i)
            tg.start_soon(streamed, i)
    want = {i: f"plain-{i:02d}" for i in range(16)} | {100 + i: f"strm-{i:02d}" for i in range(16)}
    assert results == want
    assert not [p for p in await srv.k.ps() if p.app == "llm.complete"]


async def test_the_openai_sdk_works_against_it(srv: Server) -> None:
    """The official client (when installed): Host, content type, keys and SSE as it sends and reads them."""
    openai = pytest.importorskip("openai")
    base = f"{srv.http.base_url}".rstrip("/") + "/v1"

    def use_sdk() -> tuple[str, str, str, list[str]]:
        c = openai.OpenAI(base_url=base, api_key="unused-without-keys")
        models = [m.id for m in c.models.list().data]
        done = c.completions.create(model="default", prompt="hello world", max_tokens=5, temperature=0)
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(
            model="default", prompt="hello world", max_tokens=5, stream=True) if ch.choices)
        msgs: Any = [{"role": "user", "content": "hi"}]
        chat = c.chat.completions.create(model="default", messages=msgs, max_tokens=20)
        chunks = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="default", messages=msgs, max_tokens=20, stream=True) if ch.choices)
        assert chunks == chat.choices[0].message.content
        return done.choices[0].text, streamed, chat.choices[0].message.role, models

    text, streamed, role, models = await anyio.to_thread.run_sync(use_sdk)
    assert text == streamed == "hello" and role == "assistant" and models == ["default"]


async def test_lmos_serve_refuses_to_expose_without_a_key(tmp_path: Any) -> None:
    """A non-loopback --host with no API key: one line, EPERM, exit 1 (``--insecure`` overrides)."""
    import os
    import sys

    env = {**os.environ, "LMOS_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "lmos.cli", "serve", "--model", "scripted:hello", "--port", "0",
           "--host", "0.0.0.0", "--state-dir", str(tmp_path / "state")]
    r = await anyio.run_process(cmd, env=env, check=False)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and "EPERM" in err and "--insecure" in err, err
