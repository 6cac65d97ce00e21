"""The JSONL chat format that ``lmos train`` reads, and its strict loader.

One conversation per line::

    {"messages": [
        {"role": "system", "content": "You are lmos, a helpful assistant with tools."},
        {"role": "user", "content": "what is 12 * 7?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"name": "calc", "arguments": {"expr": "12 * 7"}}]},
        {"role": "tool", "content": "84"},
        {"role": "assistant", "content": "12 * 7 = 84."}
    ], "meta": {"kind": "calc"}}

Roles are ``system``, ``user``, ``assistant`` and ``tool``.  An assistant message
either has text ``content`` or one or more entries in ``tool_calls`` (flat
``{"name", "arguments"}`` or the OpenAI ``{"type": "function", "function": {...}}``
shape), whose arguments are a JSON object; several calls in one turn are
parallel calls, whose results follow as that many ``tool`` messages.  An
optional top-level ``tools`` list declares the tools the conversation allows
(lmos ``{"name", "description", "parameters"}`` or the OpenAI shape, checked by
:func:`lmos.chatformat.validate_tools`); it is rendered into the system turn,
and a call to a tool it does not declare is an error.  ``meta`` is optional and free-form:
the synthetic corpus stores what the evaluators need there (the tool kind, the
key-value store's contents before the conversation).  Blank lines are ignored.

Bad data is never skipped silently: a model trained on half a file looks fine
and is wrong.  The loader checks every line and raises one error listing each
bad line with its number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmos.errors import Errno, SyscallError

ROLES = ("system", "user", "assistant", "tool")
MAX_LISTED = 20


@dataclass
class Conversation:
    """One training example: its messages, free-form metadata and source line (1-based)."""

    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    line: int = 0
    tools: list[dict[str, Any]] | None = None  # declared tools (chat format v2), None: no block

    def to_json(self) -> str:
        record: dict[str, Any] = {"messages": self.messages}
        if self.tools:
            record["tools"] = self.tools
        if self.meta:
            record["meta"] = self.meta
        return json.dumps(record, ensure_ascii=False)


def _check_call(call: Any) -> str | None:
    if not isinstance(call, dict):
        return "a tool call must be an object"
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        return "a tool call needs a non-empty string 'name'"
    if not isinstance(fn.get("arguments", {}), dict):
        return "a tool call's 'arguments' must be an object"
    return None


def _check_message(m: Any, i: int) -> str | None:
    if not isinstance(m, dict):
        return f"message {i} is not an object"
    role = m.get("role")
    if role not in ROLES:
        return f"message {i} has unknown role {role!r} (expected one of {', '.join(ROLES)})"
    content = m.get("content")
    calls = m.get("tool_calls")
    if calls:
        if role != "assistant":
            return f"message {i}: only assistant messages may carry tool_calls"
        if not isinstance(calls, list):
            return f"message {i}: tool_calls must be a list of calls"
        for call in calls:
            problem = _check_call(call)
            if problem:
                return f"message {i}: {problem}"
        return None
    if not isinstance(content, str):
        return f"message {i} ({role}) needs a string 'content'"
    return None


def check_record(record: Any) -> str | None:
    """Why a decoded line is not a valid conversation, or None if it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return "needs a non-empty 'messages' list"
    if "meta" in record and not isinstance(record["meta"], dict):
        return "'meta' must be an object"
    for i, m in enumerate(messages):
        problem = _check_message(m, i)
        if problem:
            return problem
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message (nothing to learn)"
    return _check_tools(record.get("tools"), messages)


def _check_tools(tools: Any, messages: list[Any]) -> str | None:
    """Why a record's ``tools`` declaration (or a call outside it) is wrong, or None."""
    from lmos.chatformat import tool_names

    if tools is None:
        return None
    if not isinstance(tools, list):
        return "'tools' must be a list of tool declarations"
    try:
        declared = set(tool_names(tools))
    except SyscallError as exc:
        return exc.message
    for i, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            name = (call.get("function") or call)["name"]
            if declared and name not in declared:
                return f"message {i}: calls {name!r}, which 'tools' does not declare"
    return None


def bad_lines_error(source: str, problems: list[tuple[int, str]]) -> SyscallError:
    """One error naming every bad line (the first MAX_LISTED in full, then a count)."""
    listed = "; ".join(f"line {n}: {why}" for n, why in problems[:MAX_LISTED])
    more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    noun = "line" if len(problems) == 1 else "lines"
    return SyscallError(Errno.EINVAL, f"{source}: {len(problems)} bad {noun}: {listed}{more}")


def parse_lines(lines: Iterable[str], source: str = "<data>") -> list[Conversation]:
    """Parse JSONL text; raise ``SyscallError(EINVAL)`` listing every bad line."""
    out: list[Conversation] = []
    problems: list[tuple[int, str]] = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append((n, f"malformed JSON ({exc.msg} at column {exc.colno})"))
            continue
        problem = check_record(record)
        if problem:
            problems.append((n, problem))
            continue
        out.append(Conversation(messages=record["messages"], meta=record.get("meta") or {}, line=n,
                                tools=record.get("tools") or None))
    if problems:
        raise bad_lines_error(source, problems)
    if not out:
        raise SyscallError(Errno.ENODATA, f"{source}: no conversations")
    return out


def load_jsonl(path: str | Path) -> list[Conversation]:
    """Load and validate a JSONL chat file."""
    p = Path(path)
    if not p.is_file():
        raise SyscallError(Errno.ENOENT, f"no such data file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SyscallError(Errno.EINVAL, f"{p}: not UTF-8 text ({exc.reason})") from None
    return parse_lines(text.splitlines(), source=str(p))


def write_jsonl(path: str | Path, conversations: Iterable[Conversation]) -> int:
    """Write conversations as JSONL; return how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for conv in conversations:
            f.write(conv.to_json() + "\n")
            count += 1
    return count
