"""What crosses between a sandboxed program and the host: exact copies of JSON data.

Only plain data leaves a program (its namespace, ``result``, syscall arguments,
what the ``ask``/``agent`` helpers are given): never one of its objects, whose
methods would run with trusted frames on the stack.  :func:`to_json` copies a
value if it is JSON data of exact types, charging its size to a budget, and
refuses anything else, including a ``str`` that is not Unicode text (a lone
surrogate has no UTF-8 form, and the host would reject the whole message that
carried it, losing the run's result).  Runs inside the worker (loaded by path)
and imports only the standard library.
"""

from __future__ import annotations

import math as _math
from collections.abc import Iterable
from typing import Any


def to_json(value: Any, budget: int, depth: int = 0) -> tuple[Any, int]:
    """Copy ``value`` if it is JSON-representable (exact types only, tuples
    become lists, finite floats), charging its rough encoded size to
    ``budget``; raise ``ValueError`` if it is not or does not fit."""
    kind = type(value)
    if depth > 64 or budget < 0:
        raise ValueError("nested too deeply or too large")
    if value is None or kind is bool:
        return value, budget - 5
    if kind is int:
        if value.bit_length() > 4000:
            raise ValueError("integer too large")
        return value, budget - 20
    if kind is float:
        if not _math.isfinite(value):
            raise ValueError("not a finite float")
        return value, budget - 24
    if kind is str:
        budget -= len(value) + 2
        if budget < 0:
            raise ValueError("too large")
        _check_text(value)
        return value, budget
    if kind is list or kind is tuple:
        out = []
        for item in value:
            item, budget = to_json(item, budget - 1, depth + 1)
            out.append(item)
        return out, budget
    if kind is dict:
        obj = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError("dict keys must be str")
            _check_text(key)
            obj[key], budget = to_json(item, budget - len(key) - 4, depth + 1)
        return obj, budget
    raise ValueError(f"{kind.__name__} is not JSON")


def _check_text(text: str) -> None:
    """JSON text is Unicode: a lone surrogate (``chr(0xD800)``) has no UTF-8 form, and the
    host would reject the whole message that carried it."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("str with a lone surrogate is not text") from None


def namespace_of(glb: dict[str, Any], skip: Iterable[str], budget: int) -> dict[str, Any]:
    """The JSON-representable top-level names a program left bound."""
    skipped = set(skip)
    out: dict[str, Any] = {}
    for name, value in list(glb.items()):
        if name.startswith("_") or name in skipped:
            continue
        try:
            out[name], budget = to_json(value, budget)
        except (ValueError, RecursionError):
            continue
    return out
