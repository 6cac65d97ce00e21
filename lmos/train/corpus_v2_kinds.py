"""The conversation kinds of the v2 corpus (mixed and declared by :mod:`lmos.train.corpus_v2`).

Each method draws one exchange (a user turn and the assistant's calls and
answer) from the generator's seeded stream and split, records the request
templates it used in ``self.used`` and the tools it called in
``self.tools_used``, so the mixer can declare exactly what the conversation
needs.  Tool results come from :class:`~lmos.train.toolbox.ToolBox` (the real
calc core and kv lookup) or, for synthetic tools, from
:mod:`lmos.train.synth_tools` (recorded in ``self.fixed`` so evaluation can
replay them).
"""

from __future__ import annotations

from typing import Any

from lmos.train import phrasings as P
from lmos.train import phrasings_v2 as V
from lmos.train import synth_tools as S
from lmos.train.corpus import Msgs
from lmos.train.corpus_broad import BroadCorpusGenerator
from lmos.train.phrasings import _words
from lmos.train.split import ListSplit, expr_heldout
from lmos.train.toolbox import ToolBox, call_key

RESERVED = ("calc", "kv_set", "kv_get", "clock", "fs_read", "fs_write", "fs_list", "search", "http_get")
_LISTS: dict[str, list[Any]] = {
    "percent": V.PERCENT_ASK, "tip": V.TIP_ASK, "increase": V.INCREASE_ASK, "decrease": V.DECREASE_ASK,
    "sqrt": V.SQRT_ASK, "power": V.POWER_ASK, "square": V.SQUARE_ASK, "cube": V.CUBE_ASK,
    "words": V.WORDS_ASK, "multi": V.MULTI_ASK, "two_step": V.TWO_STEP, "follow": V.FOLLOW_CALC,
    "asked": V.ASKED_WHAT, "again": V.RESULT_AGAIN,
}
_SPLITS = {name: ListSplit(name, [t if isinstance(t, str) else t[0] for t in items])
           for name, items in _LISTS.items()}
_ONES = _words("""zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
fifteen sixteen seventeen eighteen nineteen""")
_TENS = _words("_ _ twenty thirty forty fifty sixty seventy eighty ninety")


