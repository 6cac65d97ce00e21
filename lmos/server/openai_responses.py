"""``POST /v1/responses``: the Responses API, stateless, over the chat-completions machinery.

A request's ``input`` items (messages, ``function_call`` and
``function_call_output``) become a chat conversation and run exactly as
``/v1/chat/completions`` runs it (:mod:`lmos.server.openai_chat`): same
rendering, same ``tool_choice`` enforcement, same visible text, one
``llm.complete`` process.  The reply's ``output`` holds a ``message`` item and
one ``function_call`` item per call; ``"stream": true`` sends the typed
events (``response.output_text.delta`` ... ``response.completed``).

What is refused rather than faked: lmos keeps no responses, so
``previous_response_id``, ``conversation`` and ``background`` are a 400
(send the whole input instead, as ``store: false`` clients do), and
``store`` is answered ``false``; built-in tools (web search, file search ...)
and non-text input parts are a 400 too.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lmos.errors import Errno, SyscallError
from lmos.server.openai_chat import ChatCompletionsReq, Plan, choice_of, plan, too_long
from lmos.server.openai_format import TextStream, bad
from lmos.server.session import completion, reaped
from lmos.server.wire import HTTPError, Prob, Temp, Tokens, decode, json_response, sse, until_disconnect

if TYPE_CHECKING:
    from lmos.server.app import Caller
    from lmos.server.openai import OpenAI


_FUNCTION = re.compile(r"^(tools\[\d+\])\.function")


class ResponsesReq(msgspec.Struct, kw_only=True):
    model: str = "default"
    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Tokens | None = None
    temperature: Temp | None = None
    top_p: Prob | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    text: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    out = []
    for part in content or []:
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            raise bad(f"{where}: only text parts are supported", "input")
        out.append(str(part.get("text", "")))
    return "".join(out)


def to_chat(req: ResponsesReq) -> ChatCompletionsReq:
    """The same request as chat completions (input items as messages, tools unflattened)."""
    for field in ("previous_response_id", "conversation", "background"):
        if getattr(req, field):
            raise bad(f"{field} is not supported: lmos stores no responses (send the whole input)", field)
    fmt = ((req.text or {}).get("format") or {}).get("type", "text")
    msgs: list[dict[str, Any]] = [{"role": "system", "content": req.instructions}] if req.instructions else []
    items = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            content = _text(item.get("content"), f"input[{i}]")
            msgs.append({"role": item.get("role", "user"), "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
                msgs[-1].setdefault("tool_calls", []).append(call)
            else:
                msgs.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            msgs.append({"role": "tool", "tool_call_id": item.get("call_id"),
                         "content": _text(item.get("output"), f"input[{i}].output")})
        else:
            raise bad(f"input[{i}]: item type {str(kind)[:40]!r} is not supported", "input")
    tools = []
    for t in req.tools or []:
        if t.get("type") != "function":
            kind = str(t.get("type"))[:40]
            raise bad(f"tool type {kind!r} is not supported (function tools only)", "tools")
        tools.append({"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters")
                                                       if k in t}})
    choice = req.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    return ChatCompletionsReq(model=req.model, messages=msgs, tools=tools or None, tool_choice=choice,
                              parallel_tool_calls=req.parallel_tool_calls, max_tokens=req.max_output_tokens,
                              temperature=req.temperature, top_p=req.top_p,
                              response_format={"type": fmt})


def _output(p: Plan, r: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    content, calls, finish = choice_of(p, r)
    out: list[dict[str, Any]] = []
    if content or not calls:
        out.append(_message(content))
    for c in calls:
        out.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:24]}", "call_id": c["id"],
                    "name": c["function"]["name"], "arguments": c["function"]["arguments"],
                    "status": "completed"})
    return out, finish


def _message(text: str, status: str = "completed", msg_id: str | None = None) -> dict[str, Any]:
    return {"type": "message", "id": msg_id or f"msg_{uuid.uuid4().hex[:24]}", "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed"
            else []}


def _usage(r: dict[str, Any]) -> dict[str, Any]:
    i, o = r["prompt_tokens"], r["completion_tokens"]
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


async def responses(o: OpenAI, request: Request, c: Caller) -> Response:
    req = await decode(request, ResponsesReq)
    chat = to_chat(req)
    stops = chat.check()
    model = await o.model(c, req.model)
    window = next((m.max_model_len for m in (await c.me.call("model_list")).models
                   if model is None or m.name == model), None)
    try:
        p = await plan(c, chat, stops, window)
    except HTTPError as exc:  # a tool's field as this API spells it (tools[i].parameters, no .function)
        param = getattr(exc, "param", None)
        if param and param.startswith("tools["):
            exc.param = _FUNCTION.sub(r"\1", param)  # type: ignore[attr-defined]
            exc.message = _FUNCTION.sub(r"\1", exc.message)
        raise
    head: dict[str, Any] = {
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "model": req.model, "error": None, "incomplete_details": None, "instructions": req.instructions,
        "metadata": req.metadata or {}, "parallel_tool_calls": req.parallel_tool_calls is not False,
        "temperature": req.temperature, "top_p": req.top_p, "tool_choice": req.tool_choice or "auto",
        "tools": req.tools or [], "max_output_tokens": req.max_output_tokens, "store": False,
        "text": req.text or {"format": {"type": "text"}}, "previous_response_id": None}
    pid = await o.spawn_generation(c, p.gen, model, stream=req.stream)

    def done(r: dict[str, Any]) -> dict[str, Any]:
        out, finish = _output(p, r)
        cut = finish == "length"
        return {**head, "status": "incomplete" if cut else "completed", "output": out, "usage": _usage(r),
                "incomplete_details": {"reason": "max_output_tokens"} if cut else None}

    if not req.stream:
        try:
            r = completion(pid, await until_disconnect(request, reaped(c.me, pid)))
        except SyscallError as exc:
            raise too_long(exc, window) from None
        return json_response(done(r))
    events = o.api.follow(c.me, pid)
    try:
        first = await until_disconnect(request, anext(events))
    except BaseException:
        await c.me.kill_and_reap(pid)
        raise
    if first[0] == "error":
        raise too_long(SyscallError(Errno[first[1]["errno"]], first[1]["message"]), window)
    return StreamingResponse(_stream(p, head, first, events, c, pid), media_type="text/event-stream")


async def _stream(p: Plan, head: dict[str, Any], first: tuple[str, Any],
                  events: AsyncIterator[tuple[str, Any]], c: Caller, pid: int) -> AsyncIterator[bytes]:
    """The typed events of one response: text deltas as they come, function calls at the end."""
    seq = iter(range(1 << 62))

    def ev(kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(seq), **fields})

    msg_id = f"msg_{uuid.uuid4().hex[:24]}"

    def opening() -> list[bytes]:
        return [ev("response.output_item.added", output_index=0, item=_message("", "in_progress", msg_id)),
                ev("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
                   part={"type": "output_text", "text": "", "annotations": []})]

    text, sent, opened, finished = TextStream(p.cut, p.prefill), "", False, False
    yield ev("response.created", response={**head, "status": "in_progress", "output": [], "usage": None})
    pending = [first]
    try:
        while True:
            kind, value = pending.pop() if pending else await anext(events)
            if kind == "token":
                delta = text.feed(value.text)
            elif kind == "done":
                out, finish = _output(p, value)
                final = out[0]["content"][0]["text"] if out[0]["type"] == "message" else ""
                delta = text.finish(final)
            else:
                yield ev("error", code=value["errno"], message=value["message"], param=None)
                return
            if delta and not opened:
                opened = True
                for e in opening():
                    yield e
            if delta:
                sent += delta
                yield ev("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0,
                         delta=delta, logprobs=[])
            if kind == "done":
                break
        cut = finish == "length"
        items: list[dict[str, Any]] = []
        if opened or not [x for x in out if x["type"] == "function_call"]:
            if not opened:
                for e in opening():
                    yield e
            part = {"type": "output_text", "text": sent, "annotations": []}
            yield ev("response.output_text.done", item_id=msg_id, output_index=0, content_index=0, text=sent,
                     logprobs=[])
            yield ev("response.content_part.done", item_id=msg_id, output_index=0, content_index=0, part=part)
            items.append(_message(sent, "completed", msg_id))
            yield ev("response.output_item.done", output_index=0, item=items[-1])
        for item in out:
            if item["type"] != "function_call":
                continue
            n = len(items)
            yield ev("response.output_item.added", output_index=n, item={**item, "arguments": "",
                                                                         "status": "in_progress"})
            yield ev("response.function_call_arguments.delta", item_id=item["id"], output_index=n,
                     delta=item["arguments"])
            yield ev("response.function_call_arguments.done", item_id=item["id"], output_index=n,
                     arguments=item["arguments"], name=item["name"])
            items.append(item)
            yield ev("response.output_item.done", output_index=n, item=item)
        yield ev("response.completed" if not cut else "response.incomplete", response={
            **head, "status": "incomplete" if cut else "completed", "output": items, "usage": _usage(value),
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None})
        finished = True
    finally:
        if not finished:
            await c.me.kill_and_reap(pid)
