"""The team task's corpus: plan a multi-part arithmetic request, then combine the workers' results.

Two kinds of conversation, as the team app has them:

* **plan** (:func:`lmos.taskprompts.team_plan_messages`): the request in, one
  subtask per line out, each ``what is EXPR?`` with the part's arithmetic in
  calc syntax (``15% of 200`` becomes ``15 / 100 * 200``, ``the square root of
  144`` ``sqrt(144)``), which a calc worker answers reliably;
* **combine** (:func:`lmos.taskprompts.team_combine_messages`, calc
  declared): the request and each subtask's worker answer in; when the
  request combines the results ("then add them", "what's the total"), the
  model calls calc on the numbers and states the result; when it only asks
  for the parts, it states them; a failed worker is reported, not guessed.

Every number comes from :mod:`lmos.userland.tools.calc`, so ``meta["final"]``
is what the real tool returns.  Split: a quarter of each phrasing list (part
wordings per operation, request openers, combining phrases, word problems),
numbers by value of the expression.
"""

from __future__ import annotations

import random
from typing import Any

from lmos.chatformat import call_message
from lmos.taskprompts import team_combine_messages, team_plan_messages
from lmos.train.corpus_apps_split import Draw, Pool, conversation
from lmos.train.data import Conversation
from lmos.train.phrasings import CALC_ANSWER, _lines
from lmos.train.split import in_heldout, normalize_expr
from lmos.userland.tools.basic import declarations
from lmos.userland.tools.calc import evaluate, format_result

CALC_TOOL = [t for t in declarations() if t["name"] == "calc"]
PARTS = {  # (wording list, calc expression)
    "mul": (["{a} * {b}", "{a} times {b}", "{a} multiplied by {b}", "the product of {a} and {b}", "{a}x{b}"],
            "{a} * {b}"),
    "add": (["{a} + {b}", "{a} plus {b}", "the sum of {a} and {b}", "{a} added to {b}"], "{a} + {b}"),
    "sub": (["{a} - {b}", "{a} minus {b}", "{b} subtracted from {a}", "{a} take away {b}"], "{a} - {b}"),
    "div": (["{a} / {b}", "{a} divided by {b}", "{a} over {b}", "{a} split {b} ways"], "{a} / {b}"),
    "pct": (["{a}% of {b}", "{a} percent of {b}", "{a} per cent of {b}"], "{a} / 100 * {b}"),
    "sqrt": (["the square root of {s}", "sqrt({s})", "the root of {s}"], "sqrt({s})"),
    "pow": (["{a} squared", "{a} to the power of 2", "{a}^2"], "{a} ** 2"),
}
PART_POOLS = {op: Pool(f"team.part.{op}", words) for op, (words, _) in PARTS.items()}
OPENERS = Pool("team.opener", _lines("""
what is
what's
compute
work out
calculate
find
figure out
I need
please compute
can you work out
solve
get me
"""))
COMBINE = {  # op: (request phrases, expression over the results r1..rn)
    "add": (["then add them", "then add the results together", "and give me the sum", "and add them up",
             "then sum the results", "what do they add up to?", "and what's the total?", "then the total",
             "then add the answers", "then tell me the total", "and sum them up", "plus each other",
             "and add those together", "what's the sum of the results?"],
            " + "),
    "mul": (["then multiply the results", "then multiply them together", "and give me their product",
             "then multiply them"], " * "),
    "sub": (["then subtract the second from the first", "then take the second away from the first",
             "and the difference between them (first minus second)"], " - "),
    "avg": (["then average them", "and give me the average of the results", "then find their mean"], "avg"),
    "dbl": (["then add them and double the result", "then double their sum", "add them, then double it",
             "then twice the total"], "dbl"),
    "none": (["", "", "please", "separately", "each one"], ""),
}
PLAIN_SHAPE = "{opener} {joined}{tail}"  # the usual shape; its opener and tail lists are split
SHAPES = Pool("team.shape", [
    "first {first}, then {rest}{tail}",
    "{asked}{sentence}",
    "two sums: {joined}.{sentence}",
    "{opener} these: {joined}{tail}",
    "I need two numbers, {joined}.{sentence}",
    "{opener} {joined}.{sentence}",
])
COMBINE_POOLS = {op: Pool(f"team.combine.{op}", phrases) for op, (phrases, _) in COMBINE.items()}
WORD_PROBLEMS = Pool("team.story", [  # (request, subtasks as calc expressions, how to combine)
    ("I buy {a} apples at {b} each and {c} pears at {d} each. How much do I spend in total?",
     ("{a} * {b}", "{c} * {d}"), "add"),
    ("Tickets cost {b} for adults and {d} for children. What do {a} adults and {c} children pay altogether?",
     ("{a} * {b}", "{c} * {d}"), "add"),
    ("A car drives {a} km per hour for {b} hours and then {c} km per hour for {d} hours. How far does it go?",
     ("{a} * {b}", "{c} * {d}"), "add"),
    ("We have {a} boxes of {b} pens and give away {c} packs of {d}. How many pens are left?",
     ("{a} * {b}", "{c} * {d}"), "sub"),
    ("Team A scored {a} and {b}; team B scored {c} and {d}. How many points in all?",
     ("{a} + {b}", "{c} + {d}"), "add"),
    ("My rent is {a} a month and bills are {c} a month. What do I pay over {b} months?",
     ("{a} * {b}", "{c} * {b}"), "add"),
    ("A shop sells {a} shirts at {b} and {c} hats at {d}. What's the average takings per product line?",
     ("{a} * {b}", "{c} * {d}"), "avg"),
    ("How many more is {a} times {b} than {c} times {d}?", ("{a} * {b}", "{c} * {d}"), "sub"),
    ("A room is {a} m by {b} m and another is {c} m by {d} m. What is the total floor area?",
     ("{a} * {b}", "{c} * {d}"), "add"),
    ("What is the difference between {a} squared and {c} squared?", ("{a} ** 2", "{c} ** 2"), "sub"),
    ("I earn {a} an hour for {b} hours and my partner earns {c} an hour for {d} hours. "
     "What do we earn together?",
     ("{a} * {b}", "{c} * {d}"), "add"),
    ("Which is bigger, {a} times {b} or {c} times {d}, and by how much?", ("{a} * {b}", "{c} * {d}"), "sub"),
    ("A crate holds {a} bottles. How many bottles are in {b} crates plus {c} boxes of {d}?",
     ("{a} * {b}", "{c} * {d}"), "add"),
    ("Each cake needs {a} g of flour and {c} g of sugar. How many grams of both for {b} cakes?",
     ("{a} * {b}", "{c} * {b}"), "add"),
    ("Multiply {a} by {b}, multiply {c} by {d}, and add the two products.",
     ("{a} * {b}", "{c} * {d}"), "add"),
    ("What's the product of {a} and {b} times the product of {c} and {d}?",
     ("{a} * {b}", "{c} * {d}"), "mul"),
], key=lambda w: w[0])
COMBINED_ANSWER = _lines("""
The answer is {r}.
That comes to {r}.
{e} = {r}, so the answer is {r}.
In total: {r}.
The result is {r}.
{r}.
""")
FAILED_ANSWER = _lines("""
I couldn't finish: the subtask "{t}" failed, so I don't have the final number.
Sorry, one part failed ({t}), so I can't give a reliable answer.
""")


