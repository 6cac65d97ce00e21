"""Phrasings of the v2 corpus (:mod:`lmos.train.corpus_v2`): calc kinds, follow-ups, kv styles.

Data only, like :mod:`lmos.train.phrasings`.  Every list a *request* is drawn
from is split by phrasing family (:mod:`lmos.train.split`), so each list has
several families on both sides; answer lists are not split (they are what the
model must say).  Slots: ``{a}``/``{b}``/``{c}`` numbers as the user writes
them, ``{key}``/``{value}`` kv, ``{r}`` a tool result, ``{prev}`` an earlier
request.
"""

from __future__ import annotations

from lmos.train.phrasings import _lines

# ---- calc: percent ("15% of 200" -> 15 / 100 * 200) --------------------------------------
PERCENT_ASK = _lines("""
what is {a}% of {b}?
what's {a} percent of {b}
{a}% of {b}
calculate {a}% of {b}
how much is {a} percent of {b}?
find {a}% of {b}
what is {a} per cent of {b}?
work out {a}% of {b} for me
{a} percent of {b}?
tell me {a}% of {b}
could you compute {a} percent of {b}
I need {a}% of {b}
""")
TIP_ASK = _lines("""
what's a {a}% tip on {b}?
how big is a {a}% tip on a bill of {b}?
{a}% tip on {b}
calculate a {a} percent tip for {b}
""")
INCREASE_ASK = _lines("""
increase {b} by {a}%
what is {b} plus {a}%?
raise {b} by {a} percent
{b} increased by {a}%
add {a}% to {b}
""")
DECREASE_ASK = _lines("""
decrease {b} by {a}%
what is {b} minus {a}%?
take {a}% off {b}
{b} reduced by {a} percent
{b} with a {a}% discount
""")

# ---- calc: roots and powers ---------------------------------------------------------------
SQRT_ASK = _lines("""
what is the square root of {a}?
square root of {a}
sqrt of {a}
what's the sqrt of {a}
calculate the square root of {a}
find the square root of {a}
sqrt({a})
take the square root of {a}
how much is the square root of {a}?
the square root of {a} please
""")
POWER_ASK = _lines("""
what is {a} to the power of {b}?
{a} to the power {b}
{a}^{b}
what's {a}^{b}?
raise {a} to the power of {b}
{a} raised to {b}
calculate {a} to the {b}th power
compute {a}**{b}
what is {a} ** {b}
{a} to the {b}
""")
SQUARE_ASK = _lines("""
what is {a} squared?
{a} squared
square {a}
what's {a} squared
calculate {a} squared
""")
CUBE_ASK = _lines("""
what is {a} cubed?
{a} cubed
cube {a}
what's {a} cubed
""")

# ---- calc: numbers in words ("twelve times seven" -> 12 * 7) ------------------------------
WORDS_ASK = _lines("""
what is {a} {op} {b}?
what's {a} {op} {b}
{a} {op} {b}
how much is {a} {op} {b}?
calculate {a} {op} {b}
tell me {a} {op} {b}
{a} {op} {b}, please
could you work out {a} {op} {b}?
""")
WORD_OPS_V2 = {
    "+": ["plus", "and", "added to"],
    "-": ["minus", "take away", "less"],
    "*": ["times", "multiplied by"],
    "/": ["divided by", "over"],
}

