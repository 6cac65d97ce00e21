"""Attacks on the HTTP API: it is a user, not init, and it is not drivable from another site.

Each test performs the attack over a real socket, asserts the JSON 4xx it is
refused with, and checks that the victim's work goes on: a process of another
key's user keeps running and its owner still reads its result.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from httputil import client, err, served, sse_events
from kutil import kernel

import lmos
from lmos.errors import Errno, SyscallError
from lmos.server import serve
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio
ALICE, MALLORY = "alice-key", "mallory-key"
KEYS = {ALICE: "1001", MALLORY: "1002"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


async def worker(sys: Sys, argv: list[str]) -> Any:
    await sys.call("write", text="secret output of alice")
    await sys.sleep(float(argv[0]))
    return "alice's result"


@pytest.fixture
async def two_users() -> AsyncIterator[tuple[lmos.Kernel, str]]:
    async with kernel() as k, served(k, keys=KEYS) as base:
        k.programs.register(lmos.system.AppSpec("worker", worker, frozenset()))
        yield k, base


async def alice_job(base: str, seconds: float = 1.0) -> int:
    async with client(base, ALICE) as alice:
        r = await alice.post("/v1/processes", json={"app": "worker", "argv": [str(seconds)]})
        assert r.status_code == 201, r.text
        return int(r.json()["pid"])


async def alice_finishes(base: str, pid: int) -> None:
    async with client(base, ALICE) as alice:
        w = (await alice.post(f"/v1/processes/{pid}/wait")).json()
        assert w["exit_status"] == 0 and w["result"] == "alice's result"


async def test_another_keys_process_cannot_be_touched(two_users: tuple[lmos.Kernel, str]) -> None:
    k, base = two_users
    pid = await alice_job(base)
    async with client(base, MALLORY) as mallory:
        assert err(await mallory.post(f"/v1/processes/{pid}/wait")) == (404, "ECHILD")
        assert err(await mallory.get(f"/v1/processes/{pid}/result")) == (404, "ECHILD")
        assert err(await mallory.get(f"/v1/processes/{pid}/events")) == (403, "EPERM")
        assert err(await mallory.post(f"/v1/processes/{pid}/signal", json={"signal": "STOP"})) == \
            (403, "EPERM")
        assert err(await mallory.delete(f"/v1/processes/{pid}")) == (403, "EPERM")
        assert err(await mallory.get(f"/v1/processes/{pid}")) == (404, "ESRCH")
        ps = (await mallory.get("/v1/processes")).json()["procs"]
        assert ps and all(p["uid"] == 1002 for p in ps)  # only mallory's own session
        assert "secret" not in json.dumps(ps)
        # nor alice's session process, nor (over HTTP) anything as another uid
        alice_session = k.core.procs[pid].ppid if k.core else 0
        assert err(await mallory.delete(f"/v1/processes/{alice_session}")) == (403, "EPERM")
    assert k.core is not None and not k.core.procs[pid].ended
    await alice_finishes(base, pid)
    async with client(base, MALLORY) as mallory:  # the result, once read by alice, stays hers
        assert err(await mallory.get(f"/v1/processes/{pid}/result")) == (404, "ECHILD")


async def test_no_key_or_a_wrong_key_is_refused(two_users: tuple[lmos.Kernel, str]) -> None:
    _, base = two_users
    pid = await alice_job(base, 0.2)
    for key in (None, "guess", ALICE + "x", ALICE[:-1]):
        async with client(base, key) as c:
            for r in (await c.get("/v1/processes"), await c.post(f"/v1/processes/{pid}/wait"),
                      await c.post("/v1/processes", json={"app": "worker", "argv": ["0"]})):
                assert err(r) == (401, "EACCES")
    await alice_finishes(base, pid)


async def test_wrong_host_and_dns_rebinding_are_refused(two_users: tuple[lmos.Kernel, str]) -> None:
    _, base = two_users
    port = base.rsplit(":", 1)[1]
    pid = await alice_job(base, 0.2)
    async with client(base, ALICE) as alice:
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{int(port) + 1}",
                     f"localhost.attacker.example:{port}", ""):
            r = await alice.get("/v1/processes", headers={"host": host})
            assert err(r) == (403, "EACCES"), host
            r = await alice.post("/v1/processes", headers={"host": host},
                                 json={"app": "worker", "argv": ["0"]})
            assert err(r) == (403, "EACCES"), host
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            assert (await alice.get("/v1/health", headers={"host": host})).status_code == 200, host
        # a page elsewhere: its Origin is refused even for a body-less POST
        for origin in ("https://attacker.example", "null", f"http://attacker.example:{port}"):
            r = await alice.post(f"/v1/processes/{pid}/signal", headers={"origin": origin})
            assert err(r) == (403, "EACCES"), origin
        same_site = {"origin": f"http://localhost:{port}"}
        assert (await alice.get("/v1/health", headers=same_site)).status_code == 200
    await alice_finishes(base, pid)


async def test_allowed_hosts_can_be_extended() -> None:
    async with kernel() as k, served(k, allowed_hosts=["lmos.internal"]) as base, client(base) as c:
        port = base.rsplit(":", 1)[1]
        assert (await c.get("/v1/health", headers={"host": f"lmos.internal:{port}"})).status_code == 200
        assert err(await c.get("/v1/health", headers={"host": f"other.internal:{port}"})) == (403, "EACCES")


async def test_cross_site_text_plain_post_is_refused(two_users: tuple[lmos.Kernel, str]) -> None:
    k, base = two_users
    pid = await alice_job(base, 0.3)
    before = len(k.core.procs) if k.core else 0
    body = json.dumps({"app": "worker", "argv": ["0"]})
    async with client(base, ALICE) as alice:
        for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", "application/jsonx"):
            r = await alice.post("/v1/processes", content=body, headers={"content-type": ctype})
            assert err(r) == (415, "EINVAL"), ctype
            r = await alice.post(f"/v1/processes/{pid}/signal", content=b"", headers={"content-type": ctype})
            assert err(r) == (415, "EINVAL"), ctype
        r = await alice.post("/v1/processes", content=body)  # a body with no type at all
        assert err(r) == (415, "EINVAL")
        assert k.core is not None and len(k.core.procs) == before  # nothing was spawned
        r = await alice.post("/v1/processes", content=body,
                             headers={"content-type": "application/json; charset=utf-8"})
        assert r.status_code == 201
        await alice.post(f"/v1/processes/{r.json()['pid']}/wait")
    await alice_finishes(base, pid)


def _raw(port: int, head: bytes, chunks: int, chunk: bytes) -> bytes:
    """Send ``head`` and up to ``chunks`` body chunks (never the end), then read what the server says."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        try:
            for _ in range(chunks):
                s.sendall(chunk)
        except OSError:  # the server answered and closed while we were still sending: what we want
            pass
        s.settimeout(10)
        out = b""
        try:
            while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
                got = s.recv(65536)
                if not got:
                    break
                out += got
        except OSError:
            pass
        return out


