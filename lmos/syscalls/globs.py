"""Glob containment: is every name one pattern matches also matched by another?

A ``net:`` capability is an ``fnmatch`` pattern (``*.example.com``).  When a
process hands a pattern to a child, the child's pattern must be *provably*
within the parent's.  Matching the child's pattern as if it were a host name
is wrong: ``?`` matches the one-character text ``*``, so a parent holding
``net:?`` could grant ``net:*`` (everything).  This module decides containment
symbolically, token against token, and answers False whenever it cannot prove
it (an odd bracket, a case it does not model): refusing a grant that was safe
is a nuisance, granting one that was not is an escape.

The proof: align the child's tokens with the parent's.  A parent ``*`` absorbs
any run of child tokens (stars included); a parent ``?`` absorbs one child
token that stands for exactly one character; a literal or a class absorbs a
child literal or class whose every character it accepts.  A child ``*`` can
only be absorbed by a parent ``*``.  If such an alignment exists, every string
the child matches, the parent matches.  Both sides are lower-cased first, like
host names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

MAX_PATTERN = 256  # longer patterns are not proven (they are not host patterns anyway)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "lit" | "any" | "star" | "set"
    chars: frozenset[str] = frozenset()  # lit: one char; set: the members
    negated: bool = False  # set: matches every char NOT in chars


def _parse(pattern: str) -> tuple[_Tok, ...] | None:
    """Tokens of an fnmatch pattern, or None for a form this module does not model."""
    out: list[_Tok] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if not out or out[-1].kind != "star":  # ** is *
                out.append(_Tok("star"))
            i += 1
        elif c == "?":
            out.append(_Tok("any"))
            i += 1
        elif c == "[":
            j = i + 1
            j += pattern[j:j + 1] == "!"
            j += pattern[j:j + 1] == "]"  # a ] first in the class is a member, as in fnmatch
            end = pattern.find("]", j)
            if end < 0:
                return None  # fnmatch reads an unclosed [ as a literal: not modelled, refuse
            body = pattern[i + 1:end]
            negated = body.startswith("!")
            body = body[1:] if negated else body
            members = _members(body)
            if members is None or not members:
                return None
            out.append(_Tok("set", members, negated))
            i = end + 1
        elif c in "]\\":
            return None  # fnmatch treats these literally, but they are no part of a host: refuse
        else:
            out.append(_Tok("lit", frozenset(c)))
            i += 1
    return tuple(out)


def _members(body: str) -> frozenset[str] | None:
    chars: set[str] = set()
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            lo, hi = ord(body[j]), ord(body[j + 2])
            if hi < lo or hi - lo > 1024:
                return None
            chars.update(chr(k) for k in range(lo, hi + 1))
            j += 3
        else:
            if body[j] in "[\\":
                return None
            chars.add(body[j])
            j += 1
    return frozenset(chars)


def _one_char_within(child: _Tok, parent: _Tok) -> bool:
    """Does every one-character string ``child`` matches also match ``parent`` (both one char wide)?"""
    if parent.kind == "any":
        return True
    if child.kind == "any":
        return False  # only "?" or a class of every character contains "?": not modelled
    if parent.kind == "lit":
        return (child.kind == "lit" or not child.negated) and child.chars == parent.chars
    # parent is a set
    if child.kind == "lit" or (child.kind == "set" and not child.negated):
        return child.chars.isdisjoint(parent.chars) if parent.negated else child.chars <= parent.chars
    # child is a negated set: it matches all but a few characters
    return parent.negated and parent.chars <= child.chars


def within(child: str, parent: str) -> bool:
    """True only if every name ``child`` matches is matched by ``parent`` (fnmatch, case-folded)."""
    child, parent = child.lower(), parent.lower()
    if child == parent:
        return True
    if len(child) > MAX_PATTERN or len(parent) > MAX_PATTERN:
        return False
    c, p = _parse(child), _parse(parent)
    if c is None or p is None:
        return False
    return _aligned(c, p)


@lru_cache(maxsize=1024)
def _aligned(c: tuple[_Tok, ...], p: tuple[_Tok, ...]) -> bool:
    # table[i][j]: child tokens c[i:] are absorbed by parent tokens p[j:]
    nc, np_ = len(c), len(p)
    table = [[False] * (np_ + 1) for _ in range(nc + 1)]
    table[nc][np_] = True
    for j in range(np_ - 1, -1, -1):
        table[nc][j] = p[j].kind == "star" and table[nc][j + 1]
    for i in range(nc - 1, -1, -1):
        for j in range(np_ - 1, -1, -1):
            pt, ct = p[j], c[i]
            if pt.kind == "star":
                # the parent star absorbs nothing more, or this child token too
                table[i][j] = table[i][j + 1] or table[i + 1][j]
            elif ct.kind == "star":
                table[i][j] = False
            else:
                table[i][j] = _one_char_within(ct, pt) and table[i + 1][j + 1]
    return table[0][0]
