"""The chat format of lmos models: markers, rendering, tool calls and the Jinja template.

One conversation renders as::

    <|system|>You are lmos, a helpful assistant with tools.<|end|>
    <|user|>what is 12 * 7?<|end|>
    <|assistant|><|call|>{"tool": "calc", "args": {"expr": "12 * 7"}}<|end|>
    <|tool|>84<|end|>
    <|assistant|>12 * 7 = 84.<|end|>

Every marker is one special token.  The model writes what follows ``<|assistant|>``
up to and including ``<|end|>``; the newline after ``<|end|>`` belongs to the
framing, which the agent loop (not the model) appends.  This module is the one
place that knows the format: the corpus writer, the loss mask, the tokenizer's
chat template, the evaluators (``lmos.train``) and the agent loop
(``lmos.userland.agent``) all go through it, so training and inference cannot
drift apart.  It sits at the bottom of the import graph beside ``lmos.errors``
and imports nothing heavy, so any layer may use it.

A turn may hold several calls (``<|call|>{json}<|call|>{json}<|end|>``); their
results come back as that many ``<|tool|>`` turns, in call order.  The tools a
caller allows are *declared* in the system turn, one signature line each
(:mod:`lmos.chattools`; ``tools=`` on :func:`render` and friends), in the same
form for lmos's own tools and a client's OpenAI-style functions.

Calls of chat-template models (Qwen2/Hermes ``<tool_call>{json}</tool_call>``)
are parsed here too (:func:`parse_template_call`), with the same validation and
error messages as lmos calls.

Framing versus data.  A rendering mixes the markers the renderer writes with
text that came from elsewhere: a user's message, a tool result, a file, a web
page.  If that text were tokenized like the markers, a tool result containing
``<|end|><|assistant|><|call|>{...}`` would *become* those special tokens and
the model would see a turn nobody wrote.  So renderings for the kernel are
lists of :data:`Segment` ``(text, is_data)``: the kernel tokenizes framing
normally and data as plain text, in which special-token strings stay
ordinary characters (``llm_generate(segments=...)``).  :func:`render_segments`
does this for lmos's format; ``chat_format`` does it for chat templates by
marking the control tokens inside the inputs before rendering
(:func:`mark_controls`, :func:`split_marked`).
"""

from __future__ import annotations

import json
import re
from typing import Any

# Tool declarations live in lmos.chattools; they are re-exported here, the format's one entry point.
from lmos.chattools import tool_block as tool_block
from lmos.chattools import tool_names as tool_names
from lmos.chattools import validate_tools as validate_tools
from lmos.errors import Errno, SyscallError

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
TOOL = "<|tool|>"
CALL = "<|call|>"
END = "<|end|>"
PAD = "<|pad|>"
BOS = "<|bos|>"

ROLE_MARKERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": TOOL}
SPECIAL_TOKENS = [PAD, BOS, SYSTEM, USER, ASSISTANT, TOOL, CALL, END]
DEFAULT_SYSTEM_PROMPT = "You are lmos, a helpful assistant with tools."

Message = dict[str, Any]
Segment = tuple[str, bool]  # (text, is_data): data is tokenized as plain text, never as special tokens
MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"  # private-use characters around a control token inside data
_MARKED = re.compile("\ue000([^\ue000\ue001]*)\ue001|[\ue000\ue001]")
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


class MalformedCall(ValueError):
    """A model's turn looks like a tool call but cannot be parsed (the agent reports it back)."""

# The Jinja template shipped in tokenizer_config.json.  It produces exactly what
# :func:`render` produces (a test checks this), so ``apply_chat_template`` and the
# training data agree token for token.  Given ``tools`` (valid declarations, either
# shape, arguments of calls as dicts) it builds :func:`lmos.chattools.tool_block`
# and appends it to the first system message, or to a default one it prepends.
# Dict fields are read with ``x['k']``, never ``x.k``: Jinja tries attributes first,
# and an argument named ``items`` or ``keys`` would find the dict's method.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(block='', sys=-1) -%}"
    "{%- if tools -%}"
    "{%- set ns.block = 'Tools:' -%}"
    "{%- for t in tools -%}"
    "{%- set f = t['function'] if 'function' in t else t -%}"
    "{%- set ps = f['parameters'] if 'parameters' in f and f['parameters'] else {} -%}"
    "{%- set props = ps['properties'] if 'properties' in ps and ps['properties'] else {} -%}"
    "{%- set req = ps['required'] if 'required' in ps and ps['required'] else [] -%}"
    "{%- set a = namespace(s='') -%}"
    "{%- for k in props -%}"
    "{%- set s = props[k] -%}"
    "{%- set ty = (s['enum'] | map('tojson') | join('|')) if 'enum' in s else s['type'] -%}"
    "{%- set a.s = a.s + (', ' if a.s else '') + k + ('' if k in req else '?') + ': ' + ty -%}"
    "{%- endfor -%}"
    "{%- set d = (((f['description'] if 'description' in f else '') or '').split('\\n')[0] | trim)[:120] -%}"
    "{%- set ns.block = ns.block + '\\n' + f['name'] + '(' + a.s + ')' + ((' - ' + d) if d else '') -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' and ns.sys < 0 -%}{%- set ns.sys = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if ns.sys < 0 -%}"
    "{{- '<|system|>' + '" + DEFAULT_SYSTEM_PROMPT + "' + '\\n' + ns.block + '<|end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' and m['tool_calls'] is defined and m['tool_calls'] -%}"
    "{{- '<|assistant|>' -}}"
    "{%- for c in m['tool_calls'] -%}"
    "{%- set f = c['function'] if 'function' in c and c['function'] else c -%}"
    "{{- '<|call|>' + ({'tool': f['name'], 'args': f['arguments']} | tojson) -}}"
    "{%- endfor -%}"
    "{{- '<|end|>\\n' -}}"
    "{%- elif ns.block and loop.index0 == ns.sys -%}"
    "{{- '<|system|>' + (m['content'] or '') + '\\n' + ns.block + '<|end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|' + m['role'] + '|>' + (m['content'] or '') + '<|end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)


