"""SSRF: a ``net:`` capability naming a host never opens private addresses behind it.

Attacks: a granted host name that resolves to loopback (``localhost``), a
wildcard grant with private literals in every spelling (decimal, IPv4-mapped
IPv6, 6to4, carrier-grade NAT, site-local), and each is refused while another
user's process keeps working.  A literal private address or network granted
explicitly is the only way in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kutil import kernel

import lmos
from lmos.errors import SyscallError
from lmos.syscalls.client import Sys
from lmos.userland.tools.http import _public, granted_networks

pytestmark = pytest.mark.anyio


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"internal secret"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


async def fetch_as(k: lmos.Kernel, caps: list[str], urls: list[str], uid: int = 1001) -> list[str]:
    async def prog(sys: Sys, argv: list[str]) -> Any:
        out: list[str] = []
        for url in urls:
            try:
                out.append((await sys.call("tool_call", name="http_get", args={"url": url})).text)
            except SyscallError as e:
                out.append(f"{e.errno.name}: {e.message}")
        return out

    w = await k.wait(await k.spawn(prog, caps=["tool:http_get", *caps], uid=uid))
    assert w.exit_status == 0, w.error
    return list(w.result)


async def bystander(k: lmos.Kernel) -> int:
    async def work(sys: Sys, argv: list[str]) -> Any:
        await sys.call("kv_set", key="k", value="v")
        return (await sys.call("llm_generate", prompt="hi", max_tokens=3)).completion_tokens

    return await k.spawn(work, caps=["kv", "llm"], uid=1002)


def test_every_non_global_range_is_private() -> None:
    for ip in ["100.64.0.1", "fec0::1", "2002:7f00:1::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "::127.0.0.1",
               "169.254.169.254", "fd00::1", "ff02::1", "239.1.2.3", "198.18.0.1", "0.0.0.0", "::"]:
        assert not _public(ip), ip
    assert _public("8.8.8.8") and _public("2606:4700::1111")
    assert [str(n) for n in granted_networks(["net:*", "net:10.0.0.0/8", "net:[::1]", "net:x.example"])] == [
        "10.0.0.0/8", "::1/128"]


async def test_a_granted_name_or_wildcard_never_reaches_private_addresses(port: int) -> None:
    async with kernel() as k:
        other = await bystander(k)
        out = await fetch_as(k, ["net:localhost", "net:*"], [
            f"http://localhost:{port}/",  # a name granted by name, resolving to loopback
            f"http://127.0.0.1:{port}/",  # a literal matched only by the wildcard
            f"http://2130706433:{port}/",  # 127.0.0.1 spelled as one decimal number
            f"http://[::ffff:127.0.0.1]:{port}/",
            f"http://100.64.0.1:{port}/",
        ])
        assert all(o.startswith("EACCES") and "non-public" in o for o in out), out
        assert not any("internal secret" in o for o in out)
        w = await k.wait(other)
        assert w.exit_status == 0 and w.result == 3


async def test_only_a_literal_address_or_network_grant_opens_it(port: int) -> None:
    async with kernel() as k:
        out = await fetch_as(k, ["net:127.0.0.0/8"], [f"http://127.0.0.1:{port}/"])
        assert out == ["internal secret"]
        out = await fetch_as(k, ["net:127.0.0.1"], [f"http://127.0.0.1:{port}/", f"http://localhost:{port}/"])
        assert out[0] == "internal secret"
        assert out[1].startswith(("EPERM", "EACCES")), out  # the name is not granted, only the address
        out = await fetch_as(k, ["net:10.0.0.0/8"], [f"http://127.0.0.1:{port}/"])
        assert out[0].startswith("EPERM"), out
