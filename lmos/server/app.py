"""The HTTP API: lmos's own endpoints over a running :class:`lmos.Kernel`.

HTTP is a user, not init.  Each request is checked by
:mod:`lmos.server.access` (Host, Origin, key, body type) and then acts as the
principal its key maps to: its syscalls are made as that principal's session
process (:mod:`lmos.server.session`), so the kernel's own checks (who may
wait for, watch, signal or list which process; capabilities, quotas, audit)
apply to HTTP exactly as to any program.  A client that disconnects from a
pending completion cancels it, which kills the process and frees its KV.
Streams are server-sent events subscribed inside the spawn syscall
(``stream=True``), so no event is lost between spawn and subscribe.

Routes (JSON bodies; errors ``{"error": {"errno", "message"}}`` with a 4xx/5xx):

* ``GET /v1/health``, ``GET /v1/models``, ``GET /v1/apps``
* ``GET /metrics`` (Prometheus; operator only) and one ``lmos.access`` log line per request
  (see :mod:`lmos.server.metrics`)
* ``POST /v1/apps`` (install: files, grant, force), ``DELETE /v1/apps/{name}?force=true``
  (operator key only; see :mod:`lmos.server.apps`)
* ``POST /v1/complete`` (``"stream": true`` for SSE), ``POST /v1/chat``
* ``POST /v1/processes`` (spawn an app; ``"stream": true``: its events as SSE from the start),
  ``GET /v1/processes`` (ps), ``GET /v1/processes/{pid}``, ``GET /v1/processes/{pid}/events`` (SSE),
  ``GET /v1/processes/{pid}/result`` (again and again), ``POST /v1/processes/{pid}/wait``,
  ``POST /v1/processes/{pid}/signal``, ``DELETE /v1/processes/{pid}`` (kill),
  ``GET /v1/processes/{pid}/replay`` (its syscall journal, verified: lmos/server/replay.py)
* OpenAI-compatible ``POST /v1/completions``, ``POST /v1/chat/completions`` and
  ``POST /v1/responses`` (see :mod:`lmos.server.openai`; errors there in the OpenAI shape)
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lmos.errors import Errno, SyscallError
from lmos.server import apps, openai, replay
from lmos.server.access import Access, Principal
from lmos.server.metrics import Metrics, Observed
from lmos.server.session import Session, Sessions, completion, reaped
from lmos.server.wire import (
    MAX_BODY,
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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts as: the principal of its key and that principal's session process."""

    who: Principal
    me: Session


Handler = Callable[[Request, Caller], Awaitable[Response]]


def _pid(request: Request) -> int:
    try:
        return int(request.path_params["pid"])
    except ValueError:
        raise HTTPError(400, "EINVAL", "pid must be an integer") from None


