"""``http_get``: fetch a URL, if the app's ``net`` capability names the host.

Two rules keep an agent from being turned against the network it runs in:
the host must match a ``net:`` capability (``net:*.example.com``), and the
address actually connected to must be a public one: loopback, private,
link-local, multicast and reserved addresses are refused unless the exact host
is named in a capability (``net:127.0.0.1``).  The address is checked on the
connected socket, so a DNS answer that changes between lookup and connect
(rebinding) is caught too.  The fetched text is untrusted: it taints the caller.
"""

from __future__ import annotations

import http.client
import ipaddress
import urllib.parse
from typing import Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.syscalls.tool import Tool, ToolCtx

MAX_BYTES = 256 * 1024
TIMEOUT = 10.0


def _public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (
        addr.is_loopback
        or addr.is_private
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path-with-query) of an http(s) URL, or EINVAL."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise SyscallError(Errno.EINVAL, f"not an http(s) URL: {url}")
    if u.username or u.password:
        raise SyscallError(Errno.EINVAL, "URLs with credentials are not allowed")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise SyscallError(Errno.EINVAL, f"bad port in {url}") from None
    return u.scheme, u.hostname.lower(), port, (u.path or "/") + (f"?{u.query}" if u.query else "")


def fetch(url: str, explicit: bool, max_bytes: int = MAX_BYTES, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Blocking GET (run in a thread): (status, text)."""
    scheme, host, port, path = parse(url)
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as exc:
            raise SyscallError(Errno.EIO, f"cannot connect to {host}:{port}: {exc}") from None
        peer = conn.sock.getpeername()[0]
        if not explicit and not _public(peer):
            raise SyscallError(
                Errno.EACCES,
                f"{host} resolves to non-public address {peer}; name it "
                f"explicitly in a net capability to allow it",
            )
        conn.request(
            "GET", path, headers={"User-Agent": "lmos-http_get", "Accept": "text/*, application/json"}
        )
        resp = conn.getresponse()
        body = resp.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise SyscallError(Errno.EFBIG, f"response from {host} is larger than {max_bytes} bytes")
        return resp.status, body.decode("utf-8", errors="replace")
    except TimeoutError:
        raise SyscallError(Errno.ETIMEDOUT, f"{host} did not answer within {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise SyscallError(Errno.EIO, f"GET {url} failed: {exc}") from None
    finally:
        conn.close()


async def http_get(ctx: ToolCtx, args: dict[str, Any]) -> str:
    url = args["url"]
    _, host, _, _ = parse(url)
    if not ctx.has(f"net:{host}"):
        raise SyscallError(Errno.EPERM, f"http_get needs capability 'net:{host}'")
    explicit = f"net:{host}" in ctx.caps
    ctx.taint()  # whatever comes back was written by someone else
    status, text = await anyio.to_thread.run_sync(fetch, url, explicit)
    if status >= 400:
        raise SyscallError(Errno.EIO, f"GET {url}: HTTP {status}")
    return text


TOOLS = [
    Tool(
        "http_get",
        "Fetch a web page or API response (text).",
        {
            "type": "object",
            "properties": {"url": {"type": "string", "minLength": 8, "maxLength": 2048}},
            "required": ["url"],
        },
        http_get,
        timeout=TIMEOUT + 5,
    ),
]
