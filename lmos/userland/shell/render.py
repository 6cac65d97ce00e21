"""How the shell shows what processes return: exit statuses and results."""

from __future__ import annotations

import json
from typing import Any


def describe(w: Any) -> str:
    if w.state == "killed":
        return f"killed (status {w.exit_status})"
    if w.exit_status:
        return f"exit {w.exit_status}" + (f": {w.error}" if w.error else "")
    return "exit 0"


def to_builtins(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)


def render_result(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return str(value["text"])
    return json.dumps(value, ensure_ascii=False)
