"""The recommend task's corpus: a customer profile and ranked catalogue items; recommend item [1].

Exactly what the recommend app sends (:func:`lmos.taskprompts.recommend_messages`):
up to three items (title, tags, description), best first as BM25 ranked
them, and the customer's words.  The answer names the top item and
justifies it with one of *its* attributes: a tag (usually the one the
customer asked for) or its description, copied.  Lower-ranked items are of
the same domain (sometimes another) and never carry the tags the profile
names, so the ranking the model sees is the one retrieval would give.

Items are generated per conversation (:mod:`lmos.train.corpus_recommend_cat`:
books, films, gadgets, recipes, courses, trips) with coined names, so the
model learns to copy the title and attribute from the context.  Split: a
quarter of the profile wordings, one in eight tags of every domain, titles
by value.  ``meta["top"]`` is item [1]'s title, ``meta["attributes"]`` its
tags and description.
"""

from __future__ import annotations

import random
import string
from typing import Any

from lmos.taskprompts import MAX_DESCRIPTION_CHARS, recommend_messages
from lmos.train.corpus_apps_split import Draw, Pool, coined, conversation, lexicon
from lmos.train.corpus_recommend_cat import ANSWERS, DOMAINS, PROFILES, Domain
from lmos.train.data import Conversation

PROFILE_POOL = Pool("rec.profile", PROFILES)
TAG_POOLS = {dom.name: lexicon(f"rec.tags.{dom.name}", dom.tags) for dom in DOMAINS}
_FMT = string.Formatter()
COMMON = {"minutes", "grams", "hours", "covering", "across", "about", "story", "with", "total", "learn",
          "covers", "follows", "enjoy", "weeks", "course", "ready", "serves", "trip", "days"}


def _slot(d: Draw, dom: Domain, name: str, fill: dict[str, str]) -> str:
    """A slot's value: one draw per word list and item, so a title and its description agree."""
    base = name[:-4] if name.endswith("_cap") else name
    key = base if base in dom.words or base == "Name" else base[0].upper() + base[1:]
    if key not in fill:
        fill[key] = coined(d.rng, (1, 2)) if key == "Name" else d.rng.choice(dom.words[key])
    value = fill[key] if key == base else fill[key].lower()
    return value[0].upper() + value[1:] if name.endswith("_cap") else value


def _render(d: Draw, dom: Domain, template: str, fill: dict[str, str]) -> str:
    names = [f for _, f, _, _ in _FMT.parse(template) if f]
    return template.format(**{n: _slot(d, dom, n, fill) for n in names})


def item(d: Draw, dom: Domain, avoid: set[str]) -> dict[str, Any]:
    """One catalogue item of ``dom`` whose tags avoid ``avoid``."""
    r = d.rng
    fill: dict[str, str] = {}

    def draw_title() -> str:
        fill.clear()
        return _render(d, dom, r.choice(dom.titles), fill)

    title = d.value(draw_title)
    tags = [t for t in TAG_POOLS[dom.name].side(d.heldout) if t not in avoid]
    chosen = r.sample(tags, min(len(tags), r.randint(1, 3)))
    d.used.extend(TAG_POOLS[dom.name].label(t) for t in chosen)
    for _ in range(20):
        desc = _render(d, dom, r.choice(dom.descriptions), dict(fill))
        if len(desc) <= MAX_DESCRIPTION_CHARS - 1:
            break
    else:
        desc = desc[: MAX_DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0]
    return {"title": title, "tags": chosen, "description": desc + "."}


def plural(noun: str) -> str:
    """'dish' -> 'dishes', 'story' -> 'stories'; phrases like 'something to watch' stay as they are."""
    if noun.startswith(("something", "way to")) or (noun.endswith("s") and not noun.endswith("ss")):
        return noun
    if noun.endswith(("sh", "ch", "ss", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _desc_words(desc: str) -> list[str]:
    words = [w.strip(".,:;") for w in desc.split()]
    return [w for w in words if len(w) > 4 and w.isalpha() and w.islower() and w not in COMMON]


def recommend(rng: random.Random, split: str) -> Conversation:
    """A profile, 1-3 ranked items, and a recommendation of item [1] with one of its attributes."""
    d = Draw(rng, split)
    dom = rng.choice(DOMAINS)
    top = item(d, dom, set())
    n = rng.choices([1, 2, 3], weights=[15, 35, 50])[0]
    others = []
    for _ in range(n - 1):
        other = dom if rng.random() < 0.8 else rng.choice(DOMAINS)
        others.append(item(d, other, set(top["tags"])))
    tags = list(top["tags"])
    spare = [t for t in TAG_POOLS[dom.name].side(d.heldout) if t not in tags]
    words = _desc_words(top["description"]) or [tags[0]]
    fill = {
        "t1": tags[0],
        "t2": tags[1] if len(tags) > 1 else rng.choice(words),
        "t3": rng.choice(spare or ["expensive", "long", "complicated"]),
        "w1": rng.choice(words),
        "w2": rng.choice(words),
        "noun": rng.choice(dom.nouns),
    }
    fill["nouns"] = plural(fill["noun"])
    profile = PROFILE_POOL.pick(d).format(**fill)
    if rng.random() < 0.3:
        profile = profile[0].upper() + profile[1:]
    answer_t = rng.choice(ANSWERS)
    answer = answer_t.format(title=top["title"], tag=tags[0], desc=top["description"])
    messages = recommend_messages(profile, [top, *others])
    messages.append({"role": "assistant", "content": answer})
    attributes = [*tags, top["description"]]
    return conversation(d, "recommend", messages, top=top["title"], attributes=attributes, domain=dom.name)
