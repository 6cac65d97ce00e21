"""Capabilities: strings an app's manifest grants, checked on every syscall.

Forms: ``llm``, ``spawn``, ``ipc``, ``mem``, ``proc``, ``kv`` (plain), and scoped ones
``fs.read:/docs``, ``fs.write:/notes``, ``net:*.example.com``.  A scoped
capability grants its scope and everything under it; a plain ``fs.read`` grants
every path; ``*`` grants everything (init and root tools).
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable


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
        if kind == "net" and fnmatch.fnmatchcase(arg.lower(), harg.lower()):
            return True
    return False


def subset(child: Iterable[str], parent: Iterable[str]) -> list[str]:
    """Capabilities in ``child`` that ``parent`` does not grant (empty = ok)."""
    held = list(parent)
    return [c for c in child if not grants(held, c)]
