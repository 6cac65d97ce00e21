"""BM25+ (Lv & Zhai; the variant rank_bm25's BM25Plus implements), in plain Python.

Deterministic, explainable and cheap for thousands of items; the same
formula and parameters as rank_bm25, so scores match it.
"""

import math
import re

WORD = re.compile(r"[a-z0-9]+")


def words(text):
    return WORD.findall(text.lower())


def scores(docs, query, k1=1.5, b=0.75, delta=1.0):
    """The BM25+ score of each document (a list of words) for the query words."""
    n = len(docs)
    freqs = []
    containing = {}
    total = 0
    for doc in docs:
        total += len(doc)
        f = {}
        for w in doc:
            f[w] = f.get(w, 0) + 1
        freqs.append(f)
        for w in f:
            containing[w] = containing.get(w, 0) + 1
    avgdl = total / n
    idf = {w: math.log((n + 1) / c) for w, c in containing.items()}
    out = [0.0] * n
    for q in query:
        weight = idf.get(q) or 0
        for i in range(n):
            tf = freqs[i].get(q) or 0
            norm = k1 * (1 - b + b * len(docs[i]) / avgdl) + tf
            out[i] = out[i] + weight * (delta + (tf * (k1 + 1)) / norm)
    return out
