"""``POST /v1/chat/completions``: one ``llm.complete`` process per choice, streamed token by token.

The conversation is rendered once (:mod:`lmos.server.openai_format`) and each
of the ``n`` choices is a child of the caller's session process generating from
it, so every choice is scheduled, metered and audited as the caller's user,
and a client that goes away kills all of them.  The ``n`` children share the
prompt's KV through the driver's prefix cache; the kernel has no process-level
fork syscall yet, so a choice is a sibling process, not a forked context.  With
a ``seed``, choice ``i`` samples with ``seed + i`` (the same seed would give
``n`` copies of one answer).

Client tools are never run here: a call comes back as ``tool_calls`` for the
client to run.  lmos's own server-side tools are the extension field
``lmos_tools`` (the agent loop of :meth:`lmos.Kernel.chat`, as the caller's uid).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lmos.chatformat import END
from lmos.errors import Errno, SyscallError
from lmos.server.openai_format import (
    TextStream,
    bad,
    check_tools,
    lmos_segments,
    markers,
    normalize,
    openai_error,
    parse_reply,
    prefill,
    template_messages,
)
from lmos.server.session import completion, reaped
from lmos.server.wire import Prob, Temp, Tokens, decode, json_response, sse, until_disconnect

if TYPE_CHECKING:
    from lmos.server.app import Caller
    from lmos.server.openai import OpenAI


class ChatCompletionsReq(msgspec.Struct, kw_only=True):
    """The fields lmos reads; unknown ones (``user``, ``metadata``, ``store`` ...) are ignored."""

    model: str = "default"
    messages: list[dict[str, Any]] = msgspec.field(default_factory=list)
    max_tokens: Tokens | None = None
    max_completion_tokens: Tokens | None = None
    temperature: Temp | None = None
    top_p: Prob | None = None
    stop: str | list[str] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1 - 64)] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: Annotated[int, Meta(ge=1, le=16)] = 1
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    lmos_tools: list[str] | None = None  # extension: lmos's own tools, run server-side
    lmos_max_steps: Annotated[int, Meta(ge=1, le=64)] = 8

    def check(self) -> list[str]:
        """Refuse what would change the result and is not implemented; return the stop strings."""
        if not self.messages:
            raise bad("messages must not be empty", "messages")
        if self.logprobs or self.top_logprobs:
            raise bad("logprobs are not supported", "logprobs")
        if self.presence_penalty or self.frequency_penalty:
            which = "presence_penalty" if self.presence_penalty else "frequency_penalty"
            raise bad("presence/frequency penalties are not supported (lmos has repetition_penalty "
                      "on /v1/complete)", which)
        if self.logit_bias:
            raise bad("logit_bias is not supported", "logit_bias")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise bad(f"response_format {kind!r} is not supported: lmos has no constrained decoding yet, "
                      "and an unenforced JSON mode would be a promise it cannot keep", "response_format")
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise bad("stop: at most 4 strings of 1 to 256 characters", "stop")
        return stops


class Plan(msgspec.Struct, kw_only=True):
    """How one request generates: the rendered prompt and how to read the reply."""

    fmt: str
    gen: dict[str, Any]
    prefill: str
    cut: list[str]
    mode: str
    one_call: bool
    names: list[str]  # the declared functions: the only ones a reply may call


async def plan(c: Caller, req: ChatCompletionsReq, stops: list[str], window: int | None) -> Plan:
    """Render the request; without a token limit the reply may fill the window (the kernel stops
    it there, and at the caller's quota), as OpenAI's models run to their end."""
    msgs = normalize(req.messages)
    names, forced, mode = check_tools(req.tools, req.tool_choice)
    fmt = str((await c.me.call("chat_format")).format)
    if fmt == "template":
        r = await c.me.call("chat_format", messages=template_messages(msgs),
                            tools=req.tools if mode != "none" else None)
        segs = [(str(t), bool(d)) for t, d in r.segments]
    else:
        segs = lmos_segments(msgs)
    pre = prefill(fmt, mode, forced)
    if pre:
        segs.append((pre, False))
    gen: dict[str, Any] = {"segments": segs, "stop": stops + ([END] if fmt == "lmos" else []),
                           "max_tokens": req.max_completion_tokens or req.max_tokens or min(window or 4096,
                                                                                            1 << 20)}
    gen |= {k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p)) if v is not None}
    return Plan(fmt=fmt, gen=gen, prefill=pre, cut=markers(fmt, stops), mode=mode,
                one_call=req.parallel_tool_calls is False, names=names)


def _finish(reason: str) -> str:
    return "length" if reason in ("length", "max_tokens", "quota", "max_steps") else "stop"


def choice_of(p: Plan, r: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """(content, tool_calls, finish_reason) of one finished generation."""
    content, calls = parse_reply(p.fmt, p.prefill + r["text"], p.cut, p.mode)
    # The built-in model's format cannot declare tools yet, so it may call one of lmos's own
    # tools; an OpenAI client is only ever asked to run a function it declared.
    calls = [c for c in calls if c["function"]["name"] in p.names]
    if p.one_call:
        calls = calls[:1]
    return content, calls, "tool_calls" if calls else _finish(r["finish_reason"])


def too_long(exc: SyscallError, window: int | None) -> SyscallError | Exception:
    """A window overflow is the client's input, so a 400 that says both sizes (not a 413 or 5xx)."""
    if exc.errno != Errno.E2BIG:
        return exc
    err = bad(f"the input does not fit the model's context window{f' of {window} tokens' if window else ''}: "
              f"{exc.message}", "messages")
    err.code, err.errno = "context_length_exceeded", "E2BIG"  # type: ignore[attr-defined]
    return err


async def chat_completions(o: OpenAI, request: Request, c: Caller) -> Response:
    req = await decode(request, ChatCompletionsReq)
    stops = req.check()
    model = await o.model(c, req.model)
    if req.lmos_tools is not None:
        return await _lmos_tools(o, request, c, req, model)
    window = next((m.max_model_len for m in (await c.me.call("model_list")).models
                   if model is None or m.name == model), None)
    p = await plan(c, req, stops, window)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "system_fingerprint": None}
    pids: list[int] = []
    follows: list[AsyncIterator[tuple[str, Any]]] = []
    try:
        for i in range(req.n):
            gen = dict(p.gen)
            if req.seed is not None:
                gen["seed"] = req.seed + i
            pid = await o.spawn_generation(c, gen, model, stream=req.stream)
            pids.append(pid)
            if req.stream:
                follows.append(o.api.follow(c.me, pid))  # claims the subscription now, no await between
    except BaseException:
        for pid in pids:
            await c.me.kill_and_reap(pid)
        raise
    if not req.stream:
        results: dict[int, Any] = {}

        async def collect() -> None:
            async with anyio.create_task_group() as tg:
                for i, pid in enumerate(pids):
                    async def one(i: int = i, pid: int = pid) -> None:
                        try:
                            results[i] = await reaped(c.me, pid)
                        except SyscallError as exc:  # raised below as itself, not as a task-group group
                            results[i] = exc
                    tg.start_soon(one)

        await until_disconnect(request, collect())
        choices, used = [], [0, 0]
        for i, pid in enumerate(pids):
            try:
                got = results[i]
                if isinstance(got, SyscallError):
                    raise got
                r = completion(pid, got)
            except SyscallError as exc:
                raise too_long(exc, window) from None
            content, calls, finish = choice_of(p, r)
            message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls
                                       else None, "refusal": None}
            if calls:
                message["tool_calls"] = calls
            choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
            used[0], used[1] = r["prompt_tokens"], used[1] + r["completion_tokens"]
        return json_response({**base, "choices": choices, "usage": _usage(*used)})
    # Wait for the first event before answering, so an input the window cannot hold is a 400 (as
    # without streaming), not an error event inside a 200 stream.
    try:
        first = await until_disconnect(request, anext(follows[0]))
    except BaseException:
        for pid in pids:
            await c.me.kill_and_reap(pid)
        raise
    if first[0] == "error":
        for pid in pids:
            await c.me.kill_and_reap(pid)
        raise too_long(SyscallError(Errno[first[1]["errno"]], first[1]["message"]), window)
    follows[0] = _prepend(first, follows[0])
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    return StreamingResponse(_stream(p, {**base, "object": "chat.completion.chunk"}, pids, follows, c,
                                     include_usage, window), media_type="text/event-stream")