def _calc(expr: str) -> str:
    return format_result(evaluate(expr))


def _numbers(r: random.Random, op: str) -> dict[str, str]:
    a, b = r.randint(2, 99), r.randint(2, 60)
    if op == "div":
        a = b * r.randint(2, 40)
    if op == "pct":
        a, b = r.choice([5, 10, 15, 20, 25, 30, 40, 50, 75]), r.choice([40, 60, 80, 120, 200, 250, 400, 1000])
    if op == "sub" and a < b:
        a, b = b, a
    return {"a": str(a), "b": str(b), "s": str(r.randint(2, 30) ** 2)}


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spelled(n: int) -> str:
    """0..99 in words ("forty-two"): people write small numbers that way."""
    if n < 20:
        return _ONES[n]
    return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])


def _part(d: Draw) -> tuple[str, str]:
    """(how the user writes one part, its calc expression)."""
    op = d.rng.choice(list(PARTS))
    nums = _numbers(d.rng, op)
    expr = PARTS[op][1].format(**nums)
    wording = PART_POOLS[op].pick(d)
    if op in ("mul", "add", "sub") and wording.count(" ") > 1 and d.chance(0.2):
        nums = {k: spelled(int(v)) if k in "ab" and int(v) < 100 else v for k, v in nums.items()}
    return wording.format(**nums), expr


def _combine_expr(op: str, values: list[str]) -> str:
    if op == "avg":
        return f"({' + '.join(values)}) / {len(values)}"
    if op == "dbl":
        return f"({' + '.join(values)}) * 2"
    return COMBINE[op][1].join(values)


