"""Capabilities: strings an app's manifest grants, checked on every syscall.

Forms: ``llm``, ``spawn``, ``ipc``, ``mem``, ``proc``, ``kv`` (plain), and scoped ones
``fs.read:/docs``, ``fs.write:/notes``, ``net:*.example.com``.  A scoped
capability grants its scope and everything under it; a plain ``fs.read`` grants
every path; ``*`` grants everything (init and root tools).

A ``net:`` capability asked for with a pattern (a child's ``net:*.api.example.com``)
is granted only when the pattern is provably within the holder's (see
:mod:`lmos.syscalls.globs`), never by matching the pattern's text as a host name.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable

from lmos.syscalls.globs import within

GLOB_CHARS = frozenset("*?[]\\")


def _path_within(path: str, root: str) -> bool:
    p = posixpath.normpath("/" + path.lstrip("/"))
    r = posixpath.normpath("/" + root.lstrip("/"))
    return r == "/" or p == r or p.startswith(r.rstrip("/") + "/")


def grants(held: Iterable[str], need: str) -> bool:
    """Does any capability in ``held`` grant ``need``?"""
    kind, _, arg = need.partition(":")
    for h in held:
        if h == "*" or h == need:
            return True
        hk, _, harg = h.partition(":")
        if hk != kind:
            continue
        if not harg:
            return True
        if not arg:
            continue
        if kind.startswith("fs.") and _path_within(arg, harg):
            return True
        if kind == "net" and _net_within(arg, harg):
            return True
    return False


def _net_within(need: str, held: str) -> bool:
    if GLOB_CHARS.isdisjoint(need):  # one host name: does the held pattern match it?
        return fnmatch.fnmatchcase(need.lower(), held.lower())
    return within(need, held)  # a pattern: every host it matches must be matched by the held one


def subset(child: Iterable[str], parent: Iterable[str]) -> list[str]:
    """Capabilities in ``child`` that ``parent`` does not grant (empty = ok)."""
    held = list(parent)
    return [c for c in child if not grants(held, c)]