async def test_oversized_bodies_are_refused_while_streaming(two_users: tuple[lmos.Kernel, str]) -> None:
    _, base = two_users
    port = int(base.rsplit(":", 1)[1])
    pid = await alice_job(base, 0.5)
    mib = b"x" * (1 << 20)
    head = b"POST /v1/processes HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n" % (
        port, ALICE.encode())
    chunked = head + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % len(mib) + mib + b"\r\n"
    # 12 MiB sent without the final chunk: the answer comes anyway, so the limit was hit while streaming
    out = await anyio.to_thread.run_sync(_raw, port, chunked, 12, chunk)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert b'"E2BIG"' in out
    declared = head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (1 << 30)
    out = await anyio.to_thread.run_sync(_raw, port, declared, 1, mib)  # refused unread
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    await alice_finishes(base, pid)


async def test_invalid_utf8_inside_a_json_string_is_a_400(two_users: tuple[lmos.Kernel, str]) -> None:
    _, base = two_users
    pid = await alice_job(base, 0.2)
    async with client(base, ALICE) as alice:
        for route, body in (("/v1/processes", b'{"app": "worker", "argv": ["\xff\xfe"]}'),
                            ("/v1/complete", b'{"prompt": "abc\xc3"}'),
                            ("/v1/completions", b'{"prompt": "\xed\xa0\x80"}'),
                            ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\x80"}]}'),
                            ("/v1/complete", b'{"prompt": "\\ud800"}')):
            r = await alice.post(route, content=body, headers={"content-type": "application/json"})
            assert err(r) == (400, "EINVAL"), (route, r.text)
    await alice_finishes(base, pid)


async def _serve_once(host: str, **kw: Any) -> int | SyscallError:
    """Start serving on ``host``; the port it listened on, or the error it refused with."""
    got: list[int | SyscallError] = []
    async with kernel() as k, anyio.create_task_group() as tg:
        def ready(p: int) -> None:
            got.append(p)
            tg.cancel_scope.cancel()

        async def run() -> None:
            try:
                await serve(k, host=host, port=0, uid=1000, ready=ready, **kw)
            except SyscallError as exc:
                got.append(exc)

        tg.start_soon(run)
    return got[0]


async def test_exposed_without_a_key_refuses_to_start() -> None:
    refused = await _serve_once("0.0.0.0")
    assert isinstance(refused, SyscallError) and refused.errno == Errno.EPERM
    assert "--insecure" in refused.message
    assert isinstance(await _serve_once("0.0.0.0", insecure=True), int)
    assert isinstance(await _serve_once("0.0.0.0", keys={"k": "1000"}), int)
    assert isinstance(await _serve_once("0.0.0.0", token="t"), int)
    assert isinstance(await _serve_once("127.0.0.1"), int)


async def test_a_key_for_an_unknown_user_refuses_to_start() -> None:
    refused = await _serve_once("127.0.0.1", keys={"k": "no-such-user-here"})
    assert isinstance(refused, SyscallError) and refused.errno == Errno.EINVAL


async def test_streams_of_one_user_are_not_another_users(two_users: tuple[lmos.Kernel, str]) -> None:
    """Mallory's stream of her own job shows her job only; alice's stream still gets all of hers."""
    _, base = two_users
    async with client(base, ALICE) as alice, client(base, MALLORY) as mallory:
        async def stream(c: httpx.AsyncClient) -> list[tuple[str | None, str]]:
            async with c.stream("POST", "/v1/processes", json={"app": "worker", "argv": ["0.2"],
                                                               "stream": True}) as r:
                return await sse_events(r)

        got: dict[str, list[tuple[str | None, str]]] = {}

        async def run(name: str, c: httpx.AsyncClient) -> None:
            got[name] = await stream(c)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "alice", alice)
            tg.start_soon(run, "mallory", mallory)
        pids = {n: json.loads(ev[0][1])["pid"] for n, ev in got.items()}
        for name, events in got.items():
            assert {json.loads(d).get("pid") for e, d in events} == {pids[name]}
            assert events[-1][0] == "exit"