def number_words(n: int) -> str:
    """0..999 in English words ("one hundred and five", "forty-two")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    rest = n % 100
    return f"{_ONES[n // 100]} hundred" + ("" if rest == 0 else " and " + number_words(rest))


class V2Kinds(BroadCorpusGenerator):
    """The v2 kinds over the broad profile's values, keys and phrasings (one seeded stream)."""

    def __init__(self, seed: int = 0, split: str = "train") -> None:
        super().__init__(seed, split)
        self.split = split
        self.tools_used: list[str] = []
        self.synth: list[S.SynthTool] = []
        self.fixed: dict[str, str] = {}
        self.expect = ""  # what the last plain answer must contain (multi-turn recall), for evaluation

    # ---- helpers ------------------------------------------------------------------------
    def _v2(self, name: str) -> str:
        t = self.rng.choice(_SPLITS[name].side(self.heldout))
        self.used.append(t)
        return t

    def _v2_pair(self, name: str, items: list[Any]) -> Any:
        first = self._v2(name)
        return next(x for x in items if x[0] == first)

    def _calls(self, box: ToolBox, calls: list[tuple[str, dict[str, Any]]]) -> tuple[Msgs, list[str]]:
        """One assistant turn with these calls and the tool turns of their results (in call order)."""
        results = [box.run(name, args) for name, args in calls]
        self.tools_used += [name for name, _ in calls]
        msg = {"role": "assistant", "content": "",
               "tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
        return [msg, *({"role": "tool", "content": r} for r in results)], results

    def _expr_ok(self, expr: str) -> bool:
        return expr_heldout(expr) == self.heldout

    def _int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    # ---- calc kinds ---------------------------------------------------------------------
    def _calc_turn(self, box: ToolBox, ask: str, expr: str, answers: list[str], **slots: str) -> Msgs:
        tail, (r,) = self._calls(box, [("calc", {"expr": expr})])
        if r.startswith("error: "):
            text = self.rng.choice(V.CALC_ANSWER_V2).format(r=r[len("error: "):])
        else:
            text = self.rng.choice(answers).format(r=r, **slots)
        return [{"role": "user", "content": ask}, *tail, {"role": "assistant", "content": text}]

    def calc_percent(self, box: ToolBox) -> Msgs:
        r = self.rng
        while True:
            a = str(r.choice([5, 10, 12, 15, 18, 20, 25, 30, 40, 50, 75, r.randint(1, 99)]))
            b = str(r.choice([r.randint(2, 99) * 10, r.randint(1, 2000), r.randint(1, 500) * 4]))
            shape = r.choices(["percent", "tip", "increase", "decrease"], [60, 12, 14, 14])[0]
            expr = {"percent": f"{a} / 100 * {b}", "tip": f"{a} / 100 * {b}",
                    "increase": f"{b} + {a} / 100 * {b}", "decrease": f"{b} - {a} / 100 * {b}"}[shape]
            if self._expr_ok(expr):
                break
        answers = V.PERCENT_ANSWER if shape == "percent" else V.CALC_ANSWER_V2
        return self._calc_turn(box, self._v2(shape).format(a=a, b=b), expr, answers, a=a, b=b)

    def calc_power(self, box: ToolBox) -> Msgs:
        r = self.rng
        while True:
            shape = r.choices(["sqrt", "power", "square", "cube"], [40, 30, 18, 12])[0]
            if shape == "sqrt":
                n = r.randint(1, 40) ** 2 if r.random() < 0.7 else r.randint(2, 2000)
                a, b, expr = str(n), "", f"sqrt({n})"
            elif shape == "power":
                a, b = str(r.randint(2, 12)), str(r.randint(2, 10))
                expr = f"{a} ** {b}"
            else:
                a, b = str(r.randint(2, 99)), ""
                expr = f"{a} ** {2 if shape == 'square' else 3}"
            if self._expr_ok(expr):
                break
        answers = V.SQRT_ANSWER if shape == "sqrt" else V.CALC_ANSWER_V2
        return self._calc_turn(box, self._v2(shape).format(a=a, b=b), expr, answers, a=a)

    def calc_words(self, box: ToolBox) -> Msgs:
        r = self.rng
        while True:
            op = r.choice(["+", "-", "*", "/"])
            x, y = r.randint(0, 99 if op in "+-" else 20), r.randint(1, 99 if op in "+-" else 20)
            if op == "/" and r.random() < 0.7:
                x = x * y
            expr = f"{x} {op} {y}"
            if self._expr_ok(expr):
                break
        words = [number_words(x), number_words(y)]
        if r.random() < 0.25:  # one operand in digits
            i = r.randrange(2)
            words[i] = str([x, y][i])
        ask = self._v2("words").format(a=words[0], b=words[1], op=r.choice(V.WORD_OPS_V2[op]))
        return self._calc_turn(box, ask, expr, V.CALC_ANSWER_V2)

    def calc_multi(self, box: ToolBox) -> Msgs:
        r = self.rng
        nums = {k: str(self._int(2, 99)) for k in "abc"}
        if r.random() < 0.3:  # two calls, the second on the first's result
            ask_t, first_t, second_t = self._v2_pair("two_step", V.TWO_STEP)
            while True:  # both expressions of this split
                first = first_t.format(**nums)
                r1 = box.run("calc", {"expr": first})
                second = second_t.format(r=r1, **nums)
                if self._expr_ok(first) and self._expr_ok(second) and not r1.startswith("error: "):
                    break
                nums = {k: str(self._int(2, 99)) for k in "abc"}
            tail1, _ = self._calls(box, [("calc", {"expr": first})])
            tail2, (r2,) = self._calls(box, [("calc", {"expr": second})])
            text = r.choice(V.CALC_ANSWER_V2).format(r=r2)
            return [{"role": "user", "content": ask_t.format(**nums)}, *tail1, *tail2,
                    {"role": "assistant", "content": text}]
        ask_t, expr_t = self._v2_pair("multi", V.MULTI_ASK)
        while not self._expr_ok(expr_t.format(**nums)):
            nums = {k: str(self._int(2, 99)) for k in "abc"}
        return self._calc_turn(box, ask_t.format(**nums), expr_t.format(**nums), V.CALC_ANSWER_V2)

    def calc_any(self, box: ToolBox) -> Msgs:
        kind = self.rng.choices(["calc", "calc_percent", "calc_power", "calc_words", "calc_multi"],
                                [40, 15, 15, 12, 18])[0]
        out: Msgs = getattr(self, kind)(box)
        self.tools_used.append("calc")
        return out

    # ---- kv and clock ---------------------------------------------------------------------
    def _styled(self, key: str) -> str:
        style = self.rng.choice(V.KEY_STYLES)
        words = key.replace("'", "").split()
        if style == "snake":
            return "_".join(words).lower()
        if style == "kebab":
            return "-".join(words).lower()
        if style == "camel":
            return words[0].lower() + "".join(w.capitalize() for w in words[1:])
        if style == "title":
            return " ".join(w.capitalize() for w in words)
        return key

    def kv_fuzzy(self, box: ToolBox, prior: dict[str, str]) -> Msgs:
        """Recall a key stored in another style (or not at all): the tool's closest-key match."""
        r = self.rng
        key = self.key()
        if r.random() < 0.8:
            stored = self._styled(key)
            if r.random() < 0.25:
                stored = f"{r.choice(['my', 'old', 'new', 'home', 'work'])} {key}"
            box.kv[stored] = prior[stored] = self.value()
        ask = self._get_template().format(key=key)
        tail, (res,) = self._calls(box, [("kv_get", {"key": key})])
        if res.startswith("error: "):
            text = r.choice(P.GET_MISSING_ANSWER).format(key=key)
        elif ' (stored under "' in res:
            value, stored = res[: res.rindex(' (stored under "')], res[res.rindex('"', 0, -2) + 1: -2]
            text = r.choice(V.GET_FUZZY_ANSWER).format(key=key, value=value, stored=stored)
        else:
            text = f"Your {key} is {res}."
        return [{"role": "user", "content": ask}, *tail, {"role": "assistant", "content": text}]

    # ---- declared synthetic tools -----------------------------------------------------------
    def _synth(self) -> S.SynthTool:
        tool = S.draw_tool(self.rng, self.heldout, {t.name for t in self.synth} | set(RESERVED))
        self.synth.append(tool)
        self.used += tool.families
        return tool

    def _synth_call(self, tool: S.SynthTool, args: dict[str, Any], fail: bool = False) -> None:
        res = S.error(self.rng, tool) if fail else S.result(self.rng, tool, args)
        self.fixed[call_key(tool.name, args)] = res

    def declared(self, box: ToolBox) -> Msgs:
        r = self.rng
        tool = self._synth()
        ask, args = S.request(r, tool, self.heldout, self.used)
        self._synth_call(tool, args, fail=r.random() < 0.05)
        box.fixed.update(self.fixed)
        tail, (res,) = self._calls(box, [(tool.name, args)])
        return [{"role": "user", "content": ask}, *tail,
                {"role": "assistant", "content": S.answer(r, tool, args, res)}]

    def parallel(self, box: ToolBox) -> Msgs:
        """Several calls in one turn: two synthetic tools, one tool twice, or two calcs."""
        r = self.rng
        shape = r.choices(["two_tools", "same_tool", "calcs"], [45, 30, 25])[0]
        if shape == "calcs":
            exprs: list[str] = []
            asks: list[str] = []
            while len(exprs) < 2:
                said, expr = self._expr()
                if self._expr_ok(expr) and expr not in exprs:
                    exprs.append(expr)
                    asks.append(said)
            joined = self._v2_join(f"what is {asks[0]}", f"what is {asks[1]}")
            tail, results = self._calls(box, [("calc", {"expr": e}) for e in exprs])
            text = f"{asks[0]} = {results[0]} and {asks[1]} = {results[1]}."
            return [{"role": "user", "content": joined}, *tail, {"role": "assistant", "content": text}]
        tools = [self._synth()] if shape == "same_tool" else [self._synth(), self._synth()]
        calls: list[tuple[S.SynthTool, str, dict[str, Any]]] = []
        for i in range(2):
            tool = tools[min(i, len(tools) - 1)]
            ask, args = S.request(r, tool, self.heldout, self.used)
            if any(args == a for _, _, a in calls):
                continue
            self._synth_call(tool, args)
            calls.append((tool, ask, args))
        box.fixed.update(self.fixed)
        joined = calls[0][1] if len(calls) == 1 else self._v2_join(calls[0][1], calls[1][1])
        tail, results = self._calls(box, [(t.name, a) for t, _, a in calls])
        parts = [S.answer(r, t, a, res).rstrip(".") for (t, _, a), res in zip(calls, results, strict=True)]
        text = ". ".join(parts) + "."
        return [{"role": "user", "content": joined}, *tail, {"role": "assistant", "content": text}]

    def _v2_join(self, x: str, y: str) -> str:
        t = self.rng.choice(S.JOIN_PARALLEL.side(self.heldout))
        self.used.append(t)
        return t.format(x=x.rstrip("?."), y=y[0].lower() + y[1:] if y[:1].isupper() else y)

    # ---- multi-turn ---------------------------------------------------------------------------
    def followup(self, box: ToolBox) -> Msgs:
        r = self.rng
        while True:
            first = self.calc_any(box)
            res = str(first[-2]["content"])
            if not res.startswith("error: "):
                break
        msgs = list(first)
        shape = r.choices(["calc", "asked", "again"], [60, 22, 18])[0]
        if shape == "asked":
            prev = str(first[0]["content"])
            self.expect = prev
            text = r.choice(V.ASKED_ANSWER).format(prev=prev)
            msgs.append({"role": "user", "content": self._v2("asked")})
            return [*msgs, {"role": "assistant", "content": text}]
        if shape == "again":
            self.expect = res
            text = r.choice(V.RESULT_AGAIN_ANSWER).format(r=res)
            msgs.append({"role": "user", "content": self._v2("again")})
            return [*msgs, {"role": "assistant", "content": text}]
        while True:
            ask_t, expr_t = self._v2_pair("follow", V.FOLLOW_CALC)
            c = str(r.choice([2, 3, 4, 5, 10, r.randint(2, 99)]))
            expr = expr_t.format(r=res, c=c)
            if self._expr_ok(expr):
                break
            self.used.pop()
        return [*msgs, *self._calc_turn(box, ask_t.format(c=c), expr, V.CALC_ANSWER_V2)]

    def undeclared(self, box: ToolBox) -> Msgs:
        """A request whose tool is not declared: answered without a call."""
        r = self.rng
        if r.random() < 0.5:
            said, _ = self._expr()
            ask = self._template(P.CALC_ASK).format(e=said)
            self.tools_used.append("!calc")
        else:
            tool = S.draw_tool(r, self.heldout)
            self.used += tool.families
            ask, _ = S.request(r, tool, self.heldout, self.used)
        text = r.choice(V.NO_TOOL_ANSWER)
        return [{"role": "user", "content": ask}, {"role": "assistant", "content": text}]
