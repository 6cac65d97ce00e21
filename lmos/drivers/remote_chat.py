"""Chat mode of the remote driver: the process's context as OpenAI messages, and back.

Without a local copy of the server model's tokenizer the kernel still needs
token ids (contexts, pages, quotas are counted in them).  :class:`ChatTokenizer`
gives them: prompts are UTF-8 bytes (ids 0-255), lmos's chat markers are one
id each, and every piece of text the server streams back is *interned* as one
id, so a generated token here is one streamed token there (``usage`` corrects
the count when the server reports it).  Counting a prompt in bytes overstates
it (a token is at least one byte), so paging that keeps a context within the
server's window in bytes keeps it within the window in the server's tokens.

Framing and data stay apart as in :mod:`lmos.chatformat`: a marker written by
the renderer is its marker id, while a marker string inside data (a message, a
tool result) is bytes.  :func:`messages_of` reads the conversation back from
the ids alone, so no text can forge a turn: the messages sent to
``/v1/chat/completions`` are exactly the turns the agent loop rendered.  An
assistant turn's ``<|call|>{"tool": ..., "args": ...}`` becomes OpenAI
``tool_calls`` and each ``<|tool|>`` turn after it a ``tool`` message; tools
declared in the system message (``chatformat.tool_block``) become the request's
``tools``.  A tool call the server returns is written back as lmos's call
syntax, so lmos's own agent loop runs the tool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from lmos.chatformat import ASSISTANT, BOS, CALL, END, PAD, SYSTEM, TOOL, USER

EOS_ID = 256
MARKER_IDS = {END: EOS_ID, SYSTEM: 257, USER: 258, ASSISTANT: 259, TOOL: 260, CALL: 261, BOS: 262, PAD: 263}
MARKER_TEXT = {i: m for m, i in MARKER_IDS.items()}
ROLE_OF = {257: "system", 258: "user", 259: "assistant", 260: "tool"}
FIRST_PIECE = 512  # interned streamed pieces take ids from here
MAX_PIECES = 1 << 18  # distinct pieces kept; beyond this a streamed piece is spelt in bytes
_MARKERS = re.compile("|".join(re.escape(m) for m in MARKER_IDS))


class ChatTokenizer:
    """Bytes, one id per lmos marker, and one id per distinct streamed piece (see module doc)."""

    max_token_chars = max(len(m) for m in MARKER_IDS)  # what encode makes; pieces come only from intern

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        """The caller's own text: marker strings in it are markers (as on a local model)."""
        out: list[int] = []
        pos = 0
        for m in _MARKERS.finditer(text):
            out += text[pos:m.start()].encode("utf-8")
            out.append(MARKER_IDS[m.group(0)])
            pos = m.end()
        out += text[pos:].encode("utf-8")
        return out

    def encode_segments(self, segments: Sequence[tuple[str, bool]]) -> list[int]:
        """Framing with its markers, data as plain bytes (a marker string in data stays text)."""
        out: list[int] = []
        for text, data in segments:
            out += list(text.encode("utf-8")) if data else self.encode(text)
        return out

    def intern(self, piece: str) -> list[int]:
        """One id for a streamed piece of text (bytes once the table is full)."""
        i = self._ids.get(piece)
        if i is not None:
            return [i]
        if len(self._pieces) >= MAX_PIECES or not piece:
            return list(piece.encode("utf-8"))
        i = self._ids[piece] = FIRST_PIECE + len(self._pieces)
        self._pieces.append(piece)
        return [i]

    def decode(self, token_ids: list[int]) -> str:
        parts: list[str] = []
        raw = bytearray()
        pieces = self._pieces
        for t in token_ids:
            if 0 <= t < 256:
                raw.append(t)
                continue
            if raw:
                parts.append(raw.decode("utf-8", errors="replace"))
                raw.clear()
            if t >= FIRST_PIECE and t - FIRST_PIECE < len(pieces):
                parts.append(pieces[t - FIRST_PIECE])
            else:
                parts.append(MARKER_TEXT.get(t, ""))
        if raw:
            parts.append(raw.decode("utf-8", errors="replace"))
        return "".join(parts)