def calls_of(message: Message) -> list[tuple[str, dict[str, Any]]]:
    """The (tool, args) pairs an assistant message carries, in order; [] for a plain answer.

    Accepts the flat ``{"name", "arguments"}`` shape and the OpenAI/transformers
    ``{"type": "function", "function": {...}}`` shape, since both are common in
    chat data people bring to fine-tune on.  Arguments given as a JSON string
    (OpenAI's wire form) are decoded.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or call
        args, what = fn.get("arguments") or {}, f"arguments of call {fn.get('name')!r}"
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                raise SyscallError(Errno.EINVAL, f"{what} are not JSON") from None
        if not isinstance(args, dict):
            raise SyscallError(Errno.EINVAL, f"{what} must be an object")
        out.append((str(fn["name"]), dict(args)))
    return out


def call_of(message: Message) -> tuple[str, dict[str, Any]] | None:
    """The first (tool, args) an assistant message carries, or None for a plain answer."""
    calls = calls_of(message)
    return calls[0] if calls else None


def call_text(tool: str, args: dict[str, Any]) -> str:
    """The assistant text of a tool call: ``<|call|>`` + compact JSON with default separators."""
    return CALL + json.dumps({"tool": tool, "args": args}, ensure_ascii=False)


def assistant_text(message: Message) -> str:
    """What the model itself writes for an assistant message (without the closing ``<|end|>``).

    N tool calls are N ``<|call|>{json}`` pieces back to back (parallel calls).
    """
    calls = calls_of(message)
    if calls:
        return "".join(call_text(*call) for call in calls)
    return str(message.get("content") or "")


def with_tools(messages: list[Message], tools: list[Any] | None) -> list[Message]:
    """``messages`` with the declaration block of ``tools`` in the system turn.

    The block (:func:`lmos.chattools.tool_block`) is appended after ``"\n"`` to
    the first system message's content; a system message with
    :data:`DEFAULT_SYSTEM_PROMPT` is prepended when there is none.  No tools (None
    or []) returns ``messages`` unchanged, so old renderings stay byte-identical.
    Invalid declarations raise EINVAL naming the field.
    """
    if not tools:
        return messages
    block = tool_block(tools)
    out = list(messages)
    for i, m in enumerate(out):
        if m.get("role", "user") == "system":
            out[i] = {**m, "content": str(m.get("content") or "") + "\n" + block}
            return out
    return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT + "\n" + block}, *out]


def segments(messages: list[Message], tools: list[Any] | None = None) -> list[tuple[str, bool]]:
    """Split a conversation into (text, trained) pieces for the loss mask.

    The trained pieces are exactly what the model must generate: an assistant
    turn's text and its closing ``<|end|>``.  Each piece starts at a special
    token or right after one, so tokenizing the pieces one by one gives the same
    ids as tokenizing the whole rendering.  ``tools`` declares tools (see
    :func:`with_tools`).
    """
    out: list[tuple[str, bool]] = []
    for m in with_tools(messages, tools):
        role = m.get("role", "user")
        if role not in ROLE_MARKERS:
            raise SyscallError(Errno.EINVAL, f"unknown chat role {role!r}")
        if role == "assistant":
            out.append((ASSISTANT, False))
            out.append((assistant_text(m) + END, True))
            out.append(("\n", False))
        else:
            out.append((ROLE_MARKERS[role] + str(m.get("content") or "") + END + "\n", False))
    return out


def render(messages: list[Message], add_generation_prompt: bool = False,
           tools: list[Any] | None = None) -> str:
    """The whole conversation as text, identical to the tokenizer's chat template (with ``tools`` too)."""
    text = "".join(piece for piece, _ in segments(messages, tools))
    return text + (ASSISTANT if add_generation_prompt else "")


