"""The seeded synthetic corpus of tool-using conversations for the built-in model.

Each conversation exercises one main skill, often after an unrelated earlier
exchange so the model learns to look at the latest request:

* ``calc``: arithmetic through the calc tool, copying the operands into the call
  and the result into the answer (symbols or words like "times" in the question);
* ``kv_pair``: store a value with ``kv_set``, then recall it with ``kv_get`` in a
  later turn of the same conversation;
* ``kv_get``: recall a value stored before the conversation (``meta["kv"]``), or
  a missing key, which the tool answers with ``error: no such key: K``;
* ``clock``: the time through the clock tool;
* ``repeat``: say a text back verbatim, with no tool;
* ``chat``: small talk, with no tool.

Tool results come from :class:`~lmos.train.toolbox.ToolBox`, which uses the real
calc core, so the data matches what the tools return at run time.

Held-out data (``split="heldout"``) shares no request phrasing family, key
name, small-talk prompt, (normalised) calc expression or value with the
training split: :mod:`lmos.train.split` says how each is assigned.  Each
conversation records the request templates and prompts it used in
``meta["templates"]``, so the split can be checked on generated data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from lmos.chatformat import DEFAULT_SYSTEM_PROMPT, call_message
from lmos.train import phrasings as P
from lmos.train.data import Conversation
from lmos.train.smalltalk import SMALL_TALK
from lmos.train.split import (
    HELDOUT_MODULUS,
    expr_heldout,
    in_heldout,
    key_heldout,
    prompt_heldout,
    template_heldout,
)
from lmos.train.toolbox import ToolBox

KINDS = {"calc": 0.30, "kv_pair": 0.20, "kv_get": 0.14, "clock": 0.08, "repeat": 0.14, "chat": 0.14}
Msgs = list[dict[str, Any]]
__all__ = ["HELDOUT_MODULUS", "KINDS", "CorpusGenerator", "generate", "generator", "in_heldout"]


class CorpusGenerator:
    """Draws conversations from one seeded random stream (same seed, same corpus)."""

    def __init__(self, seed: int = 0, split: str = "train") -> None:
        if split not in ("train", "heldout"):
            raise ValueError(f"unknown split {split!r}")
        self.rng = random.Random(seed)
        self.heldout = split == "heldout"
        self.used: list[str] = []  # request templates and prompts of the conversation being drawn

    # ---- values -----------------------------------------------------------------
    def _pick(self, draw: Callable[[], str]) -> str:
        """Draw until the value lands in this generator's split."""
        while True:
            value = draw()
            if in_heldout(value) == self.heldout:
                return value

    def _number(self, allow_float: bool = True) -> str:
        r = self.rng
        digits = r.choices([1, 2, 3, 4], weights=[25, 35, 25, 15])[0]
        n = str(r.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits))
        if allow_float and r.random() < 0.08:
            n += "." + str(r.randrange(1, 100))
        return n

    def _token(self) -> str:
        r = self.rng
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        if r.random() < 0.2:
            alphabet += "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        return "".join(r.choice(alphabet) for _ in range(r.randint(3, 9)))

    def _pseudo_word(self) -> str:
        r = self.rng
        return "".join(r.choice("bcdfghjklmnprstvz") + r.choice("aeiou") for _ in range(r.randint(2, 3)))

    def _raw_value(self) -> str:
        r = self.rng
        kind = r.choices(
            ["token", "number", "words", "word", "name", "date"], weights=[28, 20, 27, 10, 5, 10]
        )[0]
        if kind == "token":
            return self._token()
        if kind == "number":
            return str(r.randrange(10, 10 ** r.randint(2, 7)))
        if kind == "words":
            return " ".join(r.choice(P.WORDS) for _ in range(r.randint(2, 4)))
        if kind == "word":
            return r.choice([r.choice(P.WORDS), self._pseudo_word()])
        if kind == "name":
            return r.choice(P.NAMES)
        if r.random() < 0.5:
            return f"{r.choice(P.MONTHS)} {r.randint(1, 28)}"
        return f"{r.randint(1, 12)}:{r.randint(0, 59):02d} {r.choice(['am', 'pm'])}"

    def value(self) -> str:
        return self._pick(self._raw_value)

    def _template(self, templates: list[str]) -> str:
        """A request template of this split's phrasing families (recorded in ``meta``)."""
        t = self.rng.choice([t for t in templates if template_heldout(t) == self.heldout])
        self.used.append(t)
        return t

    def _raw_key(self) -> str:
        r = self.rng
        if r.random() < 0.7:
            return r.choice(P.KEY_WORDS)
        return r.choice([self._pseudo_word(), f"{r.choice(P.WORDS)} {self._pseudo_word()}"])

    def key(self) -> str:
        """A key name of this split (names, not only values, are disjoint)."""
        while True:
            k = self._raw_key()
            if key_heldout(k) == self.heldout:
                return k

    def now(self) -> str:
        r = self.rng
        return (
            f"{r.randint(2020, 2035)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} "
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} UTC"
        )

    def _expr(self) -> tuple[str, str]:
        """(text the user writes, expression in the call)."""
        r = self.rng
        op = r.choice(["+", "-", "*", "/"])
        shape = r.choices(["ab", "abc", "paren", "pow", "intdiv", "zero"], weights=[60, 17, 10, 5, 6, 2])[0]
        a, b = self._number(), self._number()
        if shape == "ab" and r.random() < 0.06:
            a = "-" + a
        if shape == "ab" and r.random() < 0.25:
            call = f"{a} {op} {b}"
            return f"{a} {r.choice(P.WORD_OPS[op])} {b}", call
        if shape == "abc":
            call = f"{a} {op} {b} {r.choice(['+', '-', '*'])} {self._number(False)}"
        elif shape == "paren":
            call = f"({a} {op} {b}) {r.choice(['*', '+', '-', '/'])} {self._number(False)}"
        elif shape == "pow":
            call = f"{r.randint(2, 12)} ** {r.randint(2, 4)}"
        elif shape == "intdiv":
            call = f"{self._number(False)} {r.choice(['//', '%'])} {r.randint(2, 99)}"
        elif shape == "zero":
            call = f"{a} / 0"
        else:
            call = f"{a} {op} {b}"
        if r.random() < 0.15:
            call = call.replace(" ", "")
        return call, call

    def _set_template(self) -> str:
        return self._template(P.SET_ASK)

    def _get_template(self) -> str:
        return self._template(P.GET_ASK)

    # ---- exchanges: one user turn and the assistant's reply (with tool use) ---------
    def _tool_turn(self, box: ToolBox, ask: str, tool: str, args: dict[str, Any]) -> tuple[Msgs, str]:
        result = box.run(tool, args)
        msgs = [
            {"role": "user", "content": ask},
            call_message(tool, args),
            {"role": "tool", "content": result},
        ]
        return msgs, result

    def calc(self, box: ToolBox) -> Msgs:
        r = self.rng
        while True:
            said, expr = self._expr()
            if expr_heldout(expr) == self.heldout:
                break
        msgs, result = self._tool_turn(box, self._template(P.CALC_ASK).format(e=said), "calc", {"expr": expr})
        if result.startswith("error: "):
            answer = r.choice(P.CALC_ERROR_ANSWER).format(msg=result[len("error: ") :])
        else:
            answer = r.choice(P.CALC_ANSWER).format(e=said, r=result)
        return [*msgs, {"role": "assistant", "content": answer}]

    def kv_set(self, box: ToolBox, key: str, value: str) -> Msgs:
        r = self.rng
        ask = self._set_template().format(key=key, value=value)
        msgs, _ = self._tool_turn(box, ask, "kv_set", {"key": key, "value": value})
        return [*msgs, {"role": "assistant", "content": r.choice(P.SET_ANSWER).format(key=key, value=value)}]

    def kv_get(self, box: ToolBox, key: str) -> Msgs:
        r = self.rng
        msgs, result = self._tool_turn(box, self._get_template().format(key=key), "kv_get", {"key": key})
        if result.startswith("error: "):
            answer = r.choice(P.GET_MISSING_ANSWER).format(key=key)
        else:
            answer = r.choice(P.GET_ANSWER).format(key=key, value=result)
        return [*msgs, {"role": "assistant", "content": answer}]

    def clock(self, box: ToolBox) -> Msgs:
        r = self.rng
        msgs, result = self._tool_turn(box, self._template(P.CLOCK_ASK), "clock", {})
        return [*msgs, {"role": "assistant", "content": r.choice(P.CLOCK_ANSWER).format(r=result)}]

    def _repeat_text(self) -> str:
        r = self.rng
        kind = r.choices(["words", "token", "mixed", "sentence", "mathy"], weights=[40, 20, 20, 12, 8])[0]
        if kind == "words":
            return " ".join(r.choice(P.WORDS) for _ in range(r.randint(1, 5)))
        if kind == "token":
            return self._token()
        if kind == "mixed":
            return f"{r.choice(P.WORDS)} {self._number(False)} {r.choice([self._token(), r.choice(P.WORDS)])}"
        if kind == "sentence":
            return f"{r.choice(P.NAMES)} likes {r.choice(P.WORDS)} and {r.choice(P.WORDS)}!"
        return f"what is {self._number(False)} {r.choice(['+', '*', '-'])} {self._number(False)}"

    def repeat(self, box: ToolBox) -> Msgs:
        text = self._pick(self._repeat_text)
        return [
            {"role": "user", "content": self._template(P.REPEAT_ASK).format(t=text)},
            {"role": "assistant", "content": text},
        ]

    def chat(self, box: ToolBox) -> Msgs:
        """Small talk: a prompt of this split (each intent has prompts on both sides)."""
        asks, replies = SMALL_TALK[self.rng.choice(sorted(SMALL_TALK))]
        ask = self.rng.choice([a for a in asks if prompt_heldout(a) == self.heldout])
        self.used.append(ask)
        return [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": self.rng.choice(replies)},
        ]

    def _filler(self, box: ToolBox) -> Msgs:
        """An unrelated earlier exchange that gives the main request some context."""
        return self.rng.choice([self.calc, self.clock, self.repeat, self.chat])(box)

    # ---- whole conversations --------------------------------------------------------
    def conversation(self, kind: str | None = None) -> Conversation:
        r = self.rng
        self.used = []
        kind = kind or r.choices(list(KINDS), weights=list(KINDS.values()))[0]
        prior = {self.key(): self.value() for _ in range(r.choice([0, 0, 1, 2]))}
        now = self.now()
        box = ToolBox(prior, now)
        msgs: Msgs = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
        if r.random() < 0.3:
            msgs += self._filler(box)
        if kind == "kv_pair":
            key = self.key()
            while key in prior:
                key = self.key()
            msgs += self.kv_set(box, key, self.value())
            if r.random() < 0.4:
                msgs += self._filler(box)
            msgs += self.kv_get(box, key)
        elif kind == "kv_get":
            if r.random() < 0.12:
                key = self.key()
                while key in box.kv:
                    key = self.key()
            else:
                key = self.key()
                box.kv[key] = prior[key] = self.value()
            msgs += self.kv_get(box, key)
        else:
            msgs += getattr(self, kind)(box)
        meta = {"kind": kind, "kv": prior, "now": now, "templates": list(self.used)}
        return Conversation(messages=msgs, meta=meta)

    def take(self, n: int) -> Iterator[Conversation]:
        for _ in range(n):
            yield self.conversation()


def generator(seed: int = 0, split: str = "train", profile: str = "base") -> CorpusGenerator:
    """The generator of a corpus profile: ``base`` (the first built-in model), ``broad`` or ``v2``."""
    if profile == "base":
        return CorpusGenerator(seed, split)
    if profile == "broad":
        from lmos.train.corpus_broad import BroadCorpusGenerator

        return BroadCorpusGenerator(seed, split)
    if profile == "v2":
        from lmos.train.corpus_v2 import V2Generator

        return V2Generator(seed, split)
    raise ValueError(f"unknown corpus profile {profile!r} (base, broad or v2)")


def generate(
    n: int, seed: int = 0, split: str = "train", profile: str = "base", workers: int | None = 1
) -> list[Conversation]:
    """``n`` conversations from ``seed``; the same arguments always give the same list.

    ``v2`` is drawn in seeded chunks (:func:`lmos.train.corpus_v2.generate`), so
    ``workers`` processes (None: all CPUs) give the same list as one.
    """
    if profile == "v2":
        from lmos.train import corpus_v2

        return corpus_v2.generate(n, seed, split, workers)
    return list(generator(seed, split, profile).take(n))