def messages_of(ids: list[int], tok: ChatTokenizer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The conversation in ``ids`` as OpenAI messages, and the tools its system message declares.

    Text outside any turn (a plain prompt) is a user message.  A trailing empty
    ``<|assistant|>`` is the generation prompt and is left out.
    """
    msgs: list[dict[str, Any]] = []
    role: str | None = None
    parts: list[list[int]] = [[]]  # the turn's text, then one list per <|call|>
    pending_calls: list[str] = []  # ids of the last assistant turn's calls, for its tool results
    n_calls = 0

    def close() -> None:
        nonlocal role, parts, pending_calls, n_calls
        text = tok.decode(parts[0])
        if role is None:
            if text.strip():
                msgs.append({"role": "user", "content": text})
        elif role == "assistant" and len(parts) > 1:
            calls: list[dict[str, Any]] = []
            for raw in parts[1:]:
                n_calls += 1
                name, args = _call(tok.decode(raw))
                calls.append({"id": f"call_{n_calls}", "type": "function",
                              "function": {"name": name, "arguments": json.dumps(args)}})
            msgs.append({"role": "assistant", "content": text or None, "tool_calls": calls})
            pending_calls = [str(c["id"]) for c in calls]
        elif role == "tool":
            call_id = pending_calls.pop(0) if pending_calls else f"call_{n_calls}"
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:
            msgs.append({"role": role, "content": text})
        role, parts = None, [[]]

    for t in ids:
        r = ROLE_OF.get(t)
        if r is not None:
            if role is not None or tok.decode(parts[0]).strip():
                close()
            role, parts = r, [[]]
        elif t == EOS_ID:
            close()
        elif t == MARKER_IDS[CALL] and role == "assistant":
            parts.append([])
        elif t in (MARKER_IDS[BOS], MARKER_IDS[PAD]):
            continue
        else:
            parts[-1].append(t)
    if role == "assistant" and len(parts) == 1 and not tok.decode(parts[0]).strip():
        pass  # the generation prompt
    elif role is not None or tok.decode(parts[0]).strip():
        close()
    tools: list[dict[str, Any]] = []
    if msgs and msgs[0]["role"] == "system":
        content, tools = split_tools(str(msgs[0]["content"]))
        msgs[0] = {"role": "system", "content": content}
    return msgs, tools


def _call(text: str) -> tuple[str, dict[str, Any]]:
    try:
        doc = json.loads(text)
        name, args = doc["tool"], doc.get("args", {})
        if isinstance(name, str) and isinstance(args, dict):
            return name, args
    except (ValueError, KeyError, TypeError):
        pass
    return "invalid_call", {"text": text}


def call_text(name: str, arguments: str) -> str:
    """A tool call the server returned, in lmos's call syntax (after ``<|call|>``)."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        args = {"arguments": arguments}
    if not isinstance(args, dict):
        args = {"arguments": args}
    return json.dumps({"tool": name, "args": args})


# -- the tool block of a system message (lmos.chatformat.tool_block) -----------------------------
_TOOL_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]{0,63})\((.*)\)(?: - (.*))?")
_ARG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\??): (.+)")
_TYPES = {"string", "integer", "number", "boolean", "array", "object"}


def split_tools(content: str) -> tuple[str, list[dict[str, Any]]]:
    """The system message without its ``Tools:`` block, and the block as OpenAI tools.

    A block that does not parse is left in the text and no tools are declared.
    """
    head, sep, block = content.partition("\nTools:\n")
    if not sep:
        if not content.startswith("Tools:\n"):
            return content, []
        head, block = "", content[len("Tools:\n"):]
    tools: list[dict[str, Any]] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        tool = _tool(line.strip())
        if tool is None:
            return content, []
        tools.append(tool)
    return head, tools


def _tool(line: str) -> dict[str, Any] | None:
    m = _TOOL_LINE.fullmatch(line)
    if m is None:
        return None
    name, args, desc = m.group(1), m.group(2), m.group(3) or ""
    props: dict[str, Any] = {}
    required: list[str] = []
    for arg in _split_args(args):
        a = _ARG.fullmatch(arg)
        if a is None:
            return None
        pname, optional, kind = a.groups()
        if kind in _TYPES:
            props[pname] = {"type": kind}
        else:
            try:
                values = [json.loads(v) for v in kind.split("|")]
            except ValueError:
                return None
            props[pname] = {"enum": values}
        if not optional:
            required.append(pname)
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": props, "required": required}}}


def _split_args(text: str) -> list[str]:
    """``a: string, b?: "x"|"y, z"`` -> its arguments (commas inside quotes do not split)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        if ch == "," and not quoted and text[i + 1:i + 2] == " ":
            out.append("".join(cur))
            cur = []
            i += 2
            continue
        cur.append(ch)
        i += 1
    if cur:
        out.append("".join(cur))
    return [a for a in out if a.strip()]
