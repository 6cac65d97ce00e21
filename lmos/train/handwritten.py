"""The hand-written evaluation set: loading, checking and scoring (never training).

``benchmarks/data/handwritten_eval.jsonl`` holds requests written by hand in
everyday wordings, independently of the corpus code: nothing in
:mod:`lmos.train` generates it, trains on it or derives templates from it, and
the benchmark refuses to run when the file's SHA-256 differs from the one it
records, so the set cannot drift towards what the model already does.

One JSON object per line.  An *item* has ``task`` (one of :data:`TASKS`),
``id``, ``ask`` (the user's request), ``tool`` and ``args`` (the expected call,
``null`` for none) and ``answer`` (the fact a right answer contains):

* ``calc``: the call is right when calc's result equals ``answer`` (any
  equivalent expression counts: "15% of 200" may be ``200 * 0.15``);
* ``kv_remember``: ``kv_set`` with the stated value and a compatible key (the
  same name up to case and punctuation, or one containing the other, or one
  shared word beyond "my"/"the");
* ``kv_recall``: ``stored`` gives the earlier turn that stored the value (it is
  replayed as history and the store holds it); the call is right when
  ``kv_get`` returns the value;
* ``clock``: ``answer`` is ``<clock date|time|datetime|year>``: the answer must
  contain that part of what the clock returned;
* ``smalltalk``: no call, a non-empty reply;
* ``support``: ``answer`` is the FAQ passage's key sentence the reply must
  contain (case and spacing ignored), or ``<hand-off>``: the reply says it
  will pass the question to a human;
* ``sentiment``: the label (positive, negative, neutral);
* ``recommend``: the title of the item retrieval ranks first; the reply must
  name it and one of its ``attributes`` (from the catalogue resource).

*Resources* (``resource``: ``faq`` or ``catalogue``) are the files the seed apps
read, written into the kernel before the run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from lmos.errors import Errno, SyscallError

TASKS = ("calc", "kv_remember", "kv_recall", "clock", "smalltalk", "support", "sentiment", "recommend")
RESOURCES = ("faq", "catalogue")
MIN_PER_TASK = 30
HANDOFF = re.compile(r"\bhuman\b", re.I)
_STOP = {"my", "the", "a", "an", "of", "s", "is", "number", "code", "name"}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path, expected_sha256: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(items, resources by name); refuses a changed file, unknown tasks and thin tasks."""
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise SyscallError(
            Errno.EINVAL,
            f"{path}: SHA-256 {sha256_of(path)} is not the recorded {expected_sha256}; the hand-written "
            "set is frozen (record a new hash only for a deliberate, reviewed change)",
        )
    items: list[dict[str, Any]] = []
    resources: dict[str, Any] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if "resource" in rec:
            if rec["resource"] not in RESOURCES:
                raise SyscallError(Errno.EINVAL, f"{path}: line {n}: unknown resource {rec['resource']!r}")
            resources[rec["resource"]] = rec
            continue
        if rec.get("task") not in TASKS:
            known = ", ".join(TASKS)
            why = f"unknown task {rec.get('task')!r} (known: {known})"
            raise SyscallError(Errno.EINVAL, f"{path}: line {n}: {why}")
        items.append(rec)
    thin = [t for t in TASKS if sum(i["task"] == t for i in items) < MIN_PER_TASK]
    if thin:
        raise SyscallError(Errno.EINVAL, f"{path}: fewer than {MIN_PER_TASK} items for {', '.join(thin)}")
    return items, resources


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9:.\-]+", " ", text.lower()).split()).strip(". ")


def same_value(got: str, want: str) -> bool:
    """A stored value is the expected one up to case, punctuation and a leading article."""
    strip = lambda s: re.sub(r"^(a|an|the) ", "", _norm(s))  # noqa: E731
    return bool(strip(want)) and strip(got) == strip(want)


def contains(text: str, fact: str) -> bool:
    """``fact`` occurs in ``text`` up to case, punctuation and spacing (numbers keep their digits)."""
    t, f = f" {_norm(text)} ", _norm(fact)
    if not f:
        return False
    return re.search(rf"(?<![0-9a-z.]){re.escape(f)}(?![0-9a-z])", t) is not None


def keys_compatible(got: str, want: str) -> bool:
    g, w = _norm(got).replace("_", " "), _norm(want)
    if not g:
        return False
    if g == w or g in w or w in g:
        return True
    words = lambda s: {x for x in re.split(r"[^a-z0-9]+", s) if x and x not in _STOP}  # noqa: E731
    return bool(words(g) & words(w))


def clock_part(result: str, part: str) -> list[str]:
    """The pieces of a clock result (``YYYY-MM-DD HH:MM:SS UTC``) an answer about ``part`` must hold."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d)", result)
    if not m:
        return [result]
    date, hm = f"{m[1]}-{m[2]}-{m[3]}", f"{m[4]}:{m[5]}"
    return {"date": [date], "time": [hm], "datetime": [date, hm], "year": [m[1]]}[part]


def macro_f1(pairs: list[tuple[str, str]], labels: tuple[str, ...]) -> float:
    """Macro-F1 over (expected, predicted) pairs."""
    scores = []
    for c in labels:
        tp = sum(e == c and p == c for e, p in pairs)
        fp = sum(e != c and p == c for e, p in pairs)
        fn = sum(e == c and p != c for e, p in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return round(sum(scores) / len(scores), 4)
