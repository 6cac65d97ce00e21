"""The sentiment task's corpus: a financial headline in, ``positive``/``negative``/``neutral`` out.

Exactly what sentiment-monitor sends (:func:`lmos.taskprompts.sentiment_messages`);
the whole answer is the label word.  Headlines are composed from a lexicon
(:mod:`lmos.train.corpus_sentiment_lex`): company events (beats / misses,
guidance, upgrades, layoffs, bankruptcy, recalls, lawsuits, dividends,
buybacks, deals, meetings, appointments, filings), event noun phrases, share
moves, metric clauses whose label is *computed* (more revenue is good, more
debt is bad, a flat figure is neutral) and whole macro headlines, inside ~20
headline structures, with invented companies, tickers, people and numbers.
Labels are drawn uniformly, so the three classes are balanced.

Split: a quarter of the structures, one in eight entries of every lexicon list
(per label) and company names by value are held out, so held-out headlines
are built from structures and words the training side never uses.
"""

from __future__ import annotations

import random

from lmos.taskprompts import SENTIMENT_LABELS, sentiment_messages
from lmos.train import corpus_sentiment_frames as F
from lmos.train import corpus_sentiment_lex as L
from lmos.train.corpus_apps_split import Draw, Pool, coined, conversation, lexicon
from lmos.train.data import Conversation