class API:
    """Route handlers bound to one kernel."""

    def __init__(self, kernel: Kernel, *, access: Access, sessions: Sessions) -> None:
        self.k = kernel
        self.access = access
        self.sessions = sessions

    def guard(self, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Access checks, then the caller's session, then errors to JSON: never a 500 page."""

        async def run(request: Request) -> Response:
            try:
                who = self.access.check(request)
                request.state.uid = who.uid  # for the access log
                return await fn(request, Caller(who, await self.sessions.get(who.uid)))
            except HTTPError as exc:
                return error_response(exc.status, exc.errno, exc.message)
            except SyscallError as exc:
                return from_syscall(exc)
            except ClientDisconnect:  # gone mid-body: nobody to answer
                return error_response(499, "EINTR", "client closed the connection")
            except Exception as exc:  # a bug here must not become an HTML page or a dropped connection
                log.exception("%s %s failed", request.method, request.url.path)
                return error_response(500, "EIO", f"internal error: {type(exc).__name__}: {exc}")

        return run

    # -- information -------------------------------------------------------
    async def health(self, request: Request, c: Caller) -> Response:
        from lmos import __version__

        models = await c.me.call("model_list")
        return json_response({"status": "ok", "version": __version__, "uid": c.who.uid,
                              "models": [m.name for m in models.models]})

    async def models(self, request: Request, c: Caller) -> Response:
        return json_response(await c.me.call("model_list"))

    async def apps(self, request: Request, c: Caller) -> Response:
        return json_response(await c.me.call("app_list"))

    # -- generation ----------------------------------------------------------
    async def complete(self, request: Request, c: Caller) -> Response:
        req = await decode(request, CompleteReq)
        if (req.prompt is None) == (req.token_ids is None):
            raise HTTPError(400, "EINVAL", "give exactly one of prompt and token_ids")
        pid = await self.start_completion(c.me, req)
        if not req.stream:
            w = await until_disconnect(request, reaped(c.me, pid))
            return json_response(completion(pid, w))
        events = self.follow(c.me, pid)
        return StreamingResponse(self.complete_events(events), media_type="text/event-stream")

    async def start_completion(self, me: Session, req: CompleteReq) -> int:
        """An ``llm.complete`` child of the caller's session (subscribed when ``req.stream``)."""
        gen: dict[str, Any] = {k: v for k, v in _gen_args(req).items() if v is not None}
        if req.prompt is not None:
            gen["prompt"] = req.prompt
        else:
            gen["token_ids"] = list(req.token_ids or [])
        r = await me.call("spawn", app="llm.complete", argv=[json.dumps(gen)], model=req.model,
                          priority=req.priority, stream=req.stream)
        return int(r.pid)

    async def complete_events(self, events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[bytes]:
        """``token`` events, then ``done`` (the completion) or ``error``."""
        async for kind, value in events:
            if kind == "token":
                yield sse("token", {"text": value.text, "token_id": value.token_id})
            elif kind == "done":
                yield sse("done", value)
            elif kind == "error":
                yield sse("error", value)

    def follow(self, me: Session, pid: int) -> AsyncIterator[tuple[str, Any]]:
        """Token events of a streamed completion, then its result; the process dies with the client.

        With ``n`` choices a ``fork`` item (the choices' sequence ids) comes before their tokens,
        each token's ``pid`` names its choice, and the result holds ``choices``.

        Call it right after the spawn: the subscription is claimed at the call.
        """
        return self._follow(me, pid, me.watched(pid))

    async def _follow(self, me: Session, pid: int,
                      events: AsyncIterator[Any]) -> AsyncIterator[tuple[str, Any]]:
        done = False
        try:
            async for ev in events:
                if ev.kind == "token":
                    yield "token", ev
                elif ev.kind == "fork":  # n choices stream from here (see lmos.syscalls.llm)
                    yield "fork", ev.data["pids"]
            w = await me.wait(pid, keep=False)  # the stream hands the result on
            done = True
            try:
                r = completion(pid, w)
                if isinstance(w.result, dict) and w.result.get("choices"):
                    r["choices"] = w.result["choices"]
                yield "done", r
            except SyscallError as exc:
                yield "error", {"errno": exc.errno.name, "message": exc.message}
        finally:
            if not done:  # the client went away (or the server stops): end the process
                await me.kill_and_reap(pid)

    async def chat(self, request: Request, c: Caller) -> Response:
        req = await decode(request, ChatReq)
        sampling: dict[str, Any] = {k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p),
                                                      ("seed", req.seed)) if v is not None}
        # The agent process runs as the caller's uid (the facade spawns it, the request owns it alone).
        r = await until_disconnect(request, self.k.chat(
            req.messages, req.tools, max_steps=req.max_steps, max_tokens=req.max_tokens, model=req.model,
            uid=c.who.uid, **sampling))
        return json_response(r)

    # -- processes -------------------------------------------------------------
    async def spawn(self, request: Request, c: Caller) -> Response:
        req = await decode(request, SpawnReq)
        r = await c.me.call("spawn", app=req.app, argv=req.argv, model=req.model, priority=req.priority,
                            weight=req.weight, token_quota=req.token_quota, stream=req.stream)
        pid = int(r.pid)
        if not req.stream:
            return json_response({"pid": pid}, 201)
        events = c.me.watched(pid)

        async def body() -> AsyncIterator[bytes]:
            yield sse("spawn", {"pid": pid})
            ended = False
            async for ev in events:
                ended = ended or ev.kind == "exit"
                yield sse(ev.kind, msgspec.to_builtins(ev))
            if ended:  # the exit event carried the result: reap now, keep it readable
                await _collect(c.me, pid)

        # A client that leaves a stream leaves the process running: GET .../result later.
        return StreamingResponse(body(), status_code=201, media_type="text/event-stream",
                                 headers={"location": f"/v1/processes/{pid}"})

    async def ps(self, request: Request, c: Caller) -> Response:
        return json_response({"procs": await _ps(c)})

    async def proc(self, request: Request, c: Caller) -> Response:
        pid = _pid(request)
        for p in await _ps(c):
            if p.pid == pid:
                return json_response(p)
        w = c.me.cached(pid)
        if w is not None:
            return json_response({"pid": pid, "state": w.state, "exit_status": w.exit_status, "reaped": True,
                                  "usage": w.usage})
        raise HTTPError(404, "ESRCH", f"no such process {pid}")

    async def events(self, request: Request, c: Caller) -> Response:
        pid = _pid(request)
        w = c.me.cached(pid)
        if w is not None:  # reaped already: its exit is all there is to see
            evs: AsyncIterator[Any] = _one({"kind": "exit", "pid": pid, "state": w.state,
                                            "exit_status": w.exit_status, "data": w.result})
        else:
            evs = await c.me.watch(pid)  # subscribes now, as the caller: ESRCH/EPERM are still plain 4xx

        async def body() -> AsyncIterator[bytes]:
            ended = False
            async for ev in evs:
                data = ev if isinstance(ev, dict) else msgspec.to_builtins(ev)
                ended = ended or data["kind"] == "exit"
                yield sse(data["kind"], data)
            if ended and w is None:
                await _collect(c.me, pid)

        return StreamingResponse(body(), media_type="text/event-stream")

    async def wait(self, request: Request, c: Caller) -> Response:
        pid = _pid(request)
        raw = request.query_params.get("timeout")
        try:
            timeout = float(raw) if raw is not None else None
        except ValueError:
            raise HTTPError(400, "EINVAL", "timeout must be a number of seconds") from None
        return json_response(await until_disconnect(request, c.me.wait(pid, timeout)))

    async def result(self, request: Request, c: Caller) -> Response:
        """The result of a finished child, as often as asked; 409 EBUSY while it still runs."""
        pid = _pid(request)
        try:
            w = await c.me.wait(pid, timeout=0)
        except SyscallError as exc:
            if exc.errno == Errno.ETIMEDOUT:
                raise HTTPError(409, "EBUSY", f"process {pid} is still running (POST "
                                f"/v1/processes/{pid}/wait waits for it)") from None
            raise
        return json_response(w)

    async def signal(self, request: Request, c: Caller) -> Response:
        pid = _pid(request)
        req = await decode(request, SignalReq)
        self._not_a_session(pid)
        await c.me.call("kill", pid=pid, signal=req.signal)
        return json_response({"pid": pid, "signal": req.signal})

    async def kill(self, request: Request, c: Caller) -> Response:
        pid = _pid(request)
        self._not_a_session(pid)
        await c.me.call("kill", pid=pid, signal="KILL")
        return json_response({"pid": pid, "signal": "KILL"})

    def _not_a_session(self, pid: int) -> None:
        if pid in self.sessions.pids():
            raise HTTPError(403, "EPERM", f"process {pid} is an HTTP session (it ends with the server)")


