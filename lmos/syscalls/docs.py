"""Generate ``docs/syscalls.md`` from the syscall table (``--check`` verifies it is current).

The reference is derived, never hand-written, so it cannot drift from the code:
CI runs ``python -m lmos.syscalls.docs --check``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from lmos.syscalls import table as _table  # noqa: F401  (loads every family)
from lmos.syscalls.registry import BY_NR

DOC = Path(__file__).resolve().parents[2] / "docs" / "syscalls.md"


def _fields(t: type[msgspec.Struct]) -> str:
    info = msgspec.inspect.type_info(t)
    assert isinstance(info, msgspec.inspect.StructType)
    if not info.fields:
        return "—"
    parts = []
    for f in info.fields:
        if f.required:
            default = ""
        else:
            default = " = " + repr(f.default) if f.default is not msgspec.NODEFAULT else " = …"
        parts.append(f"`{f.name}: {_type_name(f.type)}{default}`")
    return "<br>".join(parts)


def _type_name(t: msgspec.inspect.Type) -> str:
    name = type(t).__name__.removesuffix("Type").lower()
    if isinstance(t, msgspec.inspect.UnionType):
        return " or ".join(_type_name(x) for x in t.types)
    if isinstance(t, msgspec.inspect.ListType):
        return f"list[{_type_name(t.item_type)}]"
    if isinstance(t, msgspec.inspect.StructType):
        return t.cls.__name__
    return {"none": "None", "any": "any"}.get(name, name)


def render() -> str:
    lines = [
        "# lmos syscall reference",
        "",
        "Generated from the syscall table by `python -m lmos.syscalls.docs`; do not edit by hand.",
        "Every call returns `Ok(value)` or `Err(errno, name, message)`; requests reject unknown fields.",
        "",
        "| nr | name | capability | blocks | request | response |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for nr in sorted(BY_NR):
        d = BY_NR[nr]
        cap = "(depends on args)" if callable(d.cap) else (f"`{d.cap}`" if d.cap else "—")
        lines.append(f"| {nr} | `{d.name}` | {cap} | {'yes' if d.blocking else 'no'} | "
                     f"{_fields(d.req)} | `{d.resp.__name__}`: {_fields(d.resp)} |")
    lines += ["", "## Descriptions", ""]
    for nr in sorted(BY_NR):
        d = BY_NR[nr]
        lines += [f"### {nr} `{d.name}`", "", d.doc or "(no description)", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.is_file() or DOC.read_text() != text:
            print("docs/syscalls.md is out of date: run `python -m lmos.syscalls.docs`", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