MACRO_SHARE = 0.10  # headlines about markets and the economy rather than one company
FRAMED_SHARE = 0.15  # headlines that name the company later ("Analysts upgrade Acme")
LETTER = {label: letter for letter, label in L.LABELS.items()}
SMALL_WORDS = {"a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "and", "as", "after", "with"}
MOVE_NOUNS = {
    "p": ["shares higher", "shares soaring", "stock to a record", "shares up sharply"],
    "n": ["shares lower", "shares tumbling", "stock to a record low", "shares down sharply"],
}


def _by_label(tag: str, entries: list[tuple[str, str]]) -> dict[str, Pool[str]]:
    return {k: lexicon(f"{tag}.{k}", [t for tags, t in entries if k in tags]) for k in "pnz"}


PREDICATES = _by_label("sent.pred", L.PREDICATES)
EVENTS = _by_label("sent.event", L.EVENTS)
MOVES = _by_label("sent.move", F.MOVES)
MACRO = _by_label("sent.macro", F.MACRO)
FRAMED = _by_label("sent.framed", F.FRAMED)
CAUSES = _by_label("sent.cause", F.CAUSES)
METRICS = lexicon("sent.metric", F.METRICS, key=lambda m: m[0])
DIRECTIONS = lexicon("sent.dir", F.DIRECTIONS, key=lambda d: d[1])
STRUCTURES = Pool("sent.structure", F.STRUCTURES, key=lambda s: s[1])


def _number(r: random.Random, lo: int, hi: int) -> str:
    n = r.randint(lo, hi)
    return f"{n:,}"


def _amount(r: random.Random) -> str:
    cur = r.choice(["$", "$", "€", "£"])
    if r.random() < 0.5:
        return f"{cur}{r.randint(1, 9)}.{r.randint(1, 9)} billion"
    return f"{cur}{r.randint(2, 950)} {r.choice(['million', 'million', 'mln', 'bln'])}"


def _company(d: Draw) -> str:
    r = d.rng

    def name() -> str:
        base = coined(r) if r.random() < 0.5 else r.choice(F.NAME_PARTS) + r.choice(F.NAME_ENDS)
        return f"{base} {r.choice(F.COMPANY_SUFFIXES)}".strip()

    return d.value(name)


def _fill(d: Draw, co: str) -> dict[str, str]:
    r = d.rng
    quarter = r.randint(1, 4)
    ordinal = ["first", "second", "third", "fourth"][quarter - 1]
    pct = str(r.randint(1, 60)) if r.random() < 0.8 else f"{r.randint(1, 30)}.{r.randint(1, 9)}"
    return {
        "co": co,
        "ticker": "".join(ch for ch in co.upper() if ch.isalpha())[: r.randint(3, 4)],
        "other": _company(d),
        "person": f"{r.choice(F.PEOPLE_FIRST)} {coined(r)}",
        "product": coined(r, (1, 2)) + r.choice(["", "", " Pro", " XR", " 2"]),
        "newname": coined(r),
        "amount": _amount(r),
        "pct": pct,
        "small": str(r.randint(2, 9)) if r.random() < 0.7 else f"{r.randint(1, 9)}.{r.randint(1, 9)}",
        "n": _number(r, 120, 15000),
        "q": r.choice([f"Q{quarter}", f"{ordinal}-quarter", "full-year", "first-half"]),
        "qin": r.choice([f"Q{quarter}", f"the {ordinal} quarter", "the first half"]),
        "date": f"{r.choice(['March', 'May', 'June', 'July', 'October', 'November'])} {r.randint(1, 28)}",
        "year": str(r.randint(2008, 2026)),
        "bank": r.choice(F.BANKS),
        "city": r.choice(F.CITIES),
        "rating": r.choice(F.RATINGS),
        "index": r.choice(F.INDEXES),
    }


def _metric_clause(d: Draw, letter: str) -> tuple[str, str, str]:
    """(metric, direction verb agreeing with it, direction noun) whose reading is ``letter``."""
    r = d.rng
    want = {"p": 1, "n": -1, "z": 0}[letter]
    metrics = METRICS.side(d.heldout)
    dirs = DIRECTIONS.side(d.heldout)
    while True:
        metric, pol, num = r.choice(metrics)
        direction = r.choice(dirs)
        if pol * direction[0] == want:
            break
    d.used += [METRICS.label((metric, pol, num)), DIRECTIONS.label(direction)]
    verb = direction[1] if num == "s" else direction[2]
    return metric, verb, direction[3]


def _title_case(text: str) -> str:
    words = text.split(" ")
    return " ".join(
        w if (i and w.lower() in SMALL_WORDS) or not w[:1].islower() else w[:1].upper() + w[1:]
        for i, w in enumerate(words)
    )


def headline(d: Draw, label: str) -> str:
    """A headline whose investor reading is ``label``."""
    r = d.rng
    letter = LETTER[label]
    roll = r.random()
    if roll < MACRO_SHARE + FRAMED_SHARE:
        pool = MACRO if roll < MACRO_SHARE else FRAMED
        text = pool[letter].pick(d).format(**_fill(d, _company(d)))
        return _cased(r, text[0].upper() + text[1:])
    structure = r.choice([s for s in STRUCTURES.side(d.heldout) if letter in s[0]])
    d.used.append(STRUCTURES.label(structure))
    template = structure[1]
    fill = _fill(d, _company(d))
    if "{pred}" in template:
        fill["pred"] = PREDICATES[letter].pick(d).format(**fill)
    if "{np}" in template:
        fill["np"] = EVENTS[letter].pick(d)
    if "{move}" in template:
        fill["move"] = MOVES[letter].pick(d)
    if "{cause}" in template:
        fill["cause"] = CAUSES[letter].pick(d).format(**fill)
    if "{movenoun}" in template:
        fill["movenoun"] = r.choice(MOVE_NOUNS[letter])
    if "{metric}" in template:
        fill["metric"], fill["dir"], fill["dirnoun"] = _metric_clause(d, letter)
    text = template.format(**fill)
    return _cased(r, text[0].upper() + text[1:])


def _cased(r: random.Random, text: str) -> str:
    """Sentence case mostly; some Title Case and all-lower headlines, as feeds write them."""
    roll = r.random()
    if roll < 0.15:
        text = _title_case(text)
    elif roll < 0.2:
        text = text.lower()
    return text


def sentiment(rng: random.Random, split: str) -> Conversation:
    """One headline and its label (labels uniform, so the classes are balanced)."""
    d = Draw(rng, split)
    label = rng.choice(SENTIMENT_LABELS)
    text = headline(d, label)
    messages = sentiment_messages(text)
    messages.append({"role": "assistant", "content": label})
    return conversation(d, "sentiment", messages, label=label)
