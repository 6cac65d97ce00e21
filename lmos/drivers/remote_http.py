"""HTTP to an OpenAI-compatible server: streamed events, failures sorted, the 429 gate, probes at load.

Failures come in three kinds.  *Transient* ones (a timeout, a 5xx, a lost
connection) are worth retrying: :class:`Transient`, which the driver retries with
backoff up to its limit and then turns into ``EIO``.  A 429 is the server asking
everybody to slow down, so it closes the gate of the whole driver
(:meth:`Remote.back_off`) for the time the server asks (``Retry-After``) or a
backoff, and every request waits at the gate before it is sent.  Anything else
(a 4xx) is the request's fault and fails at once, with an errno that says why.

Loading checks the server once, synchronously, with a short timeout, so bad
input is one line at load and never a hang: an unreachable server, a wrong API
key, a model name the server does not serve.
"""

from __future__ import annotations

import json
import random
import ssl
import time
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import httpx
import msgspec

from lmos.errors import Errno, SyscallError

PROBE_TIMEOUT = 10.0  # seconds for each request made while loading
_JSON = {"content-type": "application/json"}


class Transient(Exception):
    """A failure worth retrying (timeout, 5xx, lost connection, 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.rate_limited = rate_limited


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        msg = err.get("message") if isinstance(err, dict) else None
        return str(msg if msg else err)[:200]
    except (ValueError, AttributeError):
        return body.decode("utf-8", errors="replace").strip()[:200]


def status_error(status: int, body: bytes, what: str) -> SyscallError:
    """A 4xx reply as the errno a syscall fails with."""
    errnos = {401: Errno.EACCES, 403: Errno.EACCES, 404: Errno.ENOENT, 413: Errno.E2BIG}
    errno = errnos.get(status, Errno.EINVAL)
    return SyscallError(errno, f"{what}: HTTP {status}: {_error_text(body)}")


class Remote:
    """One server: its base URL, key and timeouts, its HTTP connections and the 429 gate.

    Each stream gets a client of its own that holds one kept-alive connection, taken from a
    free list (last freed first, so sequential requests reuse one connection) and given back
    when the stream ends; the kernel's in-flight limit bounds how many there are.  One
    client with a pool of N connections would do the same, but httpx's pool checks every
    idle connection's socket (a poll and a dict of socket attributes each) each time a
    request starts or ends: with 16 streams that cost more than the rest of the driver."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float, name: str) -> None:
        self.url = url.rstrip("/")
        self.name = name
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.paused_until = 0.0  # monotonic time until which no request is sent (a 429)
        self.rate_limited = 0  # 429s seen (statistics)
        self._free: list[httpx.AsyncClient] = []  # clients whose connection no stream uses now
        self._clients: list[httpx.AsyncClient] = []
        self._tls: ssl.SSLContext | None = None  # one for all clients (each would load the CA bundle)

    def _take(self) -> httpx.AsyncClient:
        if self._free:
            return self._free.pop()
        if self._tls is None and self.url.startswith("https:"):
            self._tls = httpx.create_ssl_context()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10))
        client = httpx.AsyncClient(headers=self.headers, limits=limits, timeout=timeout,
                                   verify=self._tls if self._tls is not None else True)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        clients, self._clients, self._free = self._clients, [], []
        for client in clients:
            await client.aclose()

    def back_off(self, seconds: float) -> None:
        """A 429: nobody sends before ``seconds`` from now."""
        self.rate_limited += 1
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def gate(self) -> None:
        while (wait := self.paused_until - time.monotonic()) > 0:
            await anyio.sleep(wait)

    async def events(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST ``body`` with ``stream: true`` and yield each SSE ``data:`` JSON object.

        Raises :class:`Transient` or :class:`SyscallError` (see the module doc).
        """
        what = f"remote model {self.name}"
        client = self._take()
        try:
            raw_body = msgspec.json.encode(body)  # (a context of token ids: several times faster than json)
            async with client.stream("POST", self.url + path, content=raw_body, headers=_JSON) as resp:
                if resp.status_code != 200:
                    raw = await resp.aread()
                    if resp.status_code == 429:
                        raise Transient(f"HTTP 429: {_error_text(raw)}", rate_limited=True,
                                        retry_after=_retry_after(resp.headers.get("retry-after")))
                    if resp.status_code >= 500:
                        raise Transient(f"HTTP {resp.status_code}: {_error_text(raw)}")
                    raise status_error(resp.status_code, raw, what)
                finished = False
                async for data in _sse_data(resp):
                    if finished:
                        continue  # (read to the end, so that the connection is kept for the next request)
                    if data == b"[DONE]":
                        finished = True
                        continue
                    try:
                        doc = msgspec.json.decode(data)
                    except msgspec.DecodeError:
                        raise Transient(f"bad event from the server: {bytes(data[:80])!r}") from None
                    if isinstance(doc, dict) and "error" in doc:
                        raise Transient(f"error event: {_error_text(data)}")
                    if isinstance(doc, dict):
                        yield doc
                if not finished:
                    raise Transient("the stream ended without [DONE]")
        except httpx.TimeoutException:
            raise Transient(f"no reply within {self.timeout:g}s") from None
        except httpx.TransportError as exc:
            raise Transient(f"connection lost: {type(exc).__name__}: {exc}") from None
        finally:
            self._free.append(client)


async def _sse_data(resp: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The payload of each ``data:`` line of an SSE body, as bytes (msgspec decodes bytes as they
    are: no text decoding and line splitting by httpx first, which cost more than the JSON)."""
    rest = b""
    async for chunk in resp.aiter_bytes():
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if rest.startswith(b"data:"):
        yield rest[5:].strip()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with jitter: about base * 2**attempt, at most ``cap``."""
    return float(min(cap, base * 2.0 ** attempt) * (0.5 + random.random() / 2))


# -- load-time probes (synchronous: load_driver runs in a worker thread) ------------------------
def probe_models(url: str, api_key: str | None, name: str, timeout: float) -> dict[str, Any]:
    """``GET /models``: the entry of the served model ``name``; one-line errors otherwise."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    where = f"remote model server {url}"
    try:
        r = httpx.get(url.rstrip("/") + "/models", headers=headers, timeout=min(timeout, PROBE_TIMEOUT))
    except httpx.TimeoutException:
        raise SyscallError(Errno.ETIMEDOUT, f"{where} did not answer within "
                           f"{min(timeout, PROBE_TIMEOUT):g}s") from None
    except httpx.TransportError as exc:
        raise SyscallError(Errno.EIO, f"{where} is unreachable: {exc or type(exc).__name__}") from None
    if r.status_code in (401, 403):
        raise SyscallError(Errno.EACCES, f"{where} refused the API key (HTTP {r.status_code}): "
                           f"{_error_text(r.content)}")
    if r.status_code != 200:
        raise SyscallError(Errno.EIO, f"{where}: GET /models answered HTTP {r.status_code}: "
                           f"{_error_text(r.content)}")
    try:
        data = r.json().get("data", [])
        served = {str(m["id"]): m for m in data if isinstance(m, dict) and "id" in m}
    except (ValueError, AttributeError, TypeError):
        raise SyscallError(Errno.EIO, f"{where}: GET /models is not an OpenAI model list") from None
    if name not in served:
        listed = ", ".join(sorted(served)) or "none"
        raise SyscallError(Errno.ENOENT, f"{where} does not serve model {name!r} (it serves: {listed})")
    return dict(served[name])


def probe_token_prompts(url: str, api_key: str | None, name: str, token_ids: list[int],
                        timeout: float) -> bool:
    """Does ``POST /completions`` accept a prompt of token ids?  (One token generated.)"""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": name, "prompt": token_ids, "max_tokens": 1, "temperature": 0}
    try:
        r = httpx.post(url.rstrip("/") + "/completions", json=body, headers=headers,
                       timeout=min(timeout, PROBE_TIMEOUT))
    except httpx.HTTPError:
        return False
    return r.status_code == 200
