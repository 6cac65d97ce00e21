"""The four tools of the built-in model, as plain functions over a tiny state.

The synthetic corpus produces tool results with this class and the evaluators
execute the model's calls with it, so "the result the model saw in training"
and "the result the real tool returns" are the same code.  ``calc`` is the real
tool core from :mod:`lmos.userland.tools.calc`; the key-value store is a dict
and the clock returns a fixed time (the conversation's ``meta["now"]``) so runs
are reproducible.
"""

from __future__ import annotations

import json
from typing import Any

from lmos.errors import SyscallError
from lmos.userland.tools.calc import evaluate, format_result
from lmos.userland.tools.kvmatch import closest_key, stored_under

TOOLS = ("calc", "kv_set", "kv_get", "clock")
DEFAULT_NOW = "2026-11-22 22:30:05 UTC"


class ToolBox:
    """Executes tool calls against one conversation's key-value store and clock."""

    def __init__(
        self, kv: dict[str, str] | None = None, now: str = DEFAULT_NOW, fixed: dict[str, str] | None = None
    ) -> None:
        self.kv: dict[str, str] = dict(kv or {})
        self.now = now
        # results of declared (synthetic) tools, by call_key(name, args): what the corpus showed
        self.fixed: dict[str, str] = dict(fixed or {})

    def run(self, tool: str, args: dict[str, Any]) -> str:
        """Run one call and return its result text (``error: MESSAGE`` on failure)."""
        try:
            return self._run(tool, args)
        except SyscallError as exc:
            return f"error: {exc.message}"

    def _run(self, tool: str, args: dict[str, Any]) -> str:
        if tool == "calc":
            expr = args.get("expr")
            if not isinstance(expr, str):
                return "error: calc needs a string 'expr'"
            return format_result(evaluate(expr))
        if tool == "kv_set":
            key, value = args.get("key"), args.get("value")
            if not isinstance(key, str) or not isinstance(value, str):
                return "error: kv_set needs string 'key' and 'value'"
            self.kv[key] = value
            return "ok"
        if tool == "kv_get":
            key = args.get("key")
            if not isinstance(key, str):
                return "error: kv_get needs a string 'key'"
            if key in self.kv:
                return self.kv[key]
            near = closest_key(key, self.kv)  # the real kv_get's forgiving lookup (lmos.userland.tools)
            if near is None:
                return f"error: no such key: {key}"
            return stored_under(self.kv[near], near)
        if tool == "clock":
            return self.now
        fixed = self.fixed.get(call_key(tool, args))
        if fixed is not None:
            return fixed
        if any(k.startswith(f"{tool}\x00") for k in self.fixed):
            return "error: not found"
        return f"error: unknown tool: {tool}"


def call_key(tool: str, args: dict[str, Any]) -> str:
    """The lookup key of a declared tool's fixed result (name and canonical JSON arguments)."""
    return f"{tool}\x00{json.dumps(args, sort_keys=True, ensure_ascii=False)}"


def answer_must_contain(tool: str, args: dict[str, Any], result: str) -> str:
    """The text a correct final answer to this call must contain.

    Usually the tool's result; for ``kv_set`` (result ``ok``) it is the stored
    value, and for a missing key it is the key, since echoing ``error: ...``
    verbatim is not what a good answer does.
    """
    if tool == "kv_set":
        return str(args.get("value", ""))
    if tool == "kv_get" and result.startswith("error: no such key"):
        return str(args.get("key", ""))
    if tool == "kv_get" and result.endswith('")') and ' (stored under "' in result:
        return result[: result.rindex(' (stored under "')]
    if result.startswith("error: "):
        return result[len("error: ") :]
    return result
