"""The HTTP API: lmos's own endpoints over a running :class:`lmos.Kernel`.

Every route is a thin translation to the facade or to a syscall made as init,
so HTTP clients get exactly the kernel's semantics (capabilities, quotas,
admission control, audit).  Processes started over HTTP run as ``uid``.  A
client that disconnects from a pending completion cancels it, which kills
the process and frees its KV, as cancelling an awaited ``Kernel.complete``
does.  Streams are server-sent events; subscription happens inside the spawn
syscall (``stream=True``), so no token is lost between spawn and subscribe.

Routes (JSON bodies; errors ``{"error": {"errno", "message"}}`` with a 4xx/5xx):

* ``GET /v1/health``, ``GET /v1/models``, ``GET /v1/apps``
* ``POST /v1/apps`` (install: files, grant, force), ``DELETE /v1/apps/{name}?force=true``
  (operator key only; see :mod:`lmos.server.apps`)
* ``POST /v1/complete`` (``"stream": true`` for SSE), ``POST /v1/chat``
* ``POST /v1/processes`` (spawn an app), ``GET /v1/processes`` (ps),
  ``GET /v1/processes/{pid}``, ``GET /v1/processes/{pid}/events`` (SSE),
  ``POST /v1/processes/{pid}/wait``, ``POST /v1/processes/{pid}/signal``,
  ``DELETE /v1/processes/{pid}`` (kill)
* OpenAI-compatible ``POST /v1/completions`` and ``POST /v1/chat/completions``
  (see :mod:`lmos.server.openai`)
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lmos.errors import SyscallError
from lmos.server import apps, openai
from lmos.server.wire import (
    ChatReq,
    CompleteReq,
    HTTPError,
    SignalReq,
    SpawnReq,
    decode,
    error_response,
    from_syscall,
    json_response,
    sse,
    until_disconnect,
)
from lmos.system import Kernel

log = logging.getLogger("lmos.server")
Handler = Callable[[Request], Awaitable[Response]]


def _pid(request: Request) -> int:
    try:
        return int(request.path_params["pid"])
    except ValueError:
        raise HTTPError(400, "EINVAL", "pid must be an integer") from None


class API:
    """Route handlers bound to one kernel."""

    def __init__(self, kernel: Kernel, *, uid: int, token: str | None = None) -> None:
        self.k = kernel
        self.uid = uid
        self.token = token

    def guard(self, fn: Handler) -> Handler:
        """Auth, then errors to JSON: no handler lets an exception become a 500 page."""

        async def run(request: Request) -> Response:
            if self.token is not None:
                got = request.headers.get("authorization", "")
                if not hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
                    return error_response(401, "EACCES", "missing or wrong bearer token")
            try:
                return await fn(request)
            except HTTPError as exc:
                return error_response(exc.status, exc.errno, exc.message)
            except SyscallError as exc:
                return from_syscall(exc)
            except Exception as exc:  # a bug here must not become an HTML page or a dropped connection
                log.exception("%s %s failed", request.method, request.url.path)
                return error_response(500, "EIO", f"internal error: {type(exc).__name__}: {exc}")

        return run

    # -- information -------------------------------------------------------
    async def health(self, request: Request) -> Response:
        from lmos import __version__

        models = await self.k.syscall("model_list")
        return json_response({"status": "ok", "version": __version__,
                              "models": [m.name for m in models.models]})

    async def models(self, request: Request) -> Response:
        return json_response(await self.k.syscall("model_list"))

    async def apps(self, request: Request) -> Response:
        return json_response(await self.k.syscall("app_list"))

    # -- generation ----------------------------------------------------------
    async def complete(self, request: Request) -> Response:
        req = await decode(request, CompleteReq)
        if (req.prompt is None) == (req.token_ids is None):
            raise HTTPError(400, "EINVAL", "give exactly one of prompt and token_ids")
        if not req.stream:
            prompt = req.prompt if req.prompt is not None else list(req.token_ids or [])
            c = await until_disconnect(request, self.k.complete(
                prompt, **_gen_args(req), model=req.model, priority=req.priority, uid=self.uid))
            return json_response(c)
        pid = await self.start_completion(req)
        return StreamingResponse(self.complete_events(pid), media_type="text/event-stream")

    async def start_completion(self, req: CompleteReq) -> int:
        gen: dict[str, Any] = {k: v for k, v in _gen_args(req).items() if v is not None}
        if req.prompt is not None:
            gen["prompt"] = req.prompt
        else:
            gen["token_ids"] = list(req.token_ids or [])
        r = await self.k.syscall("spawn", app="llm.complete", argv=[json.dumps(gen)], model=req.model,
                                 priority=req.priority, uid=self.uid, stream=True)
        return int(r.pid)

    async def complete_events(self, pid: int) -> AsyncIterator[bytes]:
        """``token`` events, then ``done`` (the completion) or ``error``."""
        async for kind, value in self.follow(pid):
            if kind == "token":
                yield sse("token", {"text": value.text, "token_id": value.token_id})
            elif kind == "done":
                yield sse("done", value)
            elif kind == "error":
                yield sse("error", value)

    async def follow(self, pid: int) -> AsyncIterator[tuple[str, Any]]:
        """Token events of a streamed completion, then its result; the process dies with the client."""
        done = False
        try:
            while True:
                r = await self.k.syscall("events", pid=pid, timeout=None)
                for ev in r.events:
                    if ev.kind == "token":
                        yield "token", ev
                if r.ended:
                    break
            w = await self.k.wait(pid)
            done = True
            if w.exit_status != 0:
                name, _, msg = (w.error or "EIO: failed").partition(": ")
                yield "error", {"errno": name if msg else "EIO", "message": msg or name}
            else:
                yield "done", {**w.result, "pid": pid, "usage": msgspec.to_builtins(w.usage)}
        finally:
            if not done:  # the client went away (or the server stops): end the process
                await self.k.kill_and_reap(pid)

    async def chat(self, request: Request) -> Response:
        req = await decode(request, ChatReq)
        sampling: dict[str, Any] = {k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p),
                                                      ("seed", req.seed)) if v is not None}
        r = await until_disconnect(request, self.k.chat(
            req.messages, req.tools, max_steps=req.max_steps, max_tokens=req.max_tokens, model=req.model,
            uid=self.uid, **sampling))
        return json_response(r)

    # -- processes -------------------------------------------------------------
    async def spawn(self, request: Request) -> Response:
        req = await decode(request, SpawnReq)
        pid = await self.k.spawn(req.app, req.argv, model=req.model, priority=req.priority, weight=req.weight,
                                 token_quota=req.token_quota, uid=self.uid)
        return json_response({"pid": pid}, 201)

    async def ps(self, request: Request) -> Response:
        return json_response({"procs": await self.k.ps()})

    async def proc(self, request: Request) -> Response:
        pid = _pid(request)
        for p in await self.k.ps():
            if p.pid == pid:
                return json_response(p)
        raise HTTPError(404, "ESRCH", f"no such process {pid}")

    async def events(self, request: Request) -> Response:
        pid = _pid(request)
        stream = self.k.stream(pid)  # subscribes now: ESRCH here is still a plain 404

        async def body() -> AsyncIterator[bytes]:
            async for ev in stream:
                yield sse(ev.kind, msgspec.to_builtins(ev))

        return StreamingResponse(body(), media_type="text/event-stream")

    async def wait(self, request: Request) -> Response:
        pid = _pid(request)
        raw = request.query_params.get("timeout")
        try:
            timeout = float(raw) if raw is not None else None
        except ValueError:
            raise HTTPError(400, "EINVAL", "timeout must be a number of seconds") from None
        w = await self.k.syscall("wait", pid=pid, timeout=timeout)
        return json_response(w)

    async def signal(self, request: Request) -> Response:
        pid = _pid(request)
        req = await decode(request, SignalReq)
        await self.k.signal(pid, req.signal)
        return json_response({"pid": pid, "signal": req.signal})

    async def kill(self, request: Request) -> Response:
        pid = _pid(request)
        await self.k.kill(pid)
        return json_response({"pid": pid, "signal": "KILL"})


def _gen_args(req: CompleteReq) -> dict[str, Any]:
    return {"max_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p,
            "top_k": req.top_k, "repetition_penalty": req.repetition_penalty, "seed": req.seed,
            "stop": req.stop, "stop_token_ids": req.stop_token_ids}


def create_app(kernel: Kernel, *, uid: int, token: str | None = None) -> Starlette:
    """The ASGI app for a kernel that is already running (``async with Kernel() as k``)."""
    api = API(kernel, uid=uid, token=token)
    compat = openai.OpenAI(api)
    g = api.guard
    routes = [
        Route("/v1/health", g(api.health), methods=["GET"]),
        Route("/v1/models", g(compat.models), methods=["GET"]),
        Route("/v1/lmos/models", g(api.models), methods=["GET"]),
        Route("/v1/apps", g(api.apps), methods=["GET"]),
        Route("/v1/apps", g(lambda r: apps.install(api, r)), methods=["POST"]),
        Route("/v1/apps/{name}", g(lambda r: apps.remove(api, r)), methods=["DELETE"]),
        Route("/v1/complete", g(api.complete), methods=["POST"]),
        Route("/v1/chat", g(api.chat), methods=["POST"]),
        Route("/v1/processes", g(api.spawn), methods=["POST"]),
        Route("/v1/processes", g(api.ps), methods=["GET"]),
        Route("/v1/processes/{pid}", g(api.proc), methods=["GET"]),
        Route("/v1/processes/{pid}", g(api.kill), methods=["DELETE"]),
        Route("/v1/processes/{pid}/events", g(api.events), methods=["GET"]),
        Route("/v1/processes/{pid}/wait", g(api.wait), methods=["POST"]),
        Route("/v1/processes/{pid}/signal", g(api.signal), methods=["POST"]),
        Route("/v1/completions", g(compat.completions), methods=["POST"]),
        Route("/v1/chat/completions", g(compat.chat_completions), methods=["POST"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        return error_response(code, "ENOENT" if code == 404 else "EINVAL",
                              f"{request.method} {request.url.path}: " + ("no such route" if code == 404
                                                                         else "method not allowed"))

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
