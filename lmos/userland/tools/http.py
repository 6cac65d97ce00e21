"""``http_get``: fetch a URL, if the app's ``net`` capability names the host.

Two rules keep an agent from being turned against the network it runs in:

* the host must match a ``net:`` capability (``net:*.example.com``), or be a
  literal address inside a granted address or network (``net:10.0.0.0/8``);
* every address the host resolves to gets the private-address check, and only
  addresses that pass are connected to, by the literal address that was
  checked, so a DNS answer that changes between lookup and connect (rebinding)
  cannot slip a private address in.  An address passes if ``ipaddress``
  classifies it as global (and not multicast, reserved or site-local, also
  through the IPv4 address an IPv6 one embeds), or if a capability grants it
  literally (``net:127.0.0.1``, ``net:192.168.0.0/16``).  A capability naming
  a host (``net:intranet.example``, ``net:*``) never opens private addresses.

The whole fetch (lookup, connect, TLS, request, response) runs on the event
loop under one deadline (``TIMEOUT``), so a slow or trickling server costs a
socket, never a thread, and a killed process's fetch ends at once.  Only the
DNS lookup blocks; it runs in the tools' own thread pool (:mod:`.pool`) and is
abandoned when cancelled.  The fetched text is untrusted: it taints the caller.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Iterable
from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from lmos.errors import Errno, SyscallError
from lmos.syscalls.tool import Tool, ToolCtx
from lmos.userland.tools.pool import run_blocking

MAX_BYTES = 256 * 1024
MAX_HEADER = 64 * 1024
TIMEOUT = 10.0  # the whole fetch, not each read

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _forms(addr: Address) -> list[Address]:
    """The address and every IPv4 address it carries (mapped, 6to4, Teredo)."""
    out: list[Address] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            out.append(addr.ipv4_mapped)
        if addr.sixtofour is not None:
            out.append(addr.sixtofour)
        if addr.teredo is not None:
            out.extend(addr.teredo)
    return out


def _global(a: Address) -> bool:
    return a.is_global and not (a.is_multicast or a.is_reserved or a.is_unspecified or a.is_private
                                or a.is_loopback or a.is_link_local or getattr(a, "is_site_local", False))


def _public(ip: str) -> bool:
    """Whether ``ip`` is a global unicast address, by ``ipaddress``'s own classification."""
    return all(_global(a) for a in _forms(ipaddress.ip_address(ip.split("%")[0])))


def granted_networks(caps: Iterable[str]) -> list[Network]:
    """The literal addresses and networks the ``net:`` capabilities grant (host names ignored)."""
    out: list[Network] = []
    for cap in caps:
        kind, _, arg = cap.partition(":")
        if kind != "net" or not arg:
            continue
        try:
            out.append(ipaddress.ip_network(arg.strip("[]"), strict=False))
        except ValueError:
            continue
    return out


def _allowed(ip: str, nets: list[Network]) -> bool:
    if _public(ip):
        return True
    addr = ipaddress.ip_address(ip.split("%")[0])
    return any(a in n for a in _forms(addr) for n in nets if a.version == n.version)


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
    if any(c in u.hostname for c in "\r\n\t ") or any(ord(c) < 32 for c in url):
        raise SyscallError(Errno.EINVAL, "control characters in URL")
    return u.scheme, u.hostname.lower(), port, (u.path or "/") + (f"?{u.query}" if u.query else "")


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _connect(scheme: str, host: str, port: int, nets: list[Network]) -> ByteStream:
    try:
        ips = await run_blocking(_resolve, host, port)
    except OSError as exc:
        raise SyscallError(Errno.EIO, f"cannot resolve {host}: {exc}") from None
    refused = [ip for ip in ips if not _allowed(ip, nets)]
    if refused:
        raise SyscallError(
            Errno.EACCES,
            f"{host} resolves to non-public address {refused[0]}; grant that address or its network "
            f"literally (net:{refused[0]}) to allow it",
        )
    tls = scheme == "https"
    error: Exception | None = None
    for ip in ips:  # the literal, checked address: no second lookup can change it
        try:
            if tls:
                return await anyio.connect_tcp(ip, port, tls=True, ssl_context=ssl.create_default_context(),
                                               tls_hostname=host)
            return await anyio.connect_tcp(ip, port)
        except (OSError, ssl.SSLError) as exc:
            error = exc
    raise SyscallError(Errno.EIO, f"cannot connect to {host}:{port}: {error}")


