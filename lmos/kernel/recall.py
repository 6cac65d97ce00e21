"""Ranked retrieval over a process's swapped pages (BM25, from ``rank_bm25``).

Why BM25 and not embeddings: it needs no model, runs in microseconds over a
few thousand short pages, and rewards the rare words (names, codes, places)
that make a paged-out fact worth recalling.  The index is rebuilt only when the
set of swapped pages changes, which happens at eviction or page-in, both rare
by design (watermarks), so a query per turn (automatic recall) stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lmos.kernel.pages import Page

_WORD = re.compile(r"\w+")
_STOP = ("a an and are as at be been but by can could did do does for from had has have he her his how i if "
         "in into is it its me my no not of on or our she so than that the their them then there these they "
         "this to too us was we were what when where which who why will with would you your")
STOPWORDS = frozenset(_STOP.split(" "))


def words(text: str) -> list[str]:
    """Lower-cased content words: the terms BM25 sees."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def missing_terms(query: str, pages: Sequence[Page]) -> str:
    """The words of ``query`` that no resident page contains.

    Automatic recall runs every turn, and most turns talk about what is already
    in the window; ranking swapped pages on those words would page in
    near-duplicates of the resident context.  Only words the window lacks
    (a name, a code, a topic from long ago) say that something paged out is
    needed.
    """
    have: set[str] = set()
    for p in pages:
        if p.resident:
            have.update(words(p.text))
    return " ".join(w for w in words(query) if w not in have)


class RecallIndex:
    """BM25 over a set of pages; ``rank`` returns (page, score) best first."""

    def __init__(self) -> None:
        self._key: tuple[int, ...] = ()
        self._pages: list[Page] = []
        self._bm25: Any = None
        self._terms: dict[int, list[str]] = {}  # page id -> its words (pages never change text)

    def _build(self, pages: Sequence[Page]) -> None:
        key = tuple(p.id for p in pages)
        if key == self._key and self._bm25 is not None:
            return
        from rank_bm25 import BM25Okapi  # numpy: loaded on first recall, not at import lmos

        corpus = []
        for p in pages:
            t = self._terms.get(p.id)
            if t is None:
                t = self._terms[p.id] = words(p.text) or ["\0"]
            corpus.append(t)
        self._key, self._pages = key, list(pages)
        self._bm25 = BM25Okapi(corpus) if corpus else None

    def rank(self, pages: Sequence[Page], query: str, k: int, min_score: float = 0.0,
             margin: float = 0.0) -> list[tuple[Page, float]]:
        """The best ``k`` pages scoring above ``min_score``.

        With ``margin``, a hit must also beat the best page left out (the
        ``k+1``-th) by that factor: automatic recall wants a page that clearly
        answers, not one of many that mention a common topic.
        """
        q = words(query)
        if not pages or not q:
            return []
        self._build(pages)
        scores = self._bm25.get_scores(q)
        order = sorted(range(len(self._pages)), key=lambda i: (-float(scores[i]), -self._pages[i].id))
        out = [(self._pages[i], float(scores[i])) for i in order[:k]]
        floor = min_score
        if margin and len(order) > k:
            floor = max(floor, margin * float(scores[order[k]]))
        return [(p, s) for p, s in out if s > floor]
