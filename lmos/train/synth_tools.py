"""Synthetic declared tools: random names, descriptions and parameters, and requests that use them.

The built-in model must call a tool it never saw in training when a caller
declares it (``tools=[...]``, :func:`lmos.chatformat.tool_block`).  It can only
learn that from many tools it cannot memorise: every tool here is drawn fresh
from an object ("order status"), a verb ("check"), parameter kinds and a
naming style (``check_order_status``, ``checkOrderStatus``,
``order_status.check``), with a description from one of several templates.
A request mentions the object's words and the argument values; the call
copies the name from the declaration and the values from the request.

Split (:mod:`lmos.train.split`): objects, description templates and request
templates are split by family, coined words and values by CRC-32, so a
held-out tool's name, description and request wording never occur in training.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from lmos.train import synth_lexicon as L
from lmos.train.phrasings import NAMES, WORDS, _lines
from lmos.train.split import ListSplit, in_heldout, name_heldout

DESCRIBE = ListSplit("describe", _lines("""
{Verb} the {obj} for a given {p}.
{Verb} the {obj}.
Returns the {obj} of a {p}.
{Verb} and return the {obj} by {p}.
Look up the {obj} for a {p}.
Tool to {verb} the {obj}.
Gives the {obj} for the requested {p}.
{Verb} {obj} ({p} required).
Use this to {verb} the {obj} of a {p}.
{obj_cap} service: {verb} it by {p}.
{Verb} the {obj} given a {p}.
Fetch {obj} data for one {p}.
"""))
ASK_QUERY = ListSplit("ask_query", _lines("""
{verb} the {obj} {args}
can you {verb} the {obj} {args}?
please {verb} the {obj} {args}
what is the {obj} {args}?
what's the {obj} {args}
I need the {obj} {args}
tell me the {obj} {args}
{obj} {args}?
could you {verb} the {obj} {args} for me?
show me the {obj} {args}
I'd like to know the {obj} {args}
get me the {obj} {args}
use {name} to {verb} the {obj} {args}
run {name} {args}
do you know the {obj} {args}?
{verb} {obj} {args}
"""))
ASK_ACTION = ListSplit("ask_action", _lines("""
{verb} a {obj} {args}
please {verb} a {obj} {args}
can you {verb} the {obj} {args}?
{verb} the {obj} {args}
I want to {verb} a {obj} {args}
could you {verb} a {obj} {args} for me?
go ahead and {verb} the {obj} {args}
use {name} {args}
I need you to {verb} a {obj} {args}
{verb} {obj} {args} please
"""))
JOIN_PARALLEL = ListSplit("join", _lines("""
{x} and {y}
{x}, and also {y}
{x}. Also {y}
both: {x} and {y}
{x}; {y}
"""))
ANSWER_QUERY = _lines("""
The {obj} {args} is {r}.
{r}
It's {r}.
Here it is: {r}.
The {obj} is {r}.
{name} says: {r}.
Result: {r}.
""")
ANSWER_ACTION = _lines("""
Done: {r}.
Done. {name} returned {r}.
OK, {r}.
It's done ({r}).
""")
ANSWER_ERROR = _lines("""
The {name} tool failed: {msg}.
Sorry, {name} returned an error: {msg}.
I couldn't do that: {msg}.
""")
ERRORS = _lines("""
not found
service unavailable
invalid {p}
timeout
permission denied
rate limit exceeded
""")
_OBJ = ListSplit("objects", [o for o, *_ in L.OBJECTS], share=0.25)
_HEADS = ListSplit("heads", L.HEADS, share=0.25)


@dataclass
class Param:
    name: str
    kind: str
    type: str  # string | integer | number | enum
    enum: list[str] = field(default_factory=list)

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.enum)} if self.type == "enum" else {"type": self.type}


@dataclass
class SynthTool:
    name: str
    description: str
    obj: str
    verb: str
    mode: str  # "q" query or "a" action
    params: list[Param]
    required: list[str]
    families: list[str] = field(default_factory=list)

    def declaration(self) -> dict[str, Any]:
        props = {p.name: p.schema() for p in self.params}
        return {"name": self.name, "description": self.description,
                "parameters": {"type": "object", "properties": props, "required": list(self.required)}}


def _syllables(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(n))


def _style(rng: random.Random, verb: str, obj: str) -> str:
    v, o = verb.replace(" ", "_"), obj.replace(" ", "_").replace("-", "_")
    style = rng.choices(["snake", "camel", "dotted", "object", "kebab"], [60, 15, 10, 8, 7])[0]
    if style == "snake":
        return f"{v}_{o}"
    if style == "camel":
        parts = f"{v}_{o}".split("_")
        return parts[0] + "".join(p.capitalize() for p in parts[1:])
    if style == "dotted":
        return f"{o}.{v}"
    if style == "kebab":
        return f"{v}-{o}".replace("_", "-")
    return o


def _object(rng: random.Random, heldout: bool) -> tuple[str, list[str], list[str], str, str]:
    """(object, verbs, param kinds, mode, family label) of this split."""
    roll = rng.random()
    if roll < 0.6:
        obj = rng.choice(_OBJ.side(heldout))
        _, verbs, kinds, mode = next(o for o in L.OBJECTS if o[0] == obj)
        return obj, verbs, kinds, mode, f"object:{obj}"
    kinds = rng.sample(sorted(L.PARAMS), rng.choice([1, 1, 2, 2, 3]))
    if roll < 0.8:
        head = rng.choice(_HEADS.side(heldout))
        return f"{rng.choice(L.MODIFIERS)} {head}", ["get", "check", "compute"], kinds, "q", f"head:{head}"
    while True:  # a coined object: a name no list has
        word = _syllables(rng, rng.randint(2, 3))
        if name_heldout(word) == heldout:
            break
    verbs = [rng.choice(["get", "check", "fetch", "look up"]),
             rng.choice(["update", "reset", "start", "send"])]
    return f"{word} {rng.choice(['score', 'level', 'status', 'count', 'data'])}", verbs, kinds, \
        rng.choice("qa"), f"coined:{word}"


def draw_tool(rng: random.Random, heldout: bool, avoid: set[str] | None = None) -> SynthTool:
    """A fresh synthetic tool of this split (its name not in ``avoid``)."""
    while True:
        obj, verbs, kinds, mode, fam = _object(rng, heldout)
        verb = rng.choice(verbs)
        name = _style(rng, verb, obj)
        if not avoid or name not in avoid:
            break
    params: list[Param] = []
    for kind in kinds:
        names, typ, _, _ = L.PARAMS[kind]
        pname = rng.choice(names)
        if any(p.name == pname for p in params):
            continue
        enum = rng.choice(L.ENUMS[kind]) if typ == "enum" else []
        params.append(Param(pname, kind, typ, enum))
    n_req = 1 if len(params) == 1 else rng.choice([1, 1, len(params)])
    template = rng.choice(DESCRIBE.side(heldout))
    first = params[0].name.replace("_", " ")
    description = template.format(Verb=verb.capitalize(), verb=verb, obj=obj, obj_cap=obj.capitalize(),
                                  p=first)
    return SynthTool(name, description, obj, verb, mode, params, [p.name for p in params[:n_req]],
                     [fam, f"describe:{template}"])


def _raw_value(rng: random.Random, source: str, param: Param) -> Any:
    if param.type == "enum":
        return rng.choice(param.enum)
    if source == "city":
        return rng.choice(L.CITIES) if rng.random() < 0.7 else _syllables(rng, 2).capitalize()
    if source == "place":
        return rng.choice(L.PLACES)
    if source == "date":
        return rng.choice([f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", "tomorrow", "today",
                           rng.choice(["Monday", "Friday", "Sunday"]), f"March {rng.randint(1, 28)}"])
    if source == "symbol":
        return "".join(rng.choice("ABCDEFGHIKLMNOPRSTUVXZ") for _ in range(rng.randint(2, 4)))
    if source == "currency":
        return rng.choice(L.CURRENCIES)
    if source == "code":
        return rng.choice("ABCDKQXZ") + str(rng.randint(100, 99999))
    if source == "word":
        return rng.choice(WORDS) if rng.random() < 0.6 else _syllables(rng, 2)
    if source == "language":
        return rng.choice(L.LANGUAGES)
    if source == "text":
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
    if source == "dish":
        return rng.choice(L.DISHES)
    if source == "title":
        return " ".join(w.capitalize() for w in rng.sample(WORDS, rng.randint(1, 3)))
    if source == "team":
        return rng.choice(L.TEAMS)
    if source == "person":
        return rng.choice(NAMES) if rng.random() < 0.7 else _syllables(rng, 2).capitalize()
    if source == "host":
        return f"{rng.choice(['web', 'db', 'api', 'cache'])}{rng.randint(1, 20)}"
    if source == "path":
        return f"{rng.choice(WORDS)}.{rng.choice(['txt', 'md', 'csv', 'log'])}"
    if source == "product":
        return f"{rng.choice(WORDS)} {rng.choice(['lamp', 'chair', 'mug', 'phone', 'bag', 'shoes'])}"
    if source == "email":
        return f"{rng.choice(NAMES).lower().replace(' ', '').replace('.', '')}@example.com"
    if source == "phone":
        return f"+1 555 {rng.randint(1000, 9999)}"
    if source == "clock":
        return f"{rng.randint(1, 12)}:{rng.choice(['00', '15', '30', '45'])} {rng.choice(['am', 'pm'])}"
    if source == "room":
        return rng.choice(L.ROOMS)
    if source == "url":
        return f"https://{rng.choice(WORDS)}.example.com/{rng.choice(WORDS)}"
    if source == "small":
        return rng.randint(1, 20) if param.type == "integer" else rng.choice([3, 4.5, 5, 7.25, 12])
    if source == "height":
        return round(rng.uniform(1.4, 2.1), 2)
    return rng.randint(1, 500) if rng.random() < 0.7 else round(rng.uniform(1, 500), 2)  # amount


def value(rng: random.Random, param: Param, heldout: bool) -> Any:
    """An argument value of this split (strings and numbers alike split by CRC-32 of their text)."""
    source = L.PARAMS[param.kind][3]
    for _ in range(200):
        v = _raw_value(rng, source, param)
        if param.type == "enum" or in_heldout(str(v)) == heldout:
            return v
    return v


def mention(rng: random.Random, param: Param, v: Any) -> str:
    """How a user mentions one argument: the kind's own phrase, or a generic ``name value`` form."""
    phrases = L.PARAMS[param.kind][2]
    if rng.random() < 0.25:
        return rng.choice(L.GENERIC_PHRASES).format(p=param.name.replace("_", " "), v=v)
    return rng.choice(phrases).format(v=v)


