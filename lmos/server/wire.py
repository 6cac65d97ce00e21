"""Wire types and errors of the HTTP API.

Requests are msgspec structs decoded straight from the body, so a wrong type,
a missing field or (for lmos's own endpoints) an unknown field is a 400 with
one line saying which, before anything runs.  Kernel errors keep their errno:
the body is always ``{"error": {"errno": NAME, "message": TEXT}}`` and the
status follows the errno (ENOENT/ESRCH 404, EPERM/EACCES 403, EAGAIN 429 ...),
so a client can branch on either.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import anyio
import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from lmos.errors import Errno, SyscallError

STATUS: dict[Errno, int] = {
    Errno.EINVAL: 400, Errno.EFAULT: 400, Errno.E2BIG: 413, Errno.ENOENT: 404, Errno.ESRCH: 404,
    Errno.EPERM: 403, Errno.EACCES: 403, Errno.EEXIST: 409, Errno.EAGAIN: 429, Errno.EBUSY: 409,
    Errno.ECHILD: 404, Errno.ETIMEDOUT: 504, Errno.ENOMEM: 503, Errno.ECANCELED: 409,
    Errno.EDQUOT: 429, Errno.ENOSPC: 507, Errno.EFBIG: 413, Errno.ENOTDIR: 400, Errno.EISDIR: 400,
    Errno.EROFS: 403, Errno.EINTR: 409, Errno.ENOSYS: 501, Errno.ENOTEMPTY: 409,
}

Tokens = Annotated[int, Meta(ge=1, le=1 << 20)]
Temp = Annotated[float, Meta(ge=0.0, le=100.0)]
Prob = Annotated[float, Meta(gt=0.0, le=1.0)]


class CompleteReq(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    prompt: str | None = None
    token_ids: list[Annotated[int, Meta(ge=0)]] | None = None
    max_tokens: Tokens = 256
    temperature: Temp | None = None
    top_p: Prob | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    model: str | None = None
    priority: int = 0
    stream: bool = False


class ChatReq(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    messages: list[dict[str, Any]]
    tools: list[str] = msgspec.field(default_factory=list)
    max_steps: Annotated[int, Meta(ge=1, le=64)] = 8
    max_tokens: Tokens = 256
    temperature: Temp | None = None
    top_p: Prob | None = None
    seed: int | None = None
    model: str | None = None


class SpawnReq(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    app: str
    argv: list[str] = msgspec.field(default_factory=list)
    model: str | None = None
    priority: int = 0
    weight: Annotated[float, Meta(gt=0.0)] = 1.0
    token_quota: Annotated[int, Meta(ge=1)] | None = None
    stream: bool = False  # answer with the process's events (SSE), subscribed at spawn


class SignalReq(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    signal: str | int = "TERM"


class HTTPError(Exception):
    """An error that is the client's fault before the kernel is involved (bad JSON, auth)."""

    def __init__(self, status: int, errno: str, message: str) -> None:
        super().__init__(message)
        self.status, self.errno, self.message = status, errno, message


def json_response(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


def error_response(status: int, errno: str, message: str) -> Response:
    return json_response({"error": {"errno": errno, "message": message}}, status)


def from_syscall(exc: SyscallError) -> Response:
    return error_response(STATUS.get(exc.errno, 500), exc.errno.name, exc.message)


T = TypeVar("T")


MAX_BODY = 8 << 20


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it passes the limit: a declared length over it is
    refused unread, and a chunked one is counted while it streams in, never buffered whole first."""
    limit: int = getattr(request.app.state, "max_body", MAX_BODY)
    declared = request.headers.get("content-length")
    too_big = HTTPError(413, "E2BIG", f"request body over {limit} bytes")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_big
        except ValueError:
            raise HTTPError(400, "EINVAL", "bad Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def decode(request: Request, kind: type[T]) -> T:
    """The body as ``kind``; HTTPError 400 with msgspec's one-line reason otherwise."""
    body = await read_body(request)
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise HTTPError(400, "EINVAL", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise HTTPError(400, "EINVAL", f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a JSON string: the client's fault, not a 500
        raise HTTPError(400, "EINVAL", f"body is not valid UTF-8 JSON: bad byte at offset {exc.start}") \
            from None


def sse(event: str | None, data: Any) -> bytes:
    """One server-sent event (``data`` as one JSON line, or a raw string)."""
    payload = data if isinstance(data, str) else msgspec.json.encode(data).decode()
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (the facade then kills its process)."""
    box: list[T] = []
    failed: list[Exception] = []

    async def run(scope: anyio.CancelScope) -> None:
        try:
            box.append(await work)
        except Exception as exc:  # raised below, outside the task group (which would wrap it)
            failed.append(exc)
        scope.cancel()

    async def watch(scope: anyio.CancelScope) -> None:
        while True:
            msg = await request.receive()
            if msg["type"] == "http.disconnect":
                scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, tg.cancel_scope)
        tg.start_soon(watch, tg.cancel_scope)
    if failed:
        raise failed[0]
    if not box:
        raise HTTPError(499, "EINTR", "client closed the connection")
    return box[0]
