"""The exact prompts of the seed apps' model tasks, shared by the apps and the training corpus.

Why one module: the built-in model is small (a 1,024-token window, a 1,024-token
vocabulary, a few million parameters), so it only does a task well when it sees
at run time exactly the wording it was trained on.  The apps (support,
sentiment-monitor, recommend, team) build their conversations with these
functions and the corpus generators (``lmos.train``) build their training
conversations with the same functions, so the two cannot drift apart.

The prompts are deliberately short: every token of instruction is a token of
context the passages and items cannot use, and a token the model must learn to
attend past.  Retrieved context (FAQ passages, catalogue items, subtask
results) goes into the system turn as numbered one-line entries ``[1] …``; the
user's own words are the user turn.

This module sits at the bottom of the import graph beside :mod:`lmos.chatformat`
(it imports only the standard library), so apps, the sandbox and the corpus code
may all use it.
"""

from __future__ import annotations

import re
from typing import Any

Message = dict[str, Any]  # same shape as lmos.chatformat.Message (sibling layers may not import each other)

SUPPORT_SYSTEM = "Answer from the FAQ passages. If none answers the question, hand it to a human."
SUPPORT_HANDOFF = "I can't find that in our FAQ, so I'm passing your question to a human colleague."
SENTIMENT_SYSTEM = "Label the headline: positive, negative or neutral."
SENTIMENT_LABELS = ("positive", "negative", "neutral")
RECOMMEND_SYSTEM = "Recommend the best item for the customer and say why."
TEAM_PLAN_SYSTEM = "Split the request into subtasks, one per line."
TEAM_COMBINE_SYSTEM = "Combine the results to answer the request. Use calc for arithmetic."
GIVE_UP = "Sorry, I couldn't get an answer: the {tool} tool kept failing."
GIVE_UP_AFTER = 3  # failed calls of the same tool in a row before the agent should stop trying

MAX_PASSAGES = 3
MAX_PASSAGE_CHARS = 300
MAX_ITEMS = 3
MAX_DESCRIPTION_CHARS = 120
MAX_SUBTASKS = 4
MAX_RESULT_CHARS = 120

