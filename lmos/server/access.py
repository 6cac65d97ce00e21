"""Who may talk to the HTTP API, and as whom: keys, Host and Origin, body types.

Checked before any route runs, in this order:

* **Host.** Only ``Host`` headers from an allow-list are served.  It defaults
  to the listen address plus ``localhost``, ``127.0.0.1`` and ``[::1]``, each
  with the port, so real clients keep working while a DNS-rebinding page
  (``Host: evil.example:8080`` resolving to 127.0.0.1) is refused.
* **Origin.** A browser names the page that sent a request; one that is not
  an allowed host is refused, so a page elsewhere cannot drive the API even
  with a body-less request (which carries no Content-Type to refuse).
* **Key.** With keys configured, ``Authorization: Bearer KEY`` picks the
  principal (the uid the key maps to); without one the request is refused.
  With no key configured every client is the one default principal, which
  :func:`lmos.server.serve` allows on loopback only.
* **Body type.** A request with a body must say ``application/json``: a
  cross-site ``text/plain`` or form POST (which a browser sends without a
  CORS preflight) is refused before it is read.
"""

from __future__ import annotations

import hmac
import ipaddress
import pwd
import socket
from collections.abc import Iterable, Mapping

import msgspec
from starlette.requests import Request

from lmos.errors import Errno, SyscallError
from lmos.server.wire import HTTPError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class Principal(msgspec.Struct, frozen=True):
    """The user a request acts as; ``keyed``: it showed a configured key (not just loopback)."""

    uid: int
    keyed: bool


def resolve_uid(user: str | int) -> int:
    """A user name or numeric uid (as ``[users] keys`` values are written) as a uid."""
    if isinstance(user, int):
        if user < 0:
            raise SyscallError(Errno.EINVAL, f"bad uid {user}")
        return user
    text = user.strip()
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise SyscallError(Errno.EINVAL, f"API key maps to unknown user {text!r}") from None


def resolve_keys(keys: Mapping[str, str | int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, user in keys.items():
        if not key:
            raise SyscallError(Errno.EINVAL, "an API key must not be empty")
        out[key] = resolve_uid(user)
    return out


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def host_port(host: str, port: int) -> str:
    """How a client writes ``host`` and ``port`` in a Host header (IPv6 in brackets)."""
    h = host.lower()
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"{h}:{port}"


def default_hosts(listen: str, port: int, extra: Iterable[str] = ()) -> set[str]:
    """The allowed ``Host`` values: the listen address and loopback names with the port, plus ``extra``.

    An ``extra`` entry without a port gets the port too; ``*`` allows any Host.  A
    wildcard listen address (``0.0.0.0``, ``::``) is no name a client uses, so the
    machine's host name stands in for it; other names and addresses go in ``extra``.
    """
    names = [listen, *LOOPBACK_NAMES]
    if listen in ("0.0.0.0", "::", ""):
        names.append(socket.gethostname())
    out = {host_port(h, port) for h in names}
    if port == 80:  # clients leave the default port out
        out |= {host_port(h, port).rsplit(":", 1)[0] for h in names}
    for e in extra:
        e = e.strip().lower()
        if e == "*" or (e.rsplit(":", 1)[-1].isdigit() and not e.endswith("]")):
            out.add(e)
        else:
            out.add(host_port(e, port))
            if port == 80:
                out.add(host_port(e, port).rsplit(":", 1)[0])
    return out


class Access:
    """The checks above, for one server."""

    def __init__(self, *, uid: int, keys: Mapping[str, int], allowed_hosts: set[str] | None) -> None:
        self.uid = uid
        self.keys = [(k.encode(), v) for k, v in keys.items()]
        self.allowed = allowed_hosts  # None: any Host (an embedder that fronts the app itself)

    def check(self, request: Request) -> Principal:
        self._host(request)
        p = self._principal(request)
        self._body_type(request)
        return p

    def _host(self, request: Request) -> None:
        if self.allowed is None or "*" in self.allowed:
            return
        host = request.headers.get("host", "").strip().lower()
        if host not in self.allowed:
            shown = host if len(host) <= 80 else host[:80] + "..."
            raise HTTPError(403, "EACCES", f"Host {shown!r} is not served here (allowed: "
                            f"{', '.join(sorted(self.allowed))}; lmos serve --allow-host adds one)")
        origin = request.headers.get("origin")
        if origin is not None:
            scheme, sep, rest = origin.lower().partition("://")
            netloc = rest.split("/", 1)[0]
            if netloc and ":" not in netloc.rsplit("]", 1)[-1]:
                netloc = f"{netloc}:{443 if scheme == 'https' else 80}"
            if not sep or netloc not in self.allowed:
                raise HTTPError(403, "EACCES", f"cross-site request from Origin {origin[:80]!r} refused")

    def _principal(self, request: Request) -> Principal:
        if not self.keys:
            return Principal(self.uid, keyed=False)
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        # the scheme is case-insensitive (RFC 9110 11.1): some clients send "bearer"
        got = token.strip().encode() if scheme.lower() == "bearer" else b""
        found: int | None = None
        for key, uid in self.keys:  # every key compared, in constant time: no timing hint of which is close
            if got and hmac.compare_digest(got, key):
                found = uid
        if found is None:
            raise HTTPError(401, "EACCES", "missing or wrong API key (Authorization: Bearer KEY)")
        return Principal(found, keyed=True)

    @staticmethod
    def _body_type(request: Request) -> None:
        h = request.headers
        ctype = h.get("content-type")
        has_body = h.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in h
        if ctype is None and not has_body:
            return
        media = (ctype or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise HTTPError(415, "EINVAL", f"request bodies must be application/json, not "
                            f"{(ctype or 'untyped')[:60]!r}")
