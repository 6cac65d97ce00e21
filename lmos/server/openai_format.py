"""OpenAI chat requests in lmos's terms: messages and tools in, content and ``tool_calls`` out.

Three jobs, kept apart from the HTTP handler so each can be tested alone:

* **Rendering.** OpenAI messages (``developer`` is ``system``; content parts
  joined; assistant ``tool_calls`` with JSON-string arguments; ``tool``
  results, put in the order of the calls they answer by ``tool_call_id``)
  become the model's chat format.  For lmos-format models ``tools`` are the
  format's tool declarations (:func:`lmos.chatformat.validate_tools`, a bad
  schema is a 400 naming the field; the signature block in the system turn),
  parallel calls one ``<|call|>{"tool": NAME, "args": {...}}`` after another,
  results as ``<|tool|>`` turns: exactly what the model is trained on
  (:func:`lmos.chatformat.render_segments`).  Template models get ``tools``
  rendered by their own chat template (the ``chat_format`` syscall), calls as
  ``<tool_call>``.  Every message is a data segment, so a control-token string
  in it stays text.
* **tool_choice.** ``required`` and a named function are *enforced*, not
  hoped for: the assistant turn is prefilled with the call marker (and the
  function's name), so what the model writes is the rest of the call.
  ``none`` leaves tools out of the prompt and never returns a call.
* **Visible text.** What the client sees as ``content``: the text before any
  call marker, end marker or stop string, stripped.  :class:`TextStream`
  computes the same thing token by token, holding back a suffix that might
  still become a marker, so streamed and plain replies are identical text and
  no ``<|end|>`` leaks into a stream.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from lmos.chatformat import (
    CALL,
    DEFAULT_SYSTEM_PROMPT,
    END,
    ROLE_MARKERS,
    MalformedCall,
    Segment,
    call_json,
    render_segments,
    validate_tools,
)
from lmos.errors import SyscallError
from lmos.server.wire import HTTPError

END_MARKERS = (END, "<|im_end|>", "</s>", "<|eot_id|>", "<|endoftext|>")
TEMPLATE_CALL = "<tool_call>"
_TEMPLATE_CALLS = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def bad(message: str, param: str | None = None) -> HTTPError:
    err = HTTPError(400, "EINVAL", message)
    err.param = param  # type: ignore[attr-defined]  # the OpenAI error body names the field
    return err


def content_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise bad(f"{where}: only text content parts are supported", where)
            out.append(part["text"])
        return "".join(out)
    raise bad(f"{where}: content must be a string or a list of text parts", where)


def _calls_of(m: dict[str, Any], where: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, name, args) of an assistant message's ``tool_calls``; arguments must be JSON objects."""
    out = []
    for j, c in enumerate(m.get("tool_calls") or []):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"{where}.tool_calls[{j}]: needs function.name", where)
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            raise bad(f"{where}.tool_calls[{j}].function.arguments is not JSON", where) from None
        if not isinstance(args, dict):
            raise bad(f"{where}.tool_calls[{j}].function.arguments must be a JSON object", where)
        out.append((str(c.get("id") or ""), fn["name"], args))
    return out


