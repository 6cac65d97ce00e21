"""How the front ends show what processes return: exit statuses, errors and results.

lmosh and ``lmos run`` both print an app's returned value once its stream has
ended, through :func:`render_result`, so the two look the same.  The value is
shaped for reading, not dumped: a list of records (dicts with the same keys,
or mostly) becomes a table; a dict holding such lists becomes titled tables
plus its other fields; anything else is pretty JSON, and a plain string is
itself.  What the user already watched stream by (an agent's answer, its tool
calls) is not printed a second time.

Tables are drawn by rich into a string at the terminal's width, with colour
only when the output is a terminal, so the same text works in a pipe.  Every
string a process put in its result or error is neutralised
(:mod:`.termsafe`) where it enters the rendering, before rich adds its own
colour codes: the text returned is safe to write to a terminal as it is.
"""

from __future__ import annotations

import io
import json
from typing import Any

from lmos.errors import Errno
from lmos.userland.shell.termsafe import json_safe, neutralize

_MAX_COLUMNS = 16  # more keys than this is not a table a person can read


def describe(w: Any) -> str:
    """A process's ending in a few words: ``exit 0``, ``exit 1: ENOENT: ...``, ``killed (status -9)``."""
    if w.state == "killed":
        return f"killed (status {w.exit_status})"
    if w.exit_status:
        return f"exit {w.exit_status}" + (f": {neutralize(w.error)}" if w.error else "")
    return "exit 0"


def failure(app: str, w: Any) -> str:
    """Why ``app`` failed, naming the app, the errno and the reason: ``support: ENOENT: no such file: /f``.

    Apps often start their messages with their own name; it is said once, not twice."""
    app = neutralize(app)
    if w.state == "killed" and not w.errno:
        return f"{app}: {neutralize(w.error or 'killed')}"
    reason = neutralize(w.error or f"exit status {w.exit_status}")
    name = ""
    if w.errno:
        try:
            name = Errno(w.errno).name
        except ValueError:
            name = f"errno {w.errno}"
    if name and reason.startswith(f"{name}: "):
        reason = reason[len(name) + 2:]
    if reason.startswith(f"{app}: "):
        reason = reason[len(app) + 2:]
    return f"{app}: {name}: {reason}" if name else f"{app}: {reason}"


def to_builtins(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)


def to_json(value: Any) -> str:
    """The raw value as one JSON document (``--json``), terminal-safe."""
    return json_safe(json.dumps(to_builtins(value), ensure_ascii=False, default=str))


def _dumps(value: Any, indent: int | None = None) -> str:
    return json_safe(json.dumps(value, ensure_ascii=False, indent=indent, default=str))


# -- what is left to show ---------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.split())


def is_agent_record(value: Any) -> bool:
    """The answer record of the agent loop: ``{text, calls, steps, finish_reason}`` (maybe plus more)."""
    return (isinstance(value, dict) and isinstance(value.get("text"), str)
            and {"steps", "finish_reason"} <= value.keys())


def unstreamed(value: Any, streamed: str = "") -> Any:
    """``value`` less what ``streamed`` (the text already shown) holds; None when nothing is left.

    A string shown in the stream is dropped, and so is a dict's ``text``.  An agent's
    answer record also loses its bookkeeping: its tool calls were shown as they ran,
    ``steps`` says nothing to a reader, ``finish_reason`` is kept only when the
    answer was cut short, and a flag an app adds that is off (support's ``handoff: false``)
    is the ordinary case, not news: only a flag that is on is shown."""
    seen = _norm(streamed)

    def shown(text: str) -> bool:
        return bool(seen) and _norm(text) in seen

    if isinstance(value, str):
        return None if seen and (not value.strip() or shown(value)) else value
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if is_agent_record(value):
        if seen or not out.get("calls"):
            out.pop("calls", None)
        out.pop("steps", None)
        if out.get("finish_reason") == "answer":
            out.pop("finish_reason")
        if not out["text"].strip():
            out.pop("text")
        for key in [k for k, v in out.items() if v is False]:
            out.pop(key)
    if isinstance(out.get("text"), str) and shown(out["text"]):
        out.pop("text")
    if not out and value:
        return None
    return out


# -- rendering ----------------------------------------------------------------------------------------------
def is_records(value: Any) -> bool:
    """A non-empty list of dicts sharing most of their keys: a table's rows."""
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) and r for r in value):
        return False
    keys = _columns(value)
    if len(keys) > _MAX_COLUMNS:
        return False
    return all(2 * len(r) >= len(keys) for r in value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(str(k) for k in r))
    return list(cols)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralize(value)
    return _dumps(value)


class _Canvas:
    """A rich console that draws into a string."""

    def __init__(self, width: int, color: bool) -> None:
        from rich.console import Console

        self.buf = io.StringIO()
        self.console = Console(file=self.buf, width=max(width, 20), force_terminal=color, no_color=not color,
                               color_system="standard" if color else None, highlight=False, markup=False,
                               emoji=False, soft_wrap=False)

    def table(self, rows: list[dict[str, Any]], title: str | None = None) -> None:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        cols = _columns(rows)
        head = Text(neutralize(title), style="bold") if title else None
        t = Table(*(neutralize(c) for c in cols), title=head, title_justify="left",
                  box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
        for r in rows:
            t.add_row(*(Text(_cell(r.get(c))) for c in cols))
        self.console.print(t)

    def text(self, text: str) -> None:
        """Plain text goes in as it is (neutralised): the terminal wraps it, and a pipe keeps whole lines."""
        self.buf.write(neutralize(text) + "\n")

    def value(self) -> str:
        return "\n".join(ln.rstrip() for ln in self.buf.getvalue().rstrip("\n").splitlines())


def _field(key: str, value: Any, width: int) -> str:
    key = neutralize(key)
    if isinstance(value, str):
        value = neutralize(value)  # before splitting: only a real newline starts a line
        if "\n" not in value.strip():
            return f"{key}: {value.strip()}"
        return f"{key}:\n" + "\n".join(f"  {ln}" for ln in value.strip("\n").splitlines())
    if isinstance(value, list | dict) and not value:
        return f"{key}: (none)"
    flat = f"{key}: {_cell(value)}"
    if len(flat) <= width:
        return flat
    pretty = _dumps(value, indent=2)
    return f"{key}:\n" + "\n".join(f"  {ln}" for ln in pretty.splitlines())


def render_result(value: Any, streamed: str = "", *, width: int = 100, color: bool = False) -> str:
    """``value`` for a reader, less what ``streamed`` already showed; "" when nothing is left to show."""
    value = to_builtins(value)
    view = unstreamed(value, streamed)
    if view is None:
        return ""
    if isinstance(view, str):
        return neutralize(view)
    if is_records(view):
        canvas = _Canvas(width, color)
        canvas.table(view)
        return canvas.value()
    as_fields = isinstance(view, dict) and (
        view != value or isinstance(view.get("text"), str) or any(is_records(v) for v in view.values()))
    if not isinstance(view, dict) or not as_fields:
        return _dumps(view, indent=2)
    canvas = _Canvas(width, color)
    if isinstance(view.get("text"), str):
        canvas.text(view["text"].strip())
    after_table = False
    for key, item in view.items():
        if key == "text" and isinstance(item, str):
            continue
        table = is_records(item)
        if canvas.buf.tell() and (table or after_table):
            canvas.text("")  # a blank line sets each table apart
        if table:
            canvas.table(item, title=str(key))
        else:
            canvas.text(_field(str(key), item, width))
        after_table = table
    return canvas.value()
