"""The support task's corpus: answer a customer from retrieved FAQ passages, or hand off.

Each conversation is exactly what the support app sends
(:func:`lmos.taskprompts.support_messages`): one to three passages, best
first, and the customer's question.  When a passage answers, the reply
restates that passage's text (its key sentence and any extra sentences,
lightly framed, never a heading); when none does (about 30%: retrieval found
passages of other topics, often of the same area, like shipping costs for a
shipping-time question), the reply is :data:`lmos.taskprompts.SUPPORT_HANDOFF`.

Facts (:mod:`lmos.train.corpus_support_faq`) are filled per conversation
with invented company names, numbers, periods, plans and menus, so the
model learns to copy from the context rather than remember an FAQ.  Split:
one fact in eight is held out whole; a quarter of each fact's question
families; company names by value.  ``meta["key"]`` is the answering
passage's key sentence (``None`` when uncovered).
"""

from __future__ import annotations

import random

from lmos.taskprompts import MAX_PASSAGE_CHARS, SUPPORT_HANDOFF, support_messages
from lmos.train.corpus_apps_split import Draw, Pool, coined, conversation, lexicon
from lmos.train.corpus_support_faq import FACTS, Fact
from lmos.train.data import Conversation

UNCOVERED = 0.30
GENERIC_EXTRAS = [
    "If you need more help, email us at {email}.", "You can also call us on {phone}.",
    "Our team replies within {hours} hours.", "This applies to all {co} customers.",
    "See our terms and conditions for details.", "Business customers should contact their account manager.",
]
LONG_BODY = 220
HEADED = 0.5  # the support app asks for "one question and its answer per paragraph"
HEADINGS = ["{q} {a}", "{q} {a}", "{q} {a}", "Q: {q} A: {a}", "## {q} {a}", "**{q}** {a}", "{q} - {a}"]
FACT_POOL = lexicon("faq", FACTS, key=lambda f: f.name)
QUESTION_POOLS = {f.name: Pool(f"faq.{f.name}", f.questions) for f in FACTS}
MENUS = ["Settings", "Account", "My account", "Account settings", "Profile", "Menu", "Your account"]
DEVICES = [
    "speaker", "smart speaker", "fitness band", "router", "thermostat", "camera", "e-reader", "headphones",
    "smartwatch", "doorbell", "tablet", "earbuds", "scale", "air purifier", "robot vacuum", "hub",
]
PLANS = ["Basic", "Plus", "Premium", "Pro", "Starter", "Standard", "Unlimited", "Gold", "Family", "Max"]
CURRENCIES = ["euros", "US dollars", "pounds", "Swiss francs", "Canadian dollars"]
WEEKDAYS = ["Monday", "Tuesday", "Sunday", "Saturday"]
ANSWER_FRAMES = [
    "{p}", "{p}", "{p}", "Here's what our FAQ says: {p}", "Good question! {p}", "{p} I hope that helps.",
    "From our FAQ: {p}", "{p} Let me know if you need anything else.", "Sure. {p}", "Happy to help. {p}",
]


def _money(rng: random.Random, lo: int, hi: int) -> str:
    sign = rng.choice(["$", "$", "€", "£"])
    value = rng.randint(lo, hi)
    if rng.random() < 0.3:
        return f"{sign}{value}.{rng.choice(['99', '50', '95'])}"
    return f"{sign}{value}"