def request(
    rng: random.Random, tool: SynthTool, heldout: bool, used: list[str]
) -> tuple[str, dict[str, Any]]:
    """(what the user says, the call's arguments): all required arguments and some optional ones."""
    args: dict[str, Any] = {}
    for p in tool.params:
        if p.name in tool.required or rng.random() < 0.35:
            args[p.name] = value(rng, p, heldout)
    by_name = {p.name: p for p in tool.params}
    phrase = " ".join(mention(rng, by_name[k], v) for k, v in args.items())
    asks = (ASK_QUERY if tool.mode == "q" else ASK_ACTION).side(heldout)
    template = rng.choice(asks)
    used.append(template)
    ask = template.format(verb=tool.verb, obj=tool.obj, args=phrase, name=tool.name)
    return re.sub(r"\s+([?.,])", r"\1", " ".join(ask.split())), args


def result(rng: random.Random, tool: SynthTool, args: dict[str, Any]) -> str:
    """What the synthetic tool returns (never an empty string: the answer must restate it)."""
    if tool.mode == "a":
        return rng.choice(["ok, id ", "done, ref ", "confirmed: ", "created #"]) + str(rng.randint(100, 9999))
    kind = rng.choice(["number", "status", "phrase", "money"])
    if kind == "number":
        return str(rng.randint(0, 5000)) if rng.random() < 0.6 else f"{rng.uniform(0, 500):.2f}"
    if kind == "status":
        return rng.choice(L.STATUS)
    if kind == "money":
        return f"{rng.uniform(1, 900):.2f} {rng.choice(L.CURRENCIES)}"
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def answer(rng: random.Random, tool: SynthTool, args: dict[str, Any], r: str) -> str:
    if r.startswith("error: "):
        return rng.choice(ANSWER_ERROR).format(name=tool.name, msg=r[len("error: "):])
    if tool.mode == "a":
        return rng.choice(ANSWER_ACTION).format(name=tool.name, r=r)
    by_name = {p.name: p for p in tool.params}
    phrase = " ".join(mention(rng, by_name[k], v) for k, v in list(args.items())[:1])
    text = rng.choice(ANSWER_QUERY).format(obj=tool.obj, args=phrase, name=tool.name, r=r)
    return re.sub(r"\s+([?.,])", r"\1", " ".join(text.split()))


def error(rng: random.Random, tool: SynthTool) -> str:
    return "error: " + rng.choice(ERRORS).format(p=tool.params[0].name)
