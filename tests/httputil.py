"""Helpers for HTTP API tests: a kernel served on a real loopback socket, SSE parsing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

import lmos
from lmos.server import serve


@asynccontextmanager
async def served(k: lmos.Kernel, **kw: Any) -> AsyncIterator[str]:
    """Serve ``k`` (already entered) on 127.0.0.1 and an ephemeral port; yields the base URL."""
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("uid", 1000)
    async with anyio.create_task_group() as tg:
        port: list[int] = []
        started = anyio.Event()

        def ready(p: int) -> None:
            port.append(p)
            started.set()

        tg.start_soon(lambda: serve(k, port=0, ready=ready, **kw))
        await started.wait()
        yield f"http://127.0.0.1:{port[0]}"
        tg.cancel_scope.cancel()


def client(base: str, key: str | None = None, **kw: Any) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=base, timeout=kw.pop("timeout", 10), headers=headers, **kw)


async def sse_events(resp: httpx.Response) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    event: str | None = None
    async for line in resp.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, line[6:]))
            event = None
    return out


def err(r: httpx.Response) -> tuple[int, str]:
    """(status, errno) of a JSON error reply."""
    return r.status_code, r.json()["error"]["errno"]


def serve_cmd(model: str, state_dir: Path) -> list[str]:
    """The `lmos serve` command line of a test server on a free loopback port."""
    return [sys.executable, "-m", "lmos.cli", "serve", "--model", model, "--port", "0",
            "--state-dir", str(state_dir)]


def start_serve(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """Start `lmos serve` as a subprocess; return it and the port it printed it listens on.
    The caller kills it (in a ``finally``)."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
    if m is None:
        proc.kill()
        raise AssertionError(f"lmos serve did not start: {line!r}")
    return proc, int(m.group(1))