def _time(rng: random.Random, lo: int, hi: int, suffix: str) -> str:
    return f"{rng.randint(lo, hi)}{suffix}" if rng.random() < 0.6 else f"{rng.randint(lo, hi)}:00"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def slots(d: Draw) -> dict[str, str]:
    """One conversation's fillers: every passage and the question share them."""
    r = d.rng
    co = d.value(lambda: coined(r))
    days = r.choice([2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90])
    plan, plan2 = r.sample(PLANS, 2)
    return {
        "co": co,
        "menu": r.choice(MENUS),
        "days": str(days),
        "days2": str(days + r.choice([2, 3, 5, 7])),
        "hours": str(r.choice([2, 3, 4, 6, 12, 24, 48, 72])),
        "amount": _money(r, 20, 150),
        "amount2": _money(r, 2, 19),
        "plan": plan,
        "plan2": plan2,
        "email": f"{r.choice(['support', 'help', 'care'])}@{co.lower()}.{r.choice(['com', 'io', 'co.uk'])}",
        "phone": f"{r.randint(100, 999)} {r.randint(100, 999)} {r.randint(1000, 9999)}",
        "pct": str(r.choice([10, 15, 20, 25, 30, 40, 50])),
        "n": str(r.randint(2, 9)),
        "nth": _ordinal(r.randint(1, 28)),
        "months": str(r.choice([3, 6, 12, 18, 24, 36])),
        "weekday": r.choice(WEEKDAYS),
        "time": _time(r, 7, 10, "am"),
        "time2": _time(r, 4, 9, "pm"),
        "device": r.choice(DEVICES),
        "currency": r.choice(CURRENCIES),
        "points": str(r.choice([100, 200, 250, 500, 1000])),
    }


def passage(d: Draw, fact: Fact, fill: dict[str, str], question: str) -> tuple[str, str, str]:
    """(passage as it sits in the FAQ, the body an answer restates, its key sentence)."""
    r = d.rng
    key = r.choice(fact.keys).format(**fill)
    extras = [x.format(**fill) for x in r.sample(fact.extras, r.randint(0, min(2, len(fact.extras))))]
    if r.random() < 0.25:
        extras.append(r.choice(GENERIC_EXTRAS).format(**fill))
    body_parts = [key, *extras] if r.random() < 0.75 else [*extras, key]
    body = " ".join(body_parts)
    if len(body) > MAX_PASSAGE_CHARS:  # the app cuts passages there: never train on a cut one
        body = key
    text = body
    if r.random() < HEADED:  # FAQ files pair a question with its answer: the answer never repeats it
        heads = [q for q in QUESTION_POOLS[fact.name].side(d.heldout) if q != question]
        if heads:
            head = r.choice(heads).format(**fill)
            head = f"{head[0].upper()}{head[1:]}{'' if head.endswith('?') else '?'}"
            headed = r.choice(HEADINGS).format(q=head, a=body)
            text = headed if len(headed) <= MAX_PASSAGE_CHARS else body
    return text, body, key


def _distractors(d: Draw, fact: Fact, k: int, near: bool) -> list[Fact]:
    area = fact.name.split(".")[0]
    others = [f for f in FACT_POOL.side(d.heldout) if f.name != fact.name]
    same = [f for f in others if f.name.split(".")[0] == area]
    pool = same if near and len(same) >= k else others
    return d.rng.sample(pool, k)


def support(rng: random.Random, split: str) -> Conversation:
    """One support conversation: covered (restate the passage) or uncovered (hand off)."""
    d = Draw(rng, split)
    fill = slots(d)
    fact = FACT_POOL.pick(d)
    question = QUESTION_POOLS[fact.name].pick(d).format(**fill)
    if rng.random() < 0.25:
        question = question[0].upper() + question[1:]
    n = rng.choices([1, 2, 3], weights=[20, 50, 30])[0]
    covered = rng.random() >= UNCOVERED
    others = _distractors(d, fact, n - 1 if covered else n, near=rng.random() < 0.5)
    texts = [passage(d, f, fill, question)[0] for f in others]
    key: str | None = None
    if covered:
        text, body, key = passage(d, fact, fill, question)
        at = rng.choices(range(n), weights=[65, 25, 10][:n])[0]
        texts.insert(at, text)
        # a long passage is restated bare: the app allows the answer 160 tokens
        answer = body if len(body) > LONG_BODY else rng.choice(ANSWER_FRAMES).format(p=body)
    else:
        if rng.random() < 0.05:
            texts = []
        answer = SUPPORT_HANDOFF
    messages = support_messages(question, texts)
    messages.append({"role": "assistant", "content": answer})
    return conversation(d, "support", messages, fact=fact.name, key=key, covered=covered)
