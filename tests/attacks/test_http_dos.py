"""Slow servers against ``http_get``: a deadline for the whole fetch, no thread held.

A "slowloris" server on 127.0.0.1 answers one byte at a time, never finishing.
Many processes fetch from it at once: each fetch ends at the total deadline
with ETIMEDOUT, a killed process's fetch is abandoned at once (the server sees
the connection close), and meanwhile another user's file syscalls, which need
the kernel's thread pool, finish as if nothing happened.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.errors import SyscallError
from lmos.syscalls.client import Sys
from lmos.userland.tools import http

pytestmark = pytest.mark.anyio


class Loris:
    """Accepts connections and trickles a never-ending header; records when clients hang up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.closed_at: list[float] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + 30  # bounded, whatever the client does
        with conn:
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self.stop.is_set() and time.monotonic() < deadline:
                    conn.sendall(b"X")
                    time.sleep(0.1)
            except OSError:
                self.closed_at.append(time.monotonic())

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def loris() -> Iterator[Loris]:
    srv = Loris()
    yield srv
    srv.close()


async def fetcher(sys: Sys, argv: list[str]) -> Any:
    try:
        await sys.call("tool_call", name="http_get", args={"url": argv[0]})
    except SyscallError as e:
        return e.errno.name
    return "fetched"


async def test_slow_server_hits_the_total_deadline_without_taking_kernel_threads(
        loris: Loris, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "TIMEOUT", 4.0)
    url = f"http://127.0.0.1:{loris.port}/"
    async with kernel(max_queue=256) as k:
        t0 = time.monotonic()
        pids = [await k.spawn(fetcher, [url], caps=["tool:http_get", "net:127.0.0.1"], uid=1001)
                for _ in range(60)]  # more than anyio's default pool of 40 threads

        async def files(sys: Sys, argv: list[str]) -> Any:
            for i in range(20):
                await sys.call("fs_write", path=f"/f{i}", data=str(i))
            return [(await sys.call("fs_read", path=f"/f{i}")).data for i in range(20)]

        await anyio.sleep(0.3)  # every fetch is connected and trickling now
        w = await k.wait(await k.spawn(files, caps=["fs.read", "fs.write"], uid=1002))
        assert w.result == [str(i) for i in range(20)]
        hanging = {p.pid for p in await k.ps()} & set(pids)
        assert hanging == set(pids)  # the file work finished while all 60 fetches still hung
        results = [(await k.wait(pid)).result for pid in pids]
        assert results == ["ETIMEDOUT"] * 60
        assert time.monotonic() - t0 < 10.0  # the deadline is for the whole fetch, not each byte


async def test_killing_a_fetching_process_abandons_the_fetch_at_once(loris: Loris) -> None:
    url = f"http://127.0.0.1:{loris.port}/"
    async with kernel() as k:
        pid = await k.spawn(fetcher, [url], caps=["tool:http_get", "net:127.0.0.1"], uid=1001)
        await anyio.sleep(0.5)
        t0 = time.monotonic()
        await k.kill(pid)
        w = await k.wait(pid)
        assert w.exit_status != 0
        with anyio.fail_after(2):
            while not loris.closed_at:
                await anyio.sleep(0.05)
        assert loris.closed_at[0] - t0 < 1.0  # the connection closed with the kill, not at the deadline
