"""The train / held-out split of the seed-app tasks' corpus (support, sentiment, recommend, team, giveup).

Mirrors :mod:`lmos.train.split`: every list a request is drawn from is split
by *family* (:func:`lmos.train.split.family`: case, contractions and
punctuation ignored, slots kept) with a CRC-32 rank, so the selection is a
pure function of the strings and the same on every machine.

* phrasing lists (question / headline structures / profile wordings /
  request templates): a quarter of the families (at least one, never all) is
  held out (:data:`lmos.train.split.FAMILY_SHARE`);
* lexicon entries and names (sentiment events, FAQ facts, catalogue
  words, tools, company names): one in eight (at least one, never all);
* a wording that is also a base-corpus template keeps the base split's side;
* generated values (company names, numbers in text): by CRC-32 of the value,
  one in :data:`lmos.train.split.HELDOUT_MODULUS`, as
  :func:`lmos.train.split.in_heldout` does.

Each draw records ``"tag:family"`` in :attr:`Draw.used`, which the
generators store in ``meta["families"]``, so a test can check on generated
data that the two splits share no entry.  Answer phrasings are not split:
they are what the model must say, not what it is asked.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from lmos.train import split
from lmos.train.data import Conversation
from lmos.train.split import FAMILY_SHARE, HELDOUT_MODULUS, family, in_heldout

T = TypeVar("T")
LEXICON_SHARE = 1 / HELDOUT_MODULUS
SPLITS = ("train", "heldout")


# families of the base corpus's request lists keep the base split's side (as split.ListSplit does),
# so a wording that is also a base template ("what's my {key}?") is never on two sides
_BASE_FAMILIES: frozenset[str] = getattr(split, "_BASE_FAMILIES", frozenset())


def held_families(tag: str, keys: Sequence[str], share: float) -> frozenset[str]:
    """The held-out families of one list: the first ``share`` of them by CRC-32 rank."""
    keyed = {family(k) for k in keys}
    base = keyed & _BASE_FAMILIES
    fams = sorted(keyed - base, key=lambda f: (zlib.crc32(f"{tag}:{f}".encode()), f))
    held = {f for f in base if f in split.HELDOUT_TEMPLATES}
    if len(fams) < 2:
        return frozenset(held)
    n = min(len(fams) - 1, max(1, math.ceil(len(fams) * share)))
    return frozenset(held | set(fams[:n]))


class Pool(Generic[T]):
    """A list split in two by family; :meth:`pick` draws from one side and records the family."""

    def __init__(
        self,
        tag: str,
        items: Sequence[T],
        key: Callable[[T], str] = str,
        share: float = FAMILY_SHARE,
    ) -> None:
        self.tag, self.key = tag, key
        held = held_families(tag, [key(i) for i in items], share)
        self.sides: dict[bool, list[T]] = {
            side: [i for i in items if (family(key(i)) in held) == side] for side in (False, True)
        }
        if not self.sides[False]:
            raise ValueError(f"pool {tag!r} has nothing to train on")

    def label(self, item: T) -> str:
        return f"{self.tag}:{family(self.key(item))}"

    def side(self, heldout: bool) -> list[T]:
        # a one-family list holds nothing out: both splits then share it (never happens for our lists)
        return self.sides[heldout] or self.sides[False]

    def pick(self, d: Draw) -> T:
        item = d.rng.choice(self.side(d.heldout))
        d.used.append(self.label(item))
        return item

    def sample(self, d: Draw, k: int) -> list[T]:
        side = self.side(d.heldout)
        items = d.rng.sample(side, min(k, len(side)))
        d.used.extend(self.label(i) for i in items)
        return items


def lexicon(tag: str, items: Sequence[T], key: Callable[[T], str] = str) -> Pool[T]:
    """A pool of lexicon entries or names: one in eight held out."""
    return Pool(tag, items, key, LEXICON_SHARE)


class Draw:
    """One conversation's random stream, its split, and the families it used."""

    def __init__(self, rng: random.Random, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (train or heldout)")
        self.rng = rng
        self.heldout = split == "heldout"
        self.used: list[str] = []

    def value(self, draw: Callable[[], str]) -> str:
        """Draw until the value lands in this split (one in eight values is held out)."""
        for _ in range(1000):
            v = draw()
            if in_heldout(v) == self.heldout:
                return v
        raise RuntimeError("no value of this split after 1000 draws")

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


def conversation(
    d: Draw, kind: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **meta: Any
) -> Conversation:
    """A :class:`Conversation` with the split's bookkeeping in ``meta`` and its tool declarations."""
    info: dict[str, Any] = {"kind": kind, "families": sorted(set(d.used)), **meta}
    return Conversation(messages=messages, meta=info, tools=list(tools) if tools else None)


SYLLABLES_ON = ["b", "br", "c", "ch", "cl", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kr", "l", "m",
                "n", "p", "pl", "pr", "qu", "r", "s", "sh", "sk", "st", "t", "tr", "v", "w", "z"]
SYLLABLES_V = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "io", "ou"]
SYLLABLES_END = ["", "", "", "n", "r", "x", "l", "s", "m", "nt", "rk", "st", "ck"]


def coined(rng: random.Random, parts: tuple[int, int] = (2, 3)) -> str:
    """An invented capitalised name (brands, companies, authors): open vocabulary to copy."""
    n = rng.randint(*parts)
    word = "".join(rng.choice(SYLLABLES_ON) + rng.choice(SYLLABLES_V) for _ in range(n))
    return (word + rng.choice(SYLLABLES_END)).capitalize()