def normalize(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as plain ``{"role", "content"}`` (+ ``calls``, ``tool_call_id``) dicts."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ROLE_MARKERS:
            raise bad(f"{where}.role: {str(role)[:40]!r} is not one of system, developer, user, "
                      "assistant, tool", where)
        msg: dict[str, Any] = {"role": role, "content": content_text(m.get("content"), where)}
        if role == "assistant":
            msg["calls"] = _calls_of(m, where)
        if role == "tool":
            msg["tool_call_id"] = str(m.get("tool_call_id") or "")
        out.append(msg)
    return _results_in_call_order(out)


def _results_in_call_order(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``tool`` messages after each assistant turn with calls, in the order of its calls.

    They are matched by ``tool_call_id``, as OpenAI does: a result that answers no call of
    the turn before it, or a call left without its result, is a 400 (the model would read
    results against the wrong calls).  Results without ids keep the order they came in.
    """
    out = list(msgs)
    calls: dict[str, int] = {}  # the open turn's call ids -> their order
    turn = group = -1  # the open assistant turn; where its results start
    for i, m in enumerate([*out, {"role": "end"}]):
        if m["role"] == "tool" and calls and m["tool_call_id"]:
            if m["tool_call_id"] not in calls:
                raise bad(f"messages[{i}].tool_call_id {m['tool_call_id'][:64]!r} answers no call of "
                          f"messages[{turn}]", f"messages[{i}].tool_call_id")
            continue
        if m["role"] == "tool":
            continue
        if calls and group >= 0:
            results = out[group:i]
            answered = [r["tool_call_id"] for r in results if r["tool_call_id"]]
            if answered or not results:
                missing = [cid for cid in calls if cid not in answered]
                if missing or len(set(answered)) != len(answered):
                    what = f"no result for {', '.join(missing)}" if missing else "a call answered twice"
                    raise bad(f"messages[{turn}]: each tool call needs one 'tool' message with its "
                              f"tool_call_id ({what})", f"messages[{turn}]")
                out[group:i] = sorted(results, key=lambda r: calls.get(r["tool_call_id"], len(calls)))
        calls, turn, group = {}, -1, -1
        if m["role"] == "assistant" and m.get("calls") and all(cid for cid, _, _ in m["calls"]):
            calls, turn, group = {cid: k for k, (cid, _, _) in enumerate(m["calls"])}, i, i + 1
    return out


def declarations(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``tools`` as the chat format's tool declarations; a bad schema is a 400 naming its field.

    SDKs spell an optional argument ``{"anyOf": [{"type": T}, {"type": "null"}]}`` or
    ``{"type": [T, "null"]}`` (openai-agents does for ``x: T | None = None``); the format's
    types are single, so such a property is read as type ``T``.
    """
    if not tools:
        return []
    try:
        return validate_tools([_nullable_as_plain(t) for t in tools])
    except SyscallError as exc:
        raise bad(exc.message, exc.message.split(": ", 1)[0]) from None


def _nullable_as_plain(tool: Any) -> Any:
    fn = tool.get("function") if isinstance(tool, dict) else None
    params = fn.get("parameters") if isinstance(fn, dict) else None
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(fn, dict) or not isinstance(params, dict) or not isinstance(props, dict):
        return tool
    fixed = {}
    for key, schema in props.items():
        if isinstance(schema, dict) and "type" not in schema and "enum" not in schema:
            kinds = [k for k in schema.get("anyOf") or []
                     if not (isinstance(k, dict) and k.get("type") == "null")]
            if len(kinds) == 1 and isinstance(kinds[0], dict):
                schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **kinds[0]}
        elif isinstance(schema, dict) and isinstance(schema.get("type"), list):
            kinds = [k for k in schema["type"] if k != "null"]
            if len(kinds) == 1:
                schema = {**schema, "type": kinds[0]}
        fixed[key] = schema
    return {**tool, "function": {**fn, "parameters": {**params, "properties": fixed}}}


def lmos_segments(msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[Segment]:
    """The built-in model's rendering of normalized messages, ``tools`` declared (a system prompt
    added if missing), ready for the assistant's turn."""
    if not msgs or msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *msgs]
    chat = [{"role": m["role"], "content": m["content"],
             **({"tool_calls": [{"name": n, "arguments": a} for _, n, a in m["calls"]]} if m.get("calls")
                else {})} for m in msgs]
    return render_segments(chat, add_generation_prompt=True, tools=tools or None)


def template_messages(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalized messages in the shape Hugging Face chat templates read (arguments as objects)."""
    out = []
    for m in msgs:
        t: dict[str, Any] = {"role": m["role"], "content": m["content"]}
        if m.get("calls"):
            t["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                               for cid, n, a in m["calls"]]
        if m["role"] == "tool":
            t["tool_call_id"] = m["tool_call_id"]
        out.append(t)
    return out


def check_tools(tools: list[dict[str, Any]] | None, choice: Any) -> tuple[list[str], str | None, str]:
    """(function names, forced name, mode) of ``tools`` and ``tool_choice``; mode: auto|none|required."""
    names: list[str] = []
    for i, t in enumerate(tools or []):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function":
            raise bad(f"tools[{i}].type: only {{'type': 'function', 'function': {{'name': ...}}}} tools are "
                      "supported", f"tools[{i}].type")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"tools[{i}].function.name: missing", f"tools[{i}].function.name")
        names.append(fn["name"])
    if choice is None:
        return names, None, "auto" if names else "none"
    if choice in ("auto", "none", "required"):
        if choice == "required" and not names:
            raise bad("tool_choice 'required' needs tools", "tool_choice")
        return names, None, str(choice)
    fn = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad("tool_choice: 'auto', 'none', 'required' or {'type': 'function', 'function': "
                  "{'name': ...}}", "tool_choice")
    if fn["name"] not in names:
        raise bad(f"tool_choice names {fn['name']!r}, which is not in tools", "tool_choice")
    return names, fn["name"], "required"


def prefill(fmt: str, mode: str, forced: str | None) -> str:
    """The start of the assistant turn that makes the model call a tool (or the named one)."""
    if mode != "required":
        return ""
    if fmt == "template":
        head = TEMPLATE_CALL + "\n"
        return head + (json.dumps({"name": forced})[:-1] + ', "arguments": ' if forced else "")
    return CALL + (json.dumps({"tool": forced})[:-1] + ', "args": ' if forced else "")


def markers(fmt: str, stops: list[str]) -> list[str]:
    """Where visible content ends: a call marker, an end marker or a stop string."""
    return [CALL if fmt == "lmos" else TEMPLATE_CALL, *END_MARKERS, *stops]


def visible(raw: str, cut: list[str], *, final: bool, strip: bool = True) -> str:
    """The content a client sees of ``raw`` so far (see the module docstring)."""
    ends = [i for i in (raw.find(m) for m in cut) if i >= 0]
    text = raw[: min(ends)] if ends else raw
    if not final and not ends:
        hold = 0
        for m in cut:  # a suffix that may still grow into a marker stays back
            for k in range(min(len(m) - 1, len(text)), hold, -1):
                if text.endswith(m[:k]):
                    hold = k
                    break
        text = text[: len(text) - hold]
    if not strip:  # completions: the text as generated, whitespace and all
        return text
    return text.strip() if final else text.lstrip().rstrip()


class TextStream:
    """Content deltas of a growing raw text; ``finish`` sends what the final text adds.

    Incremental, so a long reply costs O(its length) in all, not O(length) per token: markers
    are searched only in the new text (and the few characters before it a marker could start
    in), and only the unsent tail is sliced.  What it sends is always a prefix of
    :func:`visible` of the final text (a test checks this against :func:`visible` itself).
    """

    def __init__(self, cut: list[str], raw: str = "", *, strip: bool = True) -> None:
        self.cut, self.strip = cut, strip
        self.longest = max((len(m) for m in cut), default=0)
        self.raw, self.scanned = "", 0
        self.end: int | None = None  # where the first marker starts, once one has arrived
        self.at = 0  # raw[:at] is sent (or dropped leading whitespace)
        self.started = not strip  # leading whitespace is dropped until the content starts
        self.pieces: list[str] = []
        self.feed(raw)

    def feed(self, text: str) -> str:
        self.raw += text
        raw = self.raw
        if self.end is None:
            since = max(0, self.scanned - self.longest + 1)
            hits = [i for i in (raw.find(m, since) for m in self.cut) if i >= 0]
            self.end = min(hits) if hits else None
            self.scanned = len(raw)
        limit = self.end if self.end is not None else len(raw) - self._hold()
        seg = raw[self.at:limit]
        if not self.started:
            kept = seg.lstrip()
            self.at += len(seg) - len(kept)
            seg = kept
            self.started = bool(seg)
        if self.strip:
            seg = seg.rstrip()
        if seg:
            self.at += len(seg)
            self.pieces.append(seg)
        return seg

    def _hold(self) -> int:
        """The longest tail of the raw text that is a proper prefix of a marker."""
        raw, hold = self.raw, 0
        for m in self.cut:
            for k in range(min(len(m) - 1, len(raw)), hold, -1):
                if raw.endswith(m[:k]):
                    hold = k
                    break
        return hold

    def finish(self, final: str) -> str:
        sent = "".join(self.pieces)
        if not final.startswith(sent):
            return ""  # never happens by construction (see visible); sent text cannot be unsent
        self.pieces = [final]
        return final[len(sent):]


def parse_reply(fmt: str, raw: str, cut: list[str], mode: str) -> tuple[str, list[dict[str, Any]]]:
    """(content, tool_calls) of a finished assistant turn (``raw`` includes the prefill)."""
    content = visible(raw, cut, final=True)
    if mode == "none":
        return content, []
    calls: list[tuple[str, dict[str, Any]]] = []
    try:
        if fmt == "lmos":
            at = raw.find(CALL)
            if at >= 0:
                body = raw[at:]
                for end in END_MARKERS:
                    body = body.split(end, 1)[0]
                calls = [call_json(piece, "tool", "args") for piece in body.split(CALL)[1:]]
        else:
            calls = [call_json(m.group(1), "name", "arguments") for m in _TEMPLATE_CALLS.finditer(raw)]
    except MalformedCall:
        calls = []  # not a call after all: the client sees the text
        content = visible(raw, [c for c in cut if c not in (CALL, TEMPLATE_CALL)], final=True)
    return content, [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}
                     for name, args in calls]


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
               429: "rate_limit_error"}


def openai_error(status: int, errno: str, message: str, param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    """The OpenAI error body, with lmos's errno riding along."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code, "errno": errno}}
