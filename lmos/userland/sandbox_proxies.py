"""Stand-ins for the modules sandboxed code may use: math, json, re, random, datetime.

Never hand a module object to untrusted code, not even a harmless-looking one:
``json.codecs.sys``, ``re.enum.sys`` and ``uuid.os`` all lead out.  Code gets a
:class:`SafeNamespace` instead, a read-only bag of chosen functions and
constants, and regex results come back as plain values or :class:`SafeMatch`
and :class:`SafePattern`, which expose no pattern internals (``.re``).  A
proxy has no ``__name__`` on purpose: when ``from json import decoder`` misses,
CPython retries ``sys.modules[X.__name__ + '.decoder']``.

Like the policy, this module runs inside the worker and imports only the
standard library.
"""

from __future__ import annotations

import datetime as _datetime
import json as _json
import keyword
import math as _math
import random as _random
import re as _re
from typing import Any


class SafeNamespace:
    """A read-only bag of chosen functions and constants standing in for a
    module.  It deliberately has no ``__name__``: CPython's ``from X import y``
    falls back to ``sys.modules[X.__name__ + '.y']`` when ``y`` is missing."""

    __slots__ = ("_items", "_label")

    def __init__(self, label: str, items: dict[str, Any]) -> None:
        object.__setattr__(self, "_items", items)
        object.__setattr__(self, "_label", label)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            try:
                return self._items[name]
            except KeyError:
                pass
        raise AttributeError(f"sandbox {self._label!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"sandbox {self._label!r} is read-only")

    def __repr__(self) -> str:
        return f"<sandbox {self._label}>"


class SafeMatch:
    """A regex match reduced to plain values (no ``.re``, no pattern object)."""

    __slots__ = ("_m",)

    def __init__(self, match: _re.Match[Any]) -> None:
        self._m = match

    def group(self, *groups: Any) -> Any:
        return self._m.group(*groups)

    def groups(self, default: Any = None) -> tuple[Any, ...]:
        return self._m.groups(default)

    def groupdict(self, default: Any = None) -> dict[str, Any]:
        return self._m.groupdict(default)

    def start(self, group: Any = 0) -> int:
        return self._m.start(group)

    def end(self, group: Any = 0) -> int:
        return self._m.end(group)

    def span(self, group: Any = 0) -> tuple[int, int]:
        return self._m.span(group)

    @property
    def string(self) -> Any:
        return self._m.string

    def __getitem__(self, group: Any) -> Any:
        return self._m[group]

    def __repr__(self) -> str:
        return f"<sandbox match span={self._m.span()} match={self._m.group(0)!r}>"


def _wrap_match(match: _re.Match[Any] | None) -> SafeMatch | None:
    return None if match is None else SafeMatch(match)


def _wrap_repl(repl: Any) -> Any:
    if callable(repl):
        return lambda m: repl(SafeMatch(m))
    return repl


class SafePattern:
    """A compiled regex whose methods return plain values or :class:`SafeMatch`."""

    __slots__ = ("_p",)

    def __init__(self, pattern: _re.Pattern[Any]) -> None:
        self._p = pattern

    pattern = property(lambda self: self._p.pattern)
    flags = property(lambda self: int(self._p.flags))
    groups = property(lambda self: self._p.groups)

    def match(self, string: Any, *args: int) -> SafeMatch | None:
        return _wrap_match(self._p.match(string, *args))

    def search(self, string: Any, *args: int) -> SafeMatch | None:
        return _wrap_match(self._p.search(string, *args))

    def fullmatch(self, string: Any, *args: int) -> SafeMatch | None:
        return _wrap_match(self._p.fullmatch(string, *args))

    def findall(self, string: Any, *args: int) -> list[Any]:
        return self._p.findall(string, *args)

    def finditer(self, string: Any, *args: int) -> list[SafeMatch]:
        return [SafeMatch(m) for m in self._p.finditer(string, *args)]

    def split(self, string: Any, maxsplit: int = 0) -> list[Any]:
        return self._p.split(string, maxsplit)

    def sub(self, repl: Any, string: Any, count: int = 0) -> Any:
        return self._p.sub(_wrap_repl(repl), string, count)

    def subn(self, repl: Any, string: Any, count: int = 0) -> tuple[Any, int]:
        return self._p.subn(_wrap_repl(repl), string, count)

    def __repr__(self) -> str:
        return f"<sandbox pattern {self._p.pattern!r}>"


def _re_namespace() -> SafeNamespace:
    def compile(pattern: Any, flags: int = 0) -> SafePattern:
        return SafePattern(_re.compile(pattern, int(flags)))

    def match(pattern: Any, string: Any, flags: int = 0) -> SafeMatch | None:
        return compile(pattern, flags).match(string)

    def search(pattern: Any, string: Any, flags: int = 0) -> SafeMatch | None:
        return compile(pattern, flags).search(string)

    def fullmatch(pattern: Any, string: Any, flags: int = 0) -> SafeMatch | None:
        return compile(pattern, flags).fullmatch(string)

    def findall(pattern: Any, string: Any, flags: int = 0) -> list[Any]:
        return compile(pattern, flags).findall(string)

    def finditer(pattern: Any, string: Any, flags: int = 0) -> list[SafeMatch]:
        return compile(pattern, flags).finditer(string)

    def split(pattern: Any, string: Any, maxsplit: int = 0, flags: int = 0) -> list[Any]:
        return compile(pattern, flags).split(string, maxsplit)

    def sub(pattern: Any, repl: Any, string: Any, count: int = 0, flags: int = 0) -> Any:
        return compile(pattern, flags).sub(repl, string, count)

    def subn(pattern: Any, repl: Any, string: Any, count: int = 0, flags: int = 0) -> tuple[Any, int]:
        return compile(pattern, flags).subn(repl, string, count)

    items: dict[str, Any] = {f.__name__: f for f in (compile, match, search, fullmatch, findall, finditer,
                                                      split, sub, subn)}
    items["escape"] = _re.escape
    items["error"] = _re.error
    for flag in ("IGNORECASE", "I", "MULTILINE", "M", "DOTALL", "S", "VERBOSE", "X", "ASCII", "A"):
        items[flag] = int(getattr(_re, flag))
    return SafeNamespace("re", items)


def _json_namespace() -> SafeNamespace:
    def loads(text: Any) -> Any:
        return _json.loads(text)

    def dumps(obj: Any, *, indent: Any = None, sort_keys: bool = False, separators: Any = None,
              ensure_ascii: bool = True, default: Any = None) -> str:
        return _json.dumps(obj, indent=indent, sort_keys=sort_keys, separators=separators,
                           ensure_ascii=ensure_ascii, default=default)

    return SafeNamespace("json", {"loads": loads, "dumps": dumps, "JSONDecodeError": _json.JSONDecodeError})


def _math_namespace() -> SafeNamespace:
    items = {k: v for k, v in vars(_math).items() if not k.startswith("_")}
    return SafeNamespace("math", items)


def _datetime_namespace() -> SafeNamespace:
    names = ("date", "time", "datetime", "timedelta", "timezone", "MINYEAR", "MAXYEAR")
    return SafeNamespace("datetime", {n: getattr(_datetime, n) for n in names})


def clock_namespace(now: float) -> SafeNamespace:
    """``datetime`` whose clock is the time a run started, as a ``time`` syscall gave it.

    A program's outputs must follow from its syscall results alone, or recovery by replay
    (docs/durability.md) could not re-run it: ``datetime.now()``, ``today()`` and
    ``date.today()`` all read that one instant, which the syscall journal holds."""

    class datetime(_datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
            return _datetime.datetime.fromtimestamp(now, tz)

        @classmethod
        def today(cls) -> Any:  # type: ignore[override]
            return _datetime.datetime.fromtimestamp(now)

        @classmethod
        def utcnow(cls) -> Any:  # type: ignore[override]
            return _datetime.datetime.fromtimestamp(now, _datetime.UTC).replace(tzinfo=None)

    class date(_datetime.date):
        @classmethod
        def today(cls) -> Any:  # type: ignore[override]
            return _datetime.date.fromtimestamp(now)

    names = ("time", "timedelta", "timezone", "MINYEAR", "MAXYEAR")
    return SafeNamespace("datetime", {"datetime": datetime, "date": date,
                                      **{n: getattr(_datetime, n) for n in names}})


def random_namespace(seed: int) -> SafeNamespace:
    """A per-run generator: the same seed gives the same draws, and one run's
    draws never shift another's."""
    rng = _random.Random(seed)
    names = ("random", "randint", "randrange", "uniform", "choice", "choices", "shuffle", "sample",
             "gauss", "getrandbits", "seed")
    return SafeNamespace("random", {n: getattr(rng, n) for n in names})


# Stateless, read-only proxies are built once per worker and shared by its runs.
SHARED_MODULES: dict[str, SafeNamespace] = {
    "math": _math_namespace(), "json": _json_namespace(), "re": _re_namespace(),
    "datetime": _datetime_namespace(),
}
IMPORTABLE = frozenset({*SHARED_MODULES, "random"})


def module_name_error(name: Any) -> str | None:
    """Why ``name`` cannot be one of a program's own modules (None if it can)."""
    if type(name) is not str or not name.isidentifier() or not name.isascii() or name[:1] == "_":
        return f"bad module name {name!r}: need an ASCII identifier not starting with '_'"
    if keyword.iskeyword(name) or name in IMPORTABLE:
        return f"module name {name!r} is reserved"
    return None