# ---- calc: several steps in one request ----------------------------------------------------
# (ask, expression): one call for the whole request
MULTI_ASK = [
    ("add {a} and {b} then double it", "({a} + {b}) * 2"),
    ("add {a} and {b}, then double the result", "({a} + {b}) * 2"),
    ("add {a} to {b} and then multiply by {c}", "({a} + {b}) * {c}"),
    ("what is {a} plus {b}, times {c}?", "({a} + {b}) * {c}"),
    ("sum {a} and {b} and divide by {c}", "({a} + {b}) / {c}"),
    ("take {a}, subtract {b}, then halve it", "({a} - {b}) / 2"),
    ("subtract {b} from {a} and then multiply by {c}", "({a} - {b}) * {c}"),
    ("multiply {a} by {b} then add {c}", "{a} * {b} + {c}"),
    ("multiply {a} by {b} and then subtract {c}", "{a} * {b} - {c}"),
    ("what do I get if I multiply {a} by {b} and add {c}?", "{a} * {b} + {c}"),
    ("divide {a} by {b} and then add {c}", "{a} / {b} + {c}"),
    ("double {a} and then add {b}", "{a} * 2 + {b}"),
    ("triple {a} then subtract {b}", "{a} * 3 - {b}"),
    ("halve {a} and add {b}", "{a} / 2 + {b}"),
    ("add {a}, {b} and {c}", "{a} + {b} + {c}"),
    ("what is the sum of {a}, {b} and {c}?", "{a} + {b} + {c}"),
    ("what is the average of {a}, {b} and {c}?", "({a} + {b} + {c}) / 3"),
    ("the average of {a} and {b}", "({a} + {b}) / 2"),
    ("square {a} and add {b}", "{a} ** 2 + {b}"),
    ("add {a} and {b} then square it", "({a} + {b}) ** 2"),
]
# (first step, the follow-up step on its result {r}) for requests done in two calls
TWO_STEP = [
    ("add {a} and {b} then double it", "{a} + {b}", "{r} * 2"),
    ("add {a} to {b}, then multiply that by {c}", "{a} + {b}", "{r} * {c}"),
    ("multiply {a} by {b}, then subtract {c} from it", "{a} * {b}", "{r} - {c}"),
    ("subtract {b} from {a} and halve the result", "{a} - {b}", "{r} / 2"),
    ("first {a} times {b}, then add {c}", "{a} * {b}", "{r} + {c}"),
    ("divide {a} by {b} and then multiply by {c}", "{a} / {b}", "{r} * {c}"),
]

# ---- multi-turn follow-ups on an earlier calc result {r} -----------------------------------
FOLLOW_CALC = [
    ("now multiply that by {c}", "{r} * {c}"),
    ("multiply that by {c}", "{r} * {c}"),
    ("and times {c}?", "{r} * {c}"),
    ("now add {c} to it", "{r} + {c}"),
    ("add {c} to that", "{r} + {c}"),
    ("plus {c}?", "{r} + {c}"),
    ("now subtract {c}", "{r} - {c}"),
    ("take {c} away from that", "{r} - {c}"),
    ("divide that by {c}", "{r} / {c}"),
    ("now divide it by {c}", "{r} / {c}"),
    ("double it", "{r} * 2"),
    ("now double that", "{r} * 2"),
    ("halve that", "{r} / 2"),
    ("and squared?", "{r} ** 2"),
    ("what is that squared?", "{r} ** 2"),
    ("what's {c}% of that?", "{c} / 100 * {r}"),
]
ASKED_WHAT = _lines("""
what did I just ask?
what did I just ask you?
what was my last question?
remind me what I asked
what was my question again?
repeat my last question
""")
ASKED_ANSWER = _lines("""
You asked: "{prev}"
You asked "{prev}".
Your last question was: "{prev}"
You just asked: {prev}
""")
RESULT_AGAIN = _lines("""
what was the answer again?
what was the result?
remind me of the result
what did you get?
say the answer again
""")
RESULT_AGAIN_ANSWER = _lines("""
The answer was {r}.
It was {r}.
I got {r}.
The result was {r}.
""")

# ---- answers -------------------------------------------------------------------------------
CALC_ANSWER_V2 = _lines("""
The answer is {r}.
It's {r}.
That comes to {r}.
The result is {r}.
It equals {r}.
You get {r}.
That's {r}.
{r}.
""")
PERCENT_ANSWER = _lines("""
{a}% of {b} is {r}.
That's {r}.
It comes to {r}.
The answer is {r}.
""")
SQRT_ANSWER = _lines("""
The square root of {a} is {r}.
It's {r}.
sqrt({a}) = {r}.
That's {r}.
""")
GET_FUZZY_ANSWER = _lines("""
Your {key} is {value}.
It's {value} (saved as {stored}).
I found {value} under {stored}.
You saved {value} as {stored}.
""")
NO_TOOL_ANSWER = _lines("""
I can't do that here: no tool for it is available in this conversation.
Sorry, I don't have a tool for that right now.
I have no tool for that in this conversation, so I can't look it up.
""")

# ---- kv key styles: how a key is written in the call (the user's words, or a code style) ----
KEY_STYLES = ("words", "words", "words", "snake", "kebab", "camel", "title")
