"""Which stored key a ``kv_get`` meant: the forgiving lookup of the ``kv_get`` tool, as pure functions.

People (and small models) rarely recall a key exactly as it was stored:
"favorite color" for ``favorite_color``, "Fav colour" for ``fav_color``.  A
real assistant would look for the closest note it has, and say which one it
used, rather than answer "no such key".  So when no key matches exactly,
:func:`closest_key` picks one of the user's stored keys:

1. a key equal to the asked one once case, spaces, underscores and hyphens are
   ignored (``Favorite Color`` = ``favorite_color``);
2. else the key most similar by :class:`difflib.SequenceMatcher` ratio, at least
   :data:`MIN_RATIO`, compared in that same normalised form;
3. else none, and the tool answers ENOENT as before.

The answer names the key used (:func:`stored_under`), so the model and the
user can see that a different key answered.  The training corpus
(``lmos.train``) calls these same functions, so the model learns exactly the
result text the tool returns.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

MIN_RATIO = 0.6
_IGNORED = re.compile(r"[\s_\-]+")


def normalise(key: str) -> str:
    """``key`` lower-cased without spaces, underscores or hyphens (how keys are compared)."""
    return _IGNORED.sub("", key.lower())


def closest_key(key: str, stored: Iterable[str]) -> str | None:
    """The stored key ``key`` most likely meant, or None when none is close (see the module doc).

    An exact match is the caller's business (it is cheaper to ask the store
    for it first); ties go to the first key in ``stored`` order.
    """
    keys = list(stored)
    want = normalise(key)
    for k in keys:
        if normalise(k) == want:
            return k
    best, best_ratio = None, MIN_RATIO
    matcher = difflib.SequenceMatcher(b=want, autojunk=False)
    for k in keys:
        matcher.set_seq1(normalise(k))
        if matcher.real_quick_ratio() < best_ratio or matcher.quick_ratio() < best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio or (ratio == best_ratio and best is None):
            best, best_ratio = k, ratio
    return best


def stored_under(value: str, key: str) -> str:
    """The ``kv_get`` result when a different key answered: ``VALUE (stored under "KEY")``."""
    return f'{value} (stored under "{key}")'
