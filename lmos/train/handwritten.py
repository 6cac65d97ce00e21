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

``benchmarks/data/handwritten_eval_v2.jsonl`` (also hand-written, frozen by its own
hash; load it with ``tasks=V2_TASKS``) adds the tasks the first set lacks.  Its
``tools`` resource holds tool declarations (``{"name", "description",
"parameters"}``, see :mod:`lmos.chattools`) of tools no corpus generator knows;
an item's ``declare`` lists the names of those the request declares.

* ``declared``: ``declare``, ``ask``, the expected call ``tool``/``args``
  (``null`` when the right reply is a plain answer), the ``result`` the
  benchmark's stand-in tool returns and the ``answer`` fact the final reply
  should hold.  The call is right when the name matches and every expected
  argument matches (:func:`args_match`: strings up to case, punctuation,
  spacing and a leading article or "my"; numbers numerically, also when
  written as a string); extra arguments must be declared ones.
* ``multiturn``: ``history`` is the earlier conversation (chat-format messages
  in the flat JSONL shape, tool turns included) replayed before ``ask``; with a
  ``calc`` ``tool`` the call is right when its result equals ``answer`` (as for
  ``calc``); with ``tool`` ``null`` the reply must contain ``answer`` (a string
  or a list of accepted alternatives, :func:`mentions`).
* ``team``: ``ask`` is a multi-part request for the team app; right when its
  final text contains the number ``answer``.
* ``giveup``: every call of ``tool`` (a built-in tool, or a declared one
  listed in ``declare``) fails with ``error``; right when the agent stops with
  an answer that admits failure, is short and claims no result
  (:func:`gave_up`).

``benchmarks/data/sentiment_headlines.jsonl`` holds 150+ hand-written financial
headlines as ``sentiment`` items (invented company names), scored by macro-F1;
load it with ``tasks=("sentiment",), min_per_task=150``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from lmos.errors import Errno, SyscallError

TASKS = ("calc", "kv_remember", "kv_recall", "clock", "smalltalk", "support", "sentiment", "recommend")
V2_TASKS = ("declared", "multiturn", "team", "giveup")
SENTIMENT_LABELS = ("positive", "negative", "neutral")
RESOURCES = ("faq", "catalogue", "tools")
MIN_PER_TASK = 30
MIN_HEADLINES = 150
GIVE_UP_MAX_CHARS = 240
_ADMITS = re.compile(r"\b(sorry|couldn'?t|could not|can'?t|cannot|unable|failed|failing|fails|not able|"
                     r"isn'?t (working|available|responding)|unavailable|down|error|went wrong|try again)\b",
                     re.I)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