async def _ps(c: Caller) -> list[Any]:
    """What the caller's session may see: the kernel lists only its uid's processes (see syscalls.access)."""
    return list((await c.me.call("ps")).procs)


async def _collect(me: Session, pid: int) -> None:
    """Reap a child whose exit a client has just read (its result stays readable from the cache)."""
    try:
        await me.wait(pid, timeout=5)
    except SyscallError:
        pass  # not ours to reap (watched, not spawned, by this key)


async def _one(ev: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield ev


def _gen_args(req: CompleteReq) -> dict[str, Any]:
    return {"max_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p,
            "top_k": req.top_k, "repetition_penalty": req.repetition_penalty, "seed": req.seed,
            "stop": req.stop, "stop_token_ids": req.stop_token_ids}


def create_app(kernel: Kernel, *, uid: int, token: str | None = None, keys: Mapping[str, int] | None = None,
               allowed_hosts: set[str] | None = None, max_body: int = MAX_BODY,
               sessions: Sessions | None = None) -> Starlette:
    """The ASGI app for a kernel that is already running (``async with Kernel() as k``).

    ``keys`` maps API keys to uids (``token`` is one more key, for ``uid``); with
    none, every client acts as ``uid``.  ``allowed_hosts``: the Host header
    values served (None: any; :func:`lmos.server.serve` always passes a list).
    """
    principals = dict(keys or {})
    if token is not None:
        principals[token] = uid
    api = API(kernel, access=Access(uid=uid, keys=principals, allowed_hosts=allowed_hosts),
              sessions=sessions or Sessions(kernel))
    compat = openai.OpenAI(api)
    g = api.guard
    metrics = Metrics(kernel, api.access)  # /metrics and the access log (lmos.server.metrics)
    routes = [
        Route("/metrics", metrics.scrape, methods=["GET"]),
        Route("/v1/health", g(api.health), methods=["GET"]),
        Route("/v1/lmos/models", g(api.models), methods=["GET"]),
        Route("/v1/apps", g(api.apps), methods=["GET"]),
        Route("/v1/apps", g(lambda r, c: apps.install(api, r, c)), methods=["POST"]),
        Route("/v1/apps/{name}", g(lambda r, c: apps.remove(api, r, c)), methods=["DELETE"]),
        Route("/v1/complete", g(api.complete), methods=["POST"]),
        Route("/v1/chat", g(api.chat), methods=["POST"]),
        Route("/v1/processes", g(api.spawn), methods=["POST"]),
        Route("/v1/processes", g(api.ps), methods=["GET"]),
        Route("/v1/processes/{pid}", g(api.proc), methods=["GET"]),
        Route("/v1/processes/{pid}", g(api.kill), methods=["DELETE"]),
        Route("/v1/processes/{pid}/events", g(api.events), methods=["GET"]),
        Route("/v1/processes/{pid}/result", g(api.result), methods=["GET"]),
        Route("/v1/processes/{pid}/wait", g(api.wait), methods=["POST"]),
        Route("/v1/processes/{pid}/signal", g(api.signal), methods=["POST"]),
        Route("/v1/processes/{pid}/replay", g(lambda r, c: replay.get(api, r, c)), methods=["GET"]),
        *compat.routes(g),  # /v1/models, /v1/completions, /v1/chat/completions
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        return error_response(code, "ENOENT" if code == 404 else "EINVAL",
                              f"{request.method} {request.url.path}: " + ("no such route" if code == 404
                                                                         else "method not allowed"))

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found},
                    middleware=[Middleware(Observed, metrics=metrics)])
    app.state.metrics = metrics
    app.state.max_body = max_body
    app.state.api = api
    return app
