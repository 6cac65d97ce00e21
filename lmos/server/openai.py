"""OpenAI-compatible endpoints, so existing clients and SDKs can talk to lmos.

``/v1/completions`` maps to one ``llm.complete`` process (token-level SSE
with ``"stream": true``, ending in ``data: [DONE]``).  ``/v1/chat/completions``
(:mod:`lmos.server.openai_chat`) renders the conversation in the model's chat
format, with function tools, and streams token by token.  ``GET /v1/models``
lists the loaded models.  Fields that change the result and that lmos does not
implement (``logprobs``, ``echo``, ``best_of``, penalties other than 0,
``response_format`` other than text and ``json_object``, which constrained
decoding enforces) are refused with 400 rather than ignored; unknown fields
are ignored, as SDKs send many optional ones.  The ``model`` field must name
a loaded model (``"default"`` is the first).

Errors on these routes have the OpenAI body shape (``error.message``,
``type``, ``param``, ``code``), with lmos's ``errno`` riding along, so SDKs
raise their usual exception types.  ``/v1/responses`` is served statelessly
(:mod:`lmos.server.openai_responses`): stored responses and
``previous_response_id`` are refused, not faked.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lmos.errors import Errno, SyscallError
from lmos.server.openai_chat import chat_completions
from lmos.server.openai_format import END_MARKERS, TextStream, openai_error
from lmos.server.openai_responses import responses
from lmos.server.session import completion, reaped
from lmos.server.wire import (
    STATUS,
    CompleteReq,
    HTTPError,
    Prob,
    Temp,
    Tokens,
    decode,
    json_response,
    sse,
    until_disconnect,
)

if TYPE_CHECKING:
    from lmos.server.app import API, Caller, Handler


class _Common(msgspec.Struct, kw_only=True):
    model: str = "default"
    max_tokens: Tokens | None = None
    temperature: Temp | None = None
    top_p: Prob | None = None
    stop: str | list[str] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    stream: bool = False
    n: Annotated[int, Meta(ge=1)] = 1
    logprobs: Any = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0

    def check(self) -> None:
        if self.n != 1:
            raise HTTPError(400, "EINVAL", "n > 1 is not supported")
        if self.logprobs not in (None, False, 0):
            raise HTTPError(400, "EINVAL", "logprobs are not supported")
        if self.presence_penalty or self.frequency_penalty:
            raise HTTPError(400, "EINVAL", "presence/frequency penalties are not supported "
                            "(lmos has repetition_penalty on /v1/complete)")

    def stops(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


class CompletionsReq(_Common, kw_only=True):
    prompt: str | list[int | str] = ""
    echo: bool = False
    best_of: int | None = None


def _finish(reason: str) -> str:
    return "length" if reason in ("length", "max_tokens", "quota", "max_steps") else "stop"


class OpenAI:
    def __init__(self, api: API) -> None:
        self.api = api

    def routes(self, guard: Callable[[Handler], Callable[[Request], Awaitable[Response]]]) -> list[Route]:
        """The OpenAI-compatible routes, each answering errors in the OpenAI shape."""
        def r(path: str, fn: Handler, method: str) -> Route:
            return Route(path, _reshaped(guard(_raising(fn))), methods=[method])

        return [r("/v1/models", self.models, "GET"), r("/v1/completions", self.completions, "POST"),
                r("/v1/chat/completions", lambda q, c: chat_completions(self, q, c), "POST"),
                r("/v1/responses", lambda q, c: responses(self, q, c), "POST")]

    async def model(self, c: Caller, name: str) -> str | None:
        names = [m.name for m in (await c.me.call("model_list")).models]
        if name in names:
            return name
        if name in ("", "default"):
            return None
        err = HTTPError(404, "ENOENT", f"model {name!r} is not loaded (loaded: {', '.join(names)})")
        err.param, err.code = "model", "model_not_found"  # type: ignore[attr-defined]
        raise err

    async def spawn_generation(self, c: Caller, gen: dict[str, Any], model: str | None, *,
                               stream: bool) -> int:
        """An ``llm.complete`` child of the caller's session generating ``gen`` (llm_generate fields)."""
        r = await c.me.call("spawn", app="llm.complete", argv=[json.dumps(gen)], model=model, stream=stream)
        return int(r.pid)

    async def models(self, request: Request, c: Caller) -> Response:
        listed = (await c.me.call("model_list")).models
        return json_response({"object": "list", "data": [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "lmos", "driver": m.driver,
             "max_model_len": m.max_model_len} for m in listed]})

    async def completions(self, request: Request, c: Caller) -> Response:
        req = await decode(request, CompletionsReq)
        req.check()
        if req.echo or (req.best_of or 1) > 1:
            raise HTTPError(400, "EINVAL", "echo and best_of are not supported")
        prompt: str | list[int]
        if isinstance(req.prompt, str):
            prompt = req.prompt
        elif all(isinstance(t, int) for t in req.prompt):
            prompt = [int(t) for t in req.prompt]
        elif len(req.prompt) == 1:
            prompt = str(req.prompt[0])
        else:
            raise HTTPError(400, "EINVAL", "prompt: one string, or one list of token ids, per request")
        model = await self.model(c, req.model)
        native = CompleteReq(
            prompt=prompt if isinstance(prompt, str) else None,
            token_ids=None if isinstance(prompt, str) else [int(t) for t in prompt],
            max_tokens=req.max_tokens or 16, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
            stop=req.stops(), model=model, stream=req.stream)
        cid, created, name = f"cmpl-{uuid.uuid4().hex}", int(time.time()), req.model
        pid = await self.api.start_completion(c.me, native)
        if not req.stream:
            r = completion(pid, await until_disconnect(request, reaped(c.me, pid)))
            return json_response({
                "id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"index": 0, "text": r["text"], "finish_reason": _finish(r["finish_reason"]),
                             "logprobs": None}],
                "usage": _usage(r["prompt_tokens"], r["completion_tokens"])})

        events = self.api.follow(c.me, pid)
        # The final text drops the EOS token's text and any stop string; token events do not, so the
        # stream holds back what may still turn out to be one and sends what the final text adds.
        text = TextStream([*END_MARKERS, *(req.stops() or [])], strip=False)

        async def body() -> AsyncIterator[bytes]:
            base = {"id": cid, "object": "text_completion", "created": created, "model": name}
            async for kind, value in events:
                if kind == "token":
                    delta = text.feed(value.text)
                    if delta:
                        yield sse(None, {**base, "choices": [{"index": 0, "text": delta,
                                                              "finish_reason": None, "logprobs": None}]})
                elif kind == "done":
                    yield sse(None, {**base, "choices": [{"index": 0, "text": text.finish(value["text"]),
                                                          "logprobs": None,
                                                          "finish_reason": _finish(value["finish_reason"])}],
                                     "usage": _usage(value["prompt_tokens"], value["completion_tokens"])})
                else:
                    yield sse(None, openai_error(STATUS.get(Errno[value["errno"]], 500), value["errno"],
                                                 value["message"]))
            yield sse(None, "[DONE]")

        return StreamingResponse(body(), media_type="text/event-stream")


def _raising(fn: Handler) -> Handler:
    """``fn`` answering its own errors in the OpenAI shape (with ``param`` and ``code`` when known)."""
    async def run(request: Request, c: Caller) -> Response:
        try:
            return await fn(request, c)
        except HTTPError as exc:
            return json_response(openai_error(exc.status, exc.errno, exc.message, getattr(exc, "param", None),
                                              getattr(exc, "code", None)), exc.status)
        except SyscallError as exc:
            status = STATUS.get(exc.errno, 500)
            return json_response(openai_error(status, exc.errno.name, exc.message), status)

    return run


def _reshaped(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Errors raised before the handler (Host, key, body type) in the OpenAI shape too."""
    async def run(request: Request) -> Response:
        resp = await fn(request)
        if resp.status_code < 400 or resp.media_type != "application/json":
            return resp
        try:
            err = msgspec.json.decode(bytes(resp.body))["error"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return resp
        if "type" in err:  # shaped already
            return resp
        return json_response(openai_error(resp.status_code, err.get("errno", "EIO"), err.get("message", "")),
                             resp.status_code)

    return run


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