HANDOFF = re.compile(r"\bhuman\b", re.I)
_STOP = {"my", "the", "a", "an", "of", "s", "is", "number", "code", "name"}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path, expected_sha256: str | None = None, tasks: tuple[str, ...] = TASKS,
         min_per_task: int = MIN_PER_TASK) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(items, resources by name); refuses a changed file, unknown tasks, bad items and thin tasks.

    ``tasks`` are the tasks this file holds (each at least ``min_per_task``
    times); an item of any other task, or one missing what its task needs, is
    refused with its line number.
    """
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise SyscallError(
            Errno.EINVAL,
            f"{path}: SHA-256 {sha256_of(path)} is not the recorded {expected_sha256}; the hand-written "
            "set is frozen (record a new hash only for a deliberate, reviewed change)",
        )
    items: list[dict[str, Any]] = []
    resources: dict[str, Any] = {}
    lines: dict[int, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SyscallError(Errno.EINVAL, f"{path}: line {n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise SyscallError(Errno.EINVAL, f"{path}: line {n}: not a JSON object")
        if "resource" in rec:
            if rec["resource"] not in RESOURCES:
                raise SyscallError(Errno.EINVAL, f"{path}: line {n}: unknown resource {rec['resource']!r}")
            resources[rec["resource"]] = rec
            continue
        if rec.get("task") not in tasks:
            known = ", ".join(tasks)
            why = f"unknown task {rec.get('task')!r} (known: {known})"
            raise SyscallError(Errno.EINVAL, f"{path}: line {n}: {why}")
        items.append(rec)
        lines[id(rec)] = n
    thin = [t for t in tasks if sum(i["task"] == t for i in items) < min_per_task]
    if thin:
        raise SyscallError(Errno.EINVAL, f"{path}: fewer than {min_per_task} items for {', '.join(thin)}")
    seen: set[str] = set()
    for item in items:
        problem = _item_problem(item, resources, seen)
        if problem:
            raise SyscallError(Errno.EINVAL, f"{path}: line {lines[id(item)]}: {problem}")
    return items, resources


def _item_problem(item: dict[str, Any], resources: dict[str, Any], seen: set[str]) -> str | None:
    """What is wrong with an item of the v2 tasks or the headlines (None when nothing is)."""
    ident = item.get("id")
    if not isinstance(ident, str) or not ident or ident in seen:
        return f"missing or repeated id {ident!r}"
    seen.add(ident)
    if not isinstance(item.get("ask"), str) or not item["ask"].strip():
        return f"{ident}: 'ask' must be a non-empty string"
    task = item["task"]
    if task == "sentiment" and item.get("answer") not in SENTIMENT_LABELS:
        return f"{ident}: a sentiment answer is one of {', '.join(SENTIMENT_LABELS)}"
    if task in ("declared", "giveup") and item.get("declare") is not None:
        try:
            declared_tools(item, resources)
        except KeyError as exc:
            return f"{ident}: {exc.args[0]}"
    if task == "declared" and item.get("tool") is not None:
        names = [t["name"] for t in declared_tools(item, resources)]
        if item["tool"] not in names or not isinstance(item.get("args"), dict):
            return f"{ident}: the expected call must name a declared tool and give args"
    if task == "multiturn" and not (isinstance(item.get("history"), list) and item["history"]):
        return f"{ident}: a multiturn item needs a non-empty 'history'"
    if task == "team" and not isinstance(item.get("answer"), str):
        return f"{ident}: a team item needs the final number as 'answer'"
    if task == "giveup" and not (isinstance(item.get("tool"), str) and isinstance(item.get("error"), str)):
        return f"{ident}: a giveup item needs the failing 'tool' and its 'error'"
    return None


def declared_tools(item: dict[str, Any], resources: dict[str, Any]) -> list[dict[str, Any]]:
    """The declarations an item's ``declare`` names, from the ``tools`` resource, in its order."""
    by_name = {t["name"]: t for t in (resources.get("tools") or {}).get("tools", [])}
    missing = [name for name in item.get("declare") or [] if name not in by_name]
    if missing:
        raise KeyError(f"declares unknown tools {missing} (not in the tools resource)")
    return [by_name[name] for name in item.get("declare") or []]


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


def mentions(text: str, answer: str | list[str]) -> bool:
    """``text`` :func:`contains` the answer, or one of the accepted alternatives when it is a list."""
    return any(contains(text, a) for a in ([answer] if isinstance(answer, str) else answer))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip().replace(",", ""))
    except ValueError:
        return None


def _same_text(got: Any, want: str) -> bool:
    g, w = str(got), want
    mine = lambda s: re.sub(r"^my ", "", _norm(s))  # noqa: E731
    compact = lambda s: re.sub(r"[^a-z0-9]+", "", s.lower())  # noqa: E731
    if same_value(g, w) or (bool(mine(w)) and mine(g) == mine(w)):
        return True
    return bool(compact(w)) and compact(g) == compact(w)


def args_match(got: dict[str, Any], want: dict[str, Any], declared: dict[str, Any] | None = None) -> bool:
    """Whether a call's arguments are the expected ones (see ``declared`` in the module docstring).

    ``declared`` is the tool's ``parameters`` schema: arguments beyond ``want``
    are allowed only when it declares them.
    """
    for key, value in want.items():
        if key not in got:
            return False
        if isinstance(value, int | float) and not isinstance(value, bool):
            num = _number(got[key])
            if num is None or abs(num - value) > 1e-9 * max(1.0, abs(value)):
                return False
        elif not _same_text(got[key], str(value)):
            return False
    props = (declared or {}).get("properties") or {}
    return all(key in want or key in props for key in got)


def gave_up(text: str, ask: str, error: str = "") -> bool:
    """A short reply that admits failure and names no number absent from the request (or the error).

    A number the user did not give is a claimed result ("Sorry, the tool is down,
    but it's 84" is not giving up honestly).
    """
    if not text.strip() or len(text) > GIVE_UP_MAX_CHARS or not _ADMITS.search(text):
        return False
    allowed = {m.replace(",", "") for m in _NUMBER.findall(ask + " " + error)}
    return all(m.replace(",", "") in allowed for m in _NUMBER.findall(text))


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
