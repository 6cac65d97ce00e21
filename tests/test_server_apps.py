"""``POST /v1/apps`` and ``DELETE /v1/apps/NAME`` over a real socket: operator keys, grants, errors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.server import serve

pytestmark = pytest.mark.anyio
TOKEN = "s3cret"
CODE = "name = 'hello'\nversion = '1.0'\ncapabilities = ['llm']\ntools = ['calc']\n[entry]\nkind = 'code'\n" \
       "source = 'main.py'\n"
FILES = {"app.toml": CODE, "main.py": "sleep(seconds=float(argv[0]) if argv else 0)\nresult = 'hi'\n"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


async def served(uid: int, token: str | None) -> AsyncIterator[tuple[lmos.Kernel, httpx.AsyncClient]]:
    k = lmos.Kernel(model=ScriptedDriver(), state_dir=":memory:")
    async with k, anyio.create_task_group() as tg:
        port: list[int] = []
        started = anyio.Event()

        def ready(p: int) -> None:
            port.append(p)
            started.set()

        tg.start_soon(lambda: serve(k, host="127.0.0.1", port=0, uid=uid, token=token, ready=ready))
        await started.wait()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port[0]}", timeout=30,
                                     headers=headers) as client:
            yield k, client
        tg.cancel_scope.cancel()


@pytest.fixture
async def operator() -> AsyncIterator[tuple[lmos.Kernel, httpx.AsyncClient]]:
    async for s in served(os.getuid(), TOKEN):  # :memory: kernels: the operator is this process's user
        yield s


def err(r: httpx.Response) -> tuple[int, str, str]:
    e = r.json()["error"]
    return r.status_code, e["errno"], e["message"]


async def installed(http: httpx.AsyncClient) -> list[str]:
    return [a["name"] for a in (await http.get("/v1/apps")).json()["apps"] if a["origin"] == "installed"]


async def test_install_run_and_remove(operator: tuple[lmos.Kernel, httpx.AsyncClient]) -> None:
    _, http = operator
    r = await http.post("/v1/apps", json={"files": FILES})
    status, errno, msg = err(r)
    assert (status, errno) == (403, "EPERM") and "capabilities: llm; tools: calc" in msg
    assert await installed(http) == []

    r = await http.post("/v1/apps", json={"files": FILES, "grant": True})
    assert r.status_code == 201 and r.json()["action"] == "install"
    assert r.json()["caps"] == ["llm", "tool:calc"]
    r = await http.post("/v1/apps", json={"files": FILES, "grant": True})
    assert r.status_code == 200 and r.json()["action"] == "same"
    assert await installed(http) == ["hello"]

    pid = (await http.post("/v1/processes", json={"app": "hello"})).json()["pid"]
    w = (await http.post(f"/v1/processes/{pid}/wait")).json()
    assert w["exit_status"] == 0 and w["result"] == "hi"

    # removing while it runs: 409 EBUSY, unless forced
    pid = (await http.post("/v1/processes", json={"app": "hello", "argv": ["30"]})).json()["pid"]
    status, errno, _ = err(await http.delete("/v1/apps/hello"))
    assert (status, errno) == (409, "EBUSY") and await installed(http) == ["hello"]
    r = await http.delete("/v1/apps/hello", params={"force": "true"})
    assert r.status_code == 200 and r.json()["running"] == [pid]
    await http.delete(f"/v1/processes/{pid}")
    assert await installed(http) == []
    assert err(await http.delete("/v1/apps/hello"))[:2] == (404, "ENOENT")
    assert err(await http.delete("/v1/apps/chat"))[:2] == (403, "EPERM")


async def test_never_trusted_and_bad_input(operator: tuple[lmos.Kernel, httpx.AsyncClient]) -> None:
    _, http = operator
    py = {"app.toml": "name = 'py'\n[entry]\nkind = 'python'\nfunction = 'os:getcwd'\n"}
    status, errno, msg = err(await http.post("/v1/apps", json={"files": py, "grant": True}))
    assert (status, errno) == (403, "EPERM") and "python" in msg
    assert err(await http.post("/v1/apps", json={"files": py, "grant": True, "trusted": True}))[:2] == \
        (400, "EINVAL")
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({**FILES, "main.py": "def f(:\n"}, 400, "EINVAL"),
        ({**FILES, "app.toml": CODE.replace("tools", "toolz")}, 400, "EINVAL"),
        ({**FILES, "app.toml": CODE.replace("'llm'", "'root'")}, 400, "EINVAL"),
        ({**FILES, "app.toml": CODE.replace("hello", "chat")}, 409, "EEXIST"),
        ({**FILES, "../x.py": ""}, 400, "EINVAL"),
    ]
    for files, want_status, want_errno in bad:
        assert err(await http.post("/v1/apps", json={"files": files, "grant": True}))[:2] == \
            (want_status, want_errno)
    assert await installed(http) == []


@pytest.mark.parametrize("uid, token", [(None, None), (4242, TOKEN)], ids=["no-token", "not-operator"])
async def test_needs_an_operator_key(uid: int | None, token: str | None) -> None:
    async for _, http in served(os.getuid() + 4242 if uid else os.getuid(), token):
        for r in (await http.post("/v1/apps", json={"files": FILES, "grant": True}),
                  await http.delete("/v1/apps/hello")):
            status, errno, msg = err(r)
            assert (status, errno) == (403, "EPERM") and ("token" in msg or "operator" in msg)
        assert await installed(http) == []
        if token:
            wrong = {"authorization": "Bearer x"}
            async with httpx.AsyncClient(base_url=str(http.base_url), headers=wrong) as c:
                assert (await c.post("/v1/apps", json={"files": FILES, "grant": True})).status_code == 401
