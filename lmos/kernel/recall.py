"""Ranked retrieval over a process's swapped pages: BM25 on an index kept on disk.

Why BM25 and not embeddings: it needs no model, runs in microseconds over a
few thousand short pages, and rewards the rare words (names, codes, places)
that make a paged-out fact worth recalling.

Why on disk: a swapped page must cost RAM nothing, and an in-memory index of
everything ever paged out grows with the conversation.  Eviction writes each
page's content words and their counts (``mem_terms``) in the same transaction
that marks it swapped; a page-in deletes them.  A query reads only the postings
of its own words, so its cost follows the query, not the history.  The scores
are rank_bm25's ``BM25Okapi`` (k1 1.5, b 0.75, epsilon 0.25: the same formula,
operation for operation), so ranking did not change when the index left RAM
(``tests/test_paging_memory.py`` compares them).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
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


K1, B, EPSILON = 1.5, 0.75, 0.25  # rank_bm25's BM25Okapi defaults
NO_WORDS = " "  # the one term of a page without words (never a word itself): its length is 1, as in rank_bm25
Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]  # (sql, params) -> rows


def postings(text: str) -> tuple[list[tuple[str, int]], int]:
    """A page's terms with their counts, and its length in terms: what the index stores."""
    ws = words(text) or [NO_WORDS]
    return list(Counter(ws).items()), len(ws)


def rank(query: Query, pid: int, terms: list[str], k: int, min_score: float = 0.0,
         margin: float = 0.0) -> list[tuple[int, float]]:
    """The best ``k`` swapped pages of ``pid`` for ``terms`` scoring above ``min_score``: (page id, score).

    With ``margin``, a hit must also beat the best page left out (the
    ``k+1``-th) by that factor: automatic recall wants a page that clearly
    answers, not one of many that mention a common topic.  Ties go to the
    newer page.  Blocking (SQLite): run it off the event loop.
    """
    if not terms:
        return []
    n, total = query("SELECT COUNT(*), COALESCE(SUM(nwords), 0) FROM mem_pages WHERE pid=? AND "
                     "state='swapped'", (pid,))[0]
    if not n:
        return []
    avgdl = total / n
    uniq = list(dict.fromkeys(terms))
    post: dict[str, list[tuple[int, int, int]]] = {}
    for i in range(0, len(uniq), 500):
        chunk = uniq[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for term, page, tf, dl in query(
                "SELECT t.term, t.page, t.tf, p.nwords FROM mem_terms t JOIN mem_pages p ON p.pid = t.pid "
                f"AND p.page = t.page WHERE t.pid=? AND t.term IN ({marks})", (pid, *chunk)):
            post.setdefault(term, []).append((page, tf, dl))
    idf = {t: math.log(n - len(ps) + 0.5) - math.log(len(ps) + 0.5) for t, ps in post.items()}
    if any(v < 0 for v in idf.values()):  # a word in most pages: rank_bm25 floors it at a share of the mean
        dfs = query("SELECT COUNT(*) FROM mem_terms WHERE pid=? GROUP BY term", (pid,))
        mean = sum(math.log(n - df + 0.5) - math.log(df + 0.5) for (df,) in dfs) / len(dfs)
        idf = {t: EPSILON * mean if v < 0 else v for t, v in idf.items()}
    scores: dict[int, float] = {}
    for q in terms:  # in query order, repeats included, as BM25Okapi.get_scores adds them up
        w = idf.get(q) or 0
        for page, tf, dl in post.get(q, ()):
            scores[page] = scores.get(page, 0.0) + w * (tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl)))
    # pages without a hit score 0: only the newest few can reach the top k+1
    rest = query("SELECT page FROM mem_pages WHERE pid=? AND state='swapped' ORDER BY page DESC LIMIT ?",
                 (pid, k + 1 + len(scores)))
    for (page,) in rest:
        scores.setdefault(page, 0.0)
    order = sorted(scores.items(), key=lambda x: (-x[1], -x[0]))
    floor = min_score
    if margin and n > k:
        floor = max(floor, margin * order[k][1])
    return [(page, s) for page, s in order[:k] if s > floor]