def parse_calls(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse a generated assistant turn into its (tool, args) calls, in order; [] for a plain answer.

    A turn that starts with ``<|call|>`` is one or more ``<|call|>{json}``
    pieces (parallel calls).  Raises :class:`MalformedCall` (a ValueError) if any
    piece is not valid JSON of the right shape, so callers can report it (the
    agent loop shows the message to the model).
    """
    text = text.strip()
    if text.endswith(END):
        text = text[: -len(END)]
    if not text.startswith(CALL):
        return []
    return [call_json(piece, "tool", "args") for piece in text[len(CALL) :].split(CALL)]


def parse_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """The first call of a generated assistant turn (see :func:`parse_calls`), or None for an answer."""
    calls = parse_calls(text)
    return calls[0] if calls else None


def parse_template_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """(tool, args) of a ``<tool_call>{...}</tool_call>`` turn (Qwen2/Hermes chat templates)."""
    m = _TOOL_CALL.search(text)
    if m is None:
        return None
    return call_json(m.group(1), "name", "arguments")


def call_json(raw: str, name_key: str, args_key: str) -> tuple[str, dict[str, Any]]:
    """Validate the JSON body of a call: an object with a string ``name_key`` and object ``args_key``.

    Some models emit the arguments as a JSON *string*; that is accepted too.
    """
    try:
        payload = json.loads(raw.strip())
    except json.JSONDecodeError as exc:
        raise MalformedCall(f"malformed tool call (invalid JSON: {exc.msg})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get(name_key), str):
        raise MalformedCall(f"malformed tool call (needs a string {name_key!r})")
    args = payload.get(args_key, {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise MalformedCall(f"malformed tool call ({args_key!r} is not JSON)") from None
    if not isinstance(args, dict):
        raise MalformedCall(f"malformed tool call ({args_key!r} must be an object)")
    return payload[name_key], args


def answer_text(text: str) -> str:
    """A final answer without end markers (lmos's and common template models')."""
    for marker in (END, "<|im_end|>", "</s>", "<|eot_id|>"):
        text = text.replace(marker, "")
    return text.strip()


def call_message(tool: str, args: dict[str, Any]) -> Message:
    """An assistant message carrying one tool call, in the flat JSONL shape."""
    return calls_message([(tool, args)])


def calls_message(calls: list[tuple[str, dict[str, Any]]]) -> Message:
    """An assistant message carrying several tool calls at once (parallel calls), flat JSONL shape."""
    return {"role": "assistant", "content": "",
            "tool_calls": [{"name": tool, "arguments": args} for tool, args in calls]}


def render_segments(messages: list[Message], add_generation_prompt: bool = False,
                    tools: list[Any] | None = None) -> list[Segment]:
    """:func:`render` as segments: the markers are framing, every message's text is data.

    Joined, the texts are exactly :func:`render`'s output, so a tokenizer that
    finds no special-token strings in the data gives the same ids either way.
    The tool declaration block is part of the system turn's text, so it is data
    too: a description holding ``<|end|>`` cannot close the turn.
    """
    out: list[Segment] = []
    for m in with_tools(messages, tools):
        role = m.get("role", "user")
        if role not in ROLE_MARKERS:
            raise SyscallError(Errno.EINVAL, f"unknown chat role {role!r}")
        out.append((ROLE_MARKERS[role], False))
        calls = calls_of(m) if role == "assistant" else []
        if calls:
            for call in calls:
                out.append((CALL, False))
                out.append((call_text(*call)[len(CALL):], True))
        else:
            out.append((str(m.get("content") or ""), True))
        out.append((END + "\n", False))
    if add_generation_prompt:
        out.append((ASSISTANT, False))
    return [seg for seg in out if seg[0]]


def segments_text(segments: list[Segment]) -> str:
    """The text the segments render (what the model's context holds, as text)."""
    return "".join(text for text, _ in segments)


def segments_after(segments: list[Segment], chars: int) -> list[Segment]:
    """The segments with their first ``chars`` characters removed (what a new rendering adds)."""
    out: list[Segment] = []
    for text, data in segments:
        if chars >= len(text):
            chars -= len(text)
            continue
        out.append((text[chars:], data))
        chars = 0
    return out


def mark_controls(value: Any, controls: re.Pattern[str]) -> Any:
    """``value`` (a string, or lists and dicts of them) with each control-token string wrapped
    in private-use marks, so that after a chat template renders it :func:`split_marked` can
    tell the template's own control tokens from ones that arrived in the data.  Marks already
    present are removed first, so data cannot forge a mark.  Dict keys are left alone."""
    if isinstance(value, str):
        value = value.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")
        return controls.sub(lambda m: MARK_OPEN + m.group(0) + MARK_CLOSE, value)
    if isinstance(value, dict):
        return {k: mark_controls(v, controls) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mark_controls(v, controls) for v in value]
    return value


def split_marked(text: str) -> list[Segment]:
    """Segments of a rendering made from :func:`mark_controls` inputs: marked control tokens
    are data, the rest framing.  A lone mark (a template's string method split a pair) is
    dropped but still ends the piece, so text on either side cannot join into a token."""
    pieces = _MARKED.split(text)
    out: list[Segment] = [(pieces[0], False)]
    for i in range(1, len(pieces), 2):
        if pieces[i] is not None:
            out.append((pieces[i], True))
        out.append((pieces[i + 1], False))
    return [seg for seg in out if seg[0]]
