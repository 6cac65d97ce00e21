"""OpenAI-compatible endpoints, so existing clients and SDKs can talk to lmos.

``/v1/completions`` maps to one ``llm.complete`` process (token-level SSE
with ``"stream": true``, ending in ``data: [DONE]``); ``/v1/chat/completions``
runs the agent loop with no tools (the model's chat template, or lmos's
format for the built-in model) and returns its answer, as one chunk when
streamed.  ``GET /v1/models`` lists the loaded models.  Fields that change the
result and that lmos does not implement (``n > 1``, ``logprobs``, ``echo``,
``best_of``, penalties other than 0) are refused with 400 rather than
ignored; unknown fields are ignored, as SDKs send many optional ones.  The
``model`` field must name a loaded model (``"default"`` is the first).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lmos.server.session import completion, reaped
from lmos.server.wire import (
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
    from lmos.server.app import API, Caller


class _Common(msgspec.Struct, kw_only=True):
    model: str = "default"
    max_tokens: Tokens | None = None
    temperature: Temp | None = None
    top_p: Prob | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: Annotated[int, Meta(ge=1)] = 1
    logprobs: Any = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

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


class ChatCompletionsReq(_Common, kw_only=True):
    messages: list[dict[str, Any]] = msgspec.field(default_factory=list)
    max_completion_tokens: Tokens | None = None


def _finish(reason: str) -> str:
    return "length" if reason in ("length", "max_tokens", "quota", "max_steps") else "stop"


class OpenAI:
    def __init__(self, api: API) -> None:
        self.api = api

    async def _model(self, c: Caller, name: str) -> str | None:
        names = [m.name for m in (await c.me.call("model_list")).models]
        if name in names:
            return name
        if name in ("", "default"):
            return None
        raise HTTPError(404, "ENOENT", f"model {name!r} is not loaded (loaded: {', '.join(names)})")

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
        model = await self._model(c, req.model)
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

        async def body() -> AsyncIterator[bytes]:
            async for kind, value in events:
                chunk: dict[str, Any] = {"id": cid, "object": "text_completion", "created": created,
                                         "model": name}
                if kind == "token":
                    chunk["choices"] = [{"index": 0, "text": value.text, "finish_reason": None,
                                         "logprobs": None}]
                elif kind == "done":
                    chunk["choices"] = [{"index": 0, "text": "", "logprobs": None,
                                         "finish_reason": _finish(value["finish_reason"])}]
                    chunk["usage"] = _usage(value["prompt_tokens"], value["completion_tokens"])
                else:
                    chunk = {"error": value}
                yield sse(None, chunk)
            yield sse(None, "[DONE]")

        return StreamingResponse(body(), media_type="text/event-stream")

    async def chat_completions(self, request: Request, c: Caller) -> Response:
        req = await decode(request, ChatCompletionsReq)
        req.check()
        if not req.messages:
            raise HTTPError(400, "EINVAL", "messages must not be empty")
        model = await self._model(c, req.model)
        sampling: dict[str, Any] = {k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p),
                                                      ("seed", req.seed)) if v is not None}
        if req.stop is not None:
            raise HTTPError(400, "EINVAL", "stop is not supported on chat completions (the chat format "
                            "sets its own)")
        r = await until_disconnect(request, self.api.k.chat(
            req.messages, [], max_steps=1, max_tokens=req.max_completion_tokens or req.max_tokens or 256,
            model=model, uid=c.who.uid, **sampling))
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = _usage(r.usage.prompt_tokens, r.usage.completion_tokens)
        message = {"role": "assistant", "content": r.text}
        if not req.stream:
            return json_response({"id": cid, "object": "chat.completion", "created": created,
                                  "model": req.model, "choices": [{"index": 0, "message": message,
                                               "finish_reason": _finish(r.finish_reason)}],
                                  "usage": usage})

        async def body() -> AsyncIterator[bytes]:
            base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.model}
            yield sse(None, {**base, "choices": [{"index": 0, "delta": message, "finish_reason": None}]})
            yield sse(None, {**base, "choices": [{"index": 0, "delta": {},
                                                  "finish_reason": _finish(r.finish_reason)}],
                             "usage": usage})
            yield sse(None, "[DONE]")

        return StreamingResponse(body(), media_type="text/event-stream")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