async def _stream(p: Plan, base: dict[str, Any], pids: list[int],
                  follows: list[AsyncIterator[tuple[str, Any]]], c: Caller, include_usage: bool,
                  window: int | None) -> AsyncIterator[bytes]:
    """The choices one after another (all generate at once; a choice's events wait in its subscription)."""
    def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(None, {**base, "choices": [{"index": i, "delta": delta, "finish_reason": finish,
                                               "logprobs": None}]})

    used, ended = [0, 0], set()
    try:
        for i, events in enumerate(follows):
            text = TextStream(p.cut, p.prefill)
            yield chunk(i, {"role": "assistant", "content": ""})
            async for kind, value in events:
                if kind == "token":
                    delta = text.feed(value.text)
                    if delta:
                        yield chunk(i, {"content": delta})
                elif kind == "done":
                    content, calls, finish = choice_of(p, value)
                    delta = text.finish(content)
                    if delta:
                        yield chunk(i, {"content": delta})
                    if calls:
                        yield chunk(i, {"tool_calls": [{"index": j, **call} for j, call in enumerate(calls)]})
                    yield chunk(i, {}, finish)
                    used[0], used[1] = value["prompt_tokens"], used[1] + value["completion_tokens"]
                else:
                    exc = too_long(SyscallError(Errno[value["errno"]], value["message"]), window)
                    status = 400 if not isinstance(exc, SyscallError) else 500
                    yield sse(None, openai_error(status, value["errno"], str(exc),
                                                 getattr(exc, "param", None), getattr(exc, "code", None)))
            ended.add(i)
        if include_usage:
            yield sse(None, {**base, "choices": [], "usage": _usage(*used)})
        yield sse(None, "[DONE]")
    finally:
        for i, pid in enumerate(pids):
            if i not in ended:  # the client left: a choice not yet streamed still runs
                await c.me.kill_and_reap(pid)


