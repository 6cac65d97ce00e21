"""The train / held-out split of the synthetic corpus: by family, not only by value.

Splitting only the *values* (numbers, stored words) lets the held-out set reuse
the exact sentences the model trained on, so it measures copying into a known
sentence, not understanding a new one.  Here every axis a request varies on is
split, and the held-out side shares none of them with training:

* **template / phrasing family**: a template's family is its normalised text
  (lower case, common contractions expanded, punctuation dropped, slots kept),
  so ``"what is {e}?"``, ``"What is {e}?"`` and ``"what's {e}?"`` are one family
  and ``"{e}"``, ``"{e}?"`` and ``"{e} = ?"`` another.  In every phrasing list a
  quarter of the families (at least one) is held out; the held-out set is one
  global set of family strings, so a family that appears in two lists is on
  the same side in both.
* **key names** (kv): a key's name is normalised the same way; a quarter of
  the fixed key words is held out, and generated keys (pseudo-words, the broad
  profile's phrases) fall by CRC-32 of the name.
* **small-talk prompts**: in every intent a quarter of the prompt families (at
  least one) is held out; replies are shared (they are the answer, not the
  request).
* **calc expressions**: normalised before splitting (whitespace dropped, the
  operands of a lone ``+`` or ``*`` sorted), so ``12 * 7``, ``12*7`` and
  ``7 * 12`` always land on the same side.
* **values** (stored values, repeat texts): by CRC-32, as before.

Assistant replies (answer templates) are not split: they are what the model
must say, not what it is asked.  The selection is a pure function of the
strings (CRC-32 rank), so it is the same on every machine and every run.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable

from lmos.train import phrasings as P
from lmos.train.smalltalk import SMALL_TALK

HELDOUT_MODULUS = 8  # values: one in eight is held out
KEY_MODULUS = 4  # generated key names: one in four
FAMILY_SHARE = 0.25  # of each phrasing list and each small-talk intent
_CONTRACTIONS = (
    ("what's", "what is"),
    ("how's", "how is"),
    ("it's", "it is"),
    ("that's", "that is"),
    ("don't", "do not"),
    ("i'm", "i am"),
    ("you're", "you are"),
)
_NUM = r"-?\d+(?:\.\d+)?"
_COMMUTATIVE = re.compile(rf"^({_NUM})([+*])({_NUM})$")


def _crc(tag: str, text: str) -> int:
    return zlib.crc32(f"{tag}:{text}".encode())


def in_heldout(value: str) -> bool:
    """Whether a value belongs to the held-out slice (never used for training)."""
    return zlib.crc32(value.encode("utf-8")) % HELDOUT_MODULUS == 0


def family(text: str) -> str:
    """The phrasing family of a template or prompt (case, contractions, punctuation ignored)."""
    t = text.lower()
    for short, long in _CONTRACTIONS:
        t = t.replace(short, long)
    t = re.sub(r"[^a-z0-9{}\s]", " ", t)
    return " ".join(t.split())


def normalize_expr(expr: str) -> str:
    """The form a calc expression is split on: no whitespace, commutative operands sorted."""
    e = "".join(expr.split()).lower()
    m = _COMMUTATIVE.match(e)
    if m:
        a, op, b = m.groups()
        e = op.join(sorted([a, b]))
    return e


def expr_heldout(expr: str) -> bool:
    return in_heldout(normalize_expr(expr))


def _pick_families(templates: Iterable[str], tag: str) -> set[str]:
    """A quarter (at least one, never all) of a list's families, chosen by CRC-32 rank."""
    fams = sorted({family(t) for t in templates}, key=lambda f: (_crc(tag, f), f))
    if len(fams) < 2:
        return set()
    n = min(len(fams) - 1, max(1, math.ceil(len(fams) * FAMILY_SHARE)))
    return set(fams[:n])


def _template_lists() -> list[list[str]]:
    return [
        P.CALC_ASK,
        P.SET_ASK,
        P.GET_ASK,
        P.CLOCK_ASK,
        P.REPEAT_ASK,
        [ask for ask, _ in P.CALC_WORDED],
        P.SET_MORE,
        P.GET_MORE,
    ]


def _heldout_template_families() -> frozenset[str]:
    out: set[str] = set()
    for templates in _template_lists():
        out |= _pick_families(templates, "template")
    return frozenset(out)


HELDOUT_TEMPLATES = _heldout_template_families()
HELDOUT_PROMPTS = frozenset(f for asks, _ in SMALL_TALK.values() for f in _pick_families(asks, "talk"))
_KEY_WORDS = {family(k) for k in P.KEY_WORDS}
HELDOUT_KEY_WORDS = frozenset(_pick_families(P.KEY_WORDS, "key"))


def template_heldout(template: str) -> bool:
    return family(template) in HELDOUT_TEMPLATES


def prompt_heldout(prompt: str) -> bool:
    return family(prompt) in HELDOUT_PROMPTS


def key_heldout(key: str) -> bool:
    name = family(key)
    if name in _KEY_WORDS:
        return name in HELDOUT_KEY_WORDS
    return _crc("key", name) % KEY_MODULUS == 0


# ---- the v2 corpus (lmos.train.corpus_v2): one split per list, same rules -----------------------
_BASE_FAMILIES = frozenset(family(t) for templates in _template_lists() for t in templates)
_PLACED: dict[str, bool] = {}  # family -> held out, for every family a ListSplit has placed
LEXICON_SHARE = 0.25  # of the v2 lexicons (synthetic tool objects, kv key words): a quarter held out


class ListSplit:
    """One list of requests (or lexicon entries) split by family: a share held out, by CRC-32 rank.

    A family that is also in a base-corpus list keeps the base split's side, and
    one already placed by an earlier ListSplit keeps that side, so no family is
    ever on two sides (lists are built at import, in a fixed order).
    """

    def __init__(self, tag: str, items: Iterable[str], share: float = FAMILY_SHARE) -> None:
        self.tag = tag
        self.items = list(items)
        fams = {family(t) for t in self.items}
        fixed = {f: (f in HELDOUT_TEMPLATES if f in _BASE_FAMILIES else _PLACED[f])
                 for f in fams if f in _BASE_FAMILIES or f in _PLACED}
        free = sorted(fams - set(fixed), key=lambda f: (_crc(tag, f), f))
        want = min(len(fams) - 1, max(1, math.ceil(len(fams) * share))) if len(fams) >= 2 else 0
        n = max(0, min(len(free), want - sum(fixed.values())))
        self.held = frozenset([f for f, side in fixed.items() if side] + free[:n])
        _PLACED.update({f: f in self.held for f in fams})
        self.sides = {side: [t for t in self.items if self.heldout(t) == side] for side in (False, True)}
        if not self.sides[False] or not self.sides[True]:
            raise ValueError(f"split {tag!r}: both sides need an entry")

    def heldout(self, text: str) -> bool:
        return family(text) in self.held

    def side(self, heldout: bool) -> list[str]:
        return self.sides[heldout]


def name_heldout(name: str) -> bool:
    """A generated name (synthetic tool object, coined word): one in four by CRC-32 of its family."""
    return _crc("name", family(name)) % KEY_MODULUS == 0