_SPACE = re.compile(r"\s+")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\(?\d+[.):\]]|\[\d+\]|(?:sub)?task\s*\d*\s*[:.)-])\s*", re.I)
_PLAN_HEADER = re.compile(r"^(?:subtasks?|plan|steps?|tasks?)\s*:?\s*$", re.I)
_SENTIMENT_WORDS = {
    "positive": "positive", "pos": "positive", "bullish": "positive", "good": "positive",
    "negative": "negative", "neg": "negative", "bearish": "negative", "bad": "negative",
    "neutral": "neutral", "mixed": "neutral", "none": "neutral",
}
_END_MARKERS = ("<|end|>", "<|im_end|>", "</s>", "<|eot_id|>")


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (runs of whitespace become one space), cut to ``limit`` characters.

    Entries are numbered one per line, so a newline inside one would make the
    model see two entries; the cut keeps a prompt inside the small window.
    """
    text = _SPACE.sub(" ", str(text)).strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def numbered(entries: list[str]) -> str:
    """``[1] first\\n[2] second`` — how every list of retrieved context is shown."""
    return "\n".join(f"[{i}] {entry}" for i, entry in enumerate(entries, 1))


def support_messages(question: str, passages: list[str]) -> list[Message]:
    """The support task: FAQ passages (best first, at most 3) in the system turn, the question as user.

    The model answers by restating the passage that answers, or with
    :data:`SUPPORT_HANDOFF` when none does (also when no passage was found).
    """
    kept = [one_line(p, MAX_PASSAGE_CHARS) for p in passages[:MAX_PASSAGES] if str(p).strip()]
    system = SUPPORT_SYSTEM + ("\n" + numbered(kept) if kept else "\n(no passages)")
    return [{"role": "system", "content": system}, {"role": "user", "content": question.strip()}]


def is_handoff(text: str) -> bool:
    """Whether an answer is the support hand-off (the app then flags the question for a human)."""
    return "passing your question to a human" in text.lower()


def sentiment_messages(headline: str) -> list[Message]:
    """The sentiment task: one headline as the user turn; the whole answer is the label."""
    return [{"role": "system", "content": SENTIMENT_SYSTEM},
            {"role": "user", "content": one_line(headline, 300)}]


def parse_sentiment(text: str) -> str:
    """The label in a model's answer: the first label word (or a synonym), else ``neutral``.

    Forgiving because the answer may carry an end marker, punctuation or a
    capital letter; "neutral" is the safe reading of an answer with no label.
    """
    for marker in _END_MARKERS:
        text = text.replace(marker, " ")
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _SENTIMENT_WORDS:
            return _SENTIMENT_WORDS[word]
    return "neutral"


def item_line(item: dict[str, Any]) -> str:
    """One catalogue item as ``Title (tag, tag): description`` on one line."""
    title = one_line(str(item.get("title") or item.get("id") or "?"), 80)
    tags = item.get("tags") or []
    if isinstance(tags, str):
        tags = re.split(r"[,;]", tags)
    tag_text = ", ".join(one_line(str(t), 30) for t in tags if str(t).strip())
    desc = one_line(str(item.get("description") or ""), MAX_DESCRIPTION_CHARS)
    head = f"{title} ({tag_text})" if tag_text else title
    return f"{head}: {desc}" if desc else head


def recommend_messages(profile: str, items: list[dict[str, Any]]) -> list[Message]:
    """The recommend task: the ranked items (best first, at most 3) in the system turn, the profile as user.

    The model names the top item and justifies it with one of its own
    attributes (a tag or words of its description).
    """
    system = RECOMMEND_SYSTEM + "\n" + numbered([item_line(i) for i in items[:MAX_ITEMS]])
    return [{"role": "system", "content": system}, {"role": "user", "content": profile.strip()}]


def team_plan_messages(request: str) -> list[Message]:
    """The team planner's task: the answer is one subtask per line (see :func:`parse_plan`)."""
    return [{"role": "system", "content": TEAM_PLAN_SYSTEM}, {"role": "user", "content": request.strip()}]


def parse_plan(text: str, limit: int = MAX_SUBTASKS) -> list[str]:
    """The subtasks of a plan: one per non-empty line, bullets/numbering stripped, at most ``limit``.

    Forgiving: ``- x``, ``1. x``, ``[1] x``, ``Subtask 2: x`` and a header line
    like ``Subtasks:`` are all accepted; duplicates are dropped.
    """
    for marker in _END_MARKERS:
        text = text.replace(marker, "\n")
    out: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line.strip()).strip()
        if not line or _PLAN_HEADER.match(line) or line in out:
            continue
        out.append(line)
    return out[:limit]


def team_combine_messages(request: str, results: list[tuple[str, str]]) -> list[Message]:
    """The team combiner's task: the request, then each ``subtask: result``; it may call calc.

    The caller declares the calc tool when rendering (``tools=``); the final
    answer states the number.
    """
    lines = [one_line(f"{task}: {result}", 2 * MAX_RESULT_CHARS) for task, result in results]
    system = TEAM_COMBINE_SYSTEM + "\n" + numbered(lines)
    return [{"role": "system", "content": system}, {"role": "user", "content": request.strip()}]


def give_up_text(tool: str) -> str:
    """The short, honest answer after a tool failed :data:`GIVE_UP_AFTER` times in a row."""
    return GIVE_UP.format(tool=tool)


def admits_failure(text: str) -> bool:
    """Whether an answer says it could not get a result (how giving up is scored)."""
    low = text.lower()
    return any(p in low for p in ("couldn't", "could not", "can't", "cannot", "unable", "failed",
                                  "failing", "not able", "sorry"))