Ev = tuple[str, Any]


async def _prepend(first: Ev, rest: AsyncIterator[Ev]) -> AsyncIterator[Ev]:
    yield first
    async for ev in rest:
        yield ev


async def _lmos_tools(o: OpenAI, request: Request, c: Caller, req: ChatCompletionsReq,
                      model: str | None) -> Response:
    """The extension: lmos's agent loop with its own tools, run server-side as the caller's uid."""
    if req.tools or req.n != 1:
        raise bad("lmos_tools cannot be combined with client tools or n > 1", "lmos_tools")
    msgs = [{"role": m["role"], "content": m["content"]} for m in normalize(req.messages)]
    sampling: dict[str, Any] = {k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p),
                                                  ("seed", req.seed)) if v is not None}
    r = await until_disconnect(request, o.api.k.chat(
        msgs, req.lmos_tools, max_steps=req.lmos_max_steps,
        max_tokens=req.max_completion_tokens or req.max_tokens or 256, model=model, uid=c.who.uid,
        **sampling))
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    usage = _usage(r.usage.prompt_tokens, r.usage.completion_tokens)
    finish = _finish(r.finish_reason)
    base = {"id": cid, "created": created, "model": req.model, "lmos_calls": r.calls}
    if not req.stream:
        return json_response({**base, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": r.text}, "finish_reason": finish}]})

    async def body() -> AsyncIterator[bytes]:  # the loop's answer is known only at its end: one chunk
        b = {**base, "object": "chat.completion.chunk"}
        yield sse(None, {**b, "choices": [{"index": 0, "delta": {"role": "assistant", "content": r.text},
                                           "finish_reason": None}]})
        yield sse(None, {**b, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (req.stream_options or {}).get("include_usage"):
            yield sse(None, {**b, "choices": [], "usage": usage})
        yield sse(None, "[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