def request(d: Draw) -> tuple[str, list[str], str]:
    """(the request, the subtasks' expressions, how to combine: add|mul|sub|avg|dbl|none)."""
    r = d.rng
    if r.random() < 0.25:
        text, exprs, op = WORD_PROBLEMS.pick(d)
        nums = {k: str(r.randint(2, 30)) for k in "abcd"}
        if op == "sub":  # the first product is the larger: a > c and b >= d
            nums["a"], nums["c"] = str(r.randint(20, 60)), str(r.randint(2, 9))
            b, dd = sorted([int(nums["b"]), int(nums["d"])], reverse=True)
            nums["b"], nums["d"] = str(b), str(dd)
        return text.format(**nums), [e.format(**nums) for e in exprs], op
    op = r.choices(list(COMBINE), weights=[38, 11, 11, 8, 6, 26])[0]
    n = 2 if op == "sub" else r.choices([2, 3, 4], weights=[65, 28, 7])[0]
    parts = [_part(d) for _ in range(n)]
    said = [p[0] for p in parts]
    tail = COMBINE_POOLS[op].pick(d)
    sentence = ""
    if tail and op != "none":
        sentence = f" {tail[0].upper()}{tail[1:]}{'' if tail.endswith('?') else '.'}"
    fill = {
        "opener": OPENERS.pick(d),
        "joined": " and ".join(said) if n == 2 else ", ".join(said[:-1]) + " and " + said[-1],
        "first": said[0],
        "rest": ", then ".join(said[1:]),
        "asked": " ".join(f"{s[0].upper()}{s[1:]}?" for s in said),
        "tail": (f", {tail}" if op != "none" else f" {tail}") if tail else "",
        "sentence": sentence,
    }
    shape = PLAIN_SHAPE if r.random() < 0.5 else SHAPES.pick(d)
    text = shape.format(**fill).strip()
    if text[-1] not in "?." and r.random() < 0.5:
        text += "?"
    return text[0].upper() + text[1:] if r.random() < 0.5 else text, [p[1] for p in parts], op


def _draw_request(d: Draw) -> tuple[str, list[str], str]:
    """A request whose numbers land in this split (by its normalised subtask expressions)."""
    for _ in range(1000):
        mark = len(d.used)
        text, exprs, op = request(d)
        distinct = len(set(exprs)) == len(exprs)  # parse_plan drops a repeated line
        if distinct and in_heldout(";".join(normalize_expr(e) for e in exprs)) == d.heldout:
            return text, exprs, op
        del d.used[mark:]
    raise RuntimeError("no team request of this split after 1000 draws")


def plan_text(exprs: list[str]) -> str:
    return "\n".join(f"what is {e}?" for e in exprs)


def _worker_answer(r: random.Random, expr: str, value: str) -> str:
    return r.choice(CALC_ANSWER).format(e=expr, r=value)


def team(rng: random.Random, split: str) -> Conversation:
    """A planner turn (half) or a combiner turn (half) of one team request."""
    d = Draw(rng, split)
    text, exprs, op = _draw_request(d)
    values = [_calc(e) for e in exprs]
    final = _calc(_combine_expr(op, values)) if op != "none" else None
    meta: dict[str, Any] = {"request": text, "subtasks": exprs, "results": values, "combine": op}
    meta["final"] = final
    if rng.random() < 0.5:
        messages = team_plan_messages(text)
        messages.append({"role": "assistant", "content": plan_text(exprs)})
        return conversation(d, "team", messages, stage="plan", **meta)
    tasks = plan_text(exprs).split("\n")
    results = [(t, _worker_answer(rng, e, v)) for t, e, v in zip(tasks, exprs, values, strict=True)]
    if rng.random() < 0.05:
        bad = rng.randrange(len(results))
        results[bad] = (tasks[bad], "failed: " + rng.choice(["exit status 1", "ETIMEDOUT", "no answer"]))
        messages = team_combine_messages(text, results)
        messages.append({"role": "assistant", "content": rng.choice(FAILED_ANSWER).format(t=tasks[bad])})
        return conversation(d, "team", messages, CALC_TOOL, stage="combine", **{**meta, "final": None})
    messages = team_combine_messages(text, results)
    if op == "none":
        answer = " and ".join(f"{e} = {v}" for e, v in zip(exprs, values, strict=True)) + "."
        messages.append({"role": "assistant", "content": answer})
    else:
        expr = _combine_expr(op, values)
        messages += [call_message("calc", {"expr": expr}), {"role": "tool", "content": final}]
        messages.append({"role": "assistant", "content": rng.choice(COMBINED_ANSWER).format(e=expr, r=final)})
    return conversation(d, "team", messages, CALC_TOOL, stage="combine", **meta)