async def _read_body(rx: BufferedByteReceiveStream, headers: dict[str, str], max_bytes: int,
                     host: str) -> bytes:
    too_big = SyscallError(Errno.EFBIG, f"response from {host} is larger than {max_bytes} bytes")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await rx.receive_until(b"\r\n", 1024)).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return bytes(body)
            if len(body) + size > max_bytes:
                raise too_big
            body += await rx.receive_exactly(size)
            await rx.receive_until(b"\r\n", 16)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > max_bytes:
            raise too_big
        return await rx.receive_exactly(length)
    body = bytearray()
    while True:
        try:
            body += await rx.receive()
        except anyio.EndOfStream:
            return bytes(body)
        if len(body) > max_bytes:
            raise too_big


async def fetch(url: str, nets: list[Network], max_bytes: int = MAX_BYTES,
                timeout: float = TIMEOUT) -> tuple[int, str]:
    """GET ``url`` within ``timeout`` seconds in all: (status, text).  ``nets``: the
    private addresses and networks granted literally."""
    scheme, host, port, path = parse(url)
    try:
        with anyio.fail_after(timeout):
            stream = await _connect(scheme, host, port, nets)
            async with stream:
                hostport = host if port in (80, 443) else f"{host}:{port}"
                if ":" in host:
                    hostport = f"[{host}]" if port in (80, 443) else f"[{host}]:{port}"
                await stream.send(
                    f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: lmos-http_get\r\n"
                    "Accept: text/*, application/json\r\nConnection: close\r\n\r\n".encode("latin-1"))
                rx = BufferedByteReceiveStream(stream)
                head = (await rx.receive_until(b"\r\n\r\n", MAX_HEADER)).decode("latin-1")
                status_line, *lines = head.split("\r\n")
                parts = status_line.split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                    raise SyscallError(Errno.EIO, f"GET {url}: not an HTTP response")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
                body = await _read_body(rx, headers, max_bytes, host)
                return int(parts[1]), body.decode("utf-8", errors="replace")
    except TimeoutError:
        raise SyscallError(Errno.ETIMEDOUT, f"{host} did not answer within {timeout:g}s") from None
    except (anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.EndOfStream, anyio.BrokenResourceError,
            OSError, ssl.SSLError, ValueError, UnicodeError) as exc:
        raise SyscallError(Errno.EIO, f"GET {url} failed: {type(exc).__name__}: {exc}") from None


async def http_get(ctx: ToolCtx, args: dict[str, Any]) -> str:
    url = args["url"]
    _, host, _, _ = parse(url)
    nets = granted_networks(ctx.caps)
    literal = host.strip("[]")
    try:
        in_granted = _allowed(literal, nets) and not _public(literal)
    except ValueError:
        in_granted = False  # a name, not an address
    if not ctx.has(f"net:{host}") and not in_granted:
        raise SyscallError(Errno.EPERM, f"http_get needs capability 'net:{host}'")
    ctx.taint()  # whatever comes back was written by someone else
    status, text = await fetch(url, nets, timeout=TIMEOUT)
    if status >= 400:
        raise SyscallError(Errno.EIO, f"GET {url}: HTTP {status}")
    return text


TOOLS = [
    Tool(
        "http_get",
        "Fetch a web page or API response (text).",
        {
            "type": "object",
            "properties": {"url": {"type": "string", "minLength": 8, "maxLength": 2048,
                                   "description": "an http:// or https:// URL"}},
            "required": ["url"],
        },
        http_get,
        timeout=TIMEOUT + 5,
    ),
]
