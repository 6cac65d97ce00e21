"""The ``broad`` corpus profile: open-vocabulary values and more ways of asking.

The base corpus draws words from short lists, so a model trained on it copies
those words well and unseen English words poorly (about a third of "say ..."
requests with new words came back intact).  This profile keeps half of the
base distribution and replaces the rest with values built from a syllable
model (onset + vowel + coda, one to three syllables, sometimes capitalised),
so the copied pieces cover most of the tokenizer's letter merges; it adds
phrasings like "multiply 37 by 41" and "the wifi password is ..." and keys the
base lists never use.  Same seed, same corpus; the split is the base
profile's (:mod:`lmos.train.split`): phrasing families, key names, prompts,
expressions and values all disjoint.
"""

from __future__ import annotations

from lmos.train import phrasings as P
from lmos.train.corpus import CorpusGenerator, Msgs
from lmos.train.phrasings import CALC_WORDED, GET_MORE, SET_MORE
from lmos.train.split import expr_heldout, template_heldout
from lmos.train.toolbox import ToolBox

ONSETS = [
    "b",
    "bl",
    "br",
    "c",
    "ch",
    "cl",
    "cr",
    "d",
    "dr",
    "f",
    "fl",
    "fr",
    "g",
    "gl",
    "gr",
    "h",
    "j",
    "k",
    "kn",
    "l",
    "m",
    "n",
    "p",
    "ph",
    "pl",
    "pr",
    "qu",
    "r",
    "s",
    "sc",
    "sh",
    "sk",
    "sl",
    "sm",
    "sn",
    "sp",
    "st",
    "str",
    "sw",
    "t",
    "th",
    "tr",
    "tw",
    "v",
    "w",
    "wh",
    "wr",
    "y",
    "z",
] + [""] * 6
VOWELS = [
    "a",
    "e",
    "i",
    "o",
    "u",
    "a",
    "e",
    "i",
    "o",
    "u",
    "ai",
    "ea",
    "ee",
    "ie",
    "oa",
    "oo",
    "ou",
    "ow",
    "aw",
    "oi",
    "ay",
    "y",
]
CODAS = [
    "b",
    "ck",
    "d",
    "ft",
    "g",
    "k",
    "l",
    "ll",
    "lt",
    "m",
    "mp",
    "n",
    "nd",
    "ng",
    "nk",
    "nt",
    "p",
    "r",
    "rd",
    "rk",
    "rn",
    "rt",
    "s",
    "sh",
    "ss",
    "st",
    "t",
    "th",
    "x",
    "ze",
    "mps",
    "nch",
    "rch",
] + [""] * 12
# phrasings live with the base lists so lmos.train.split can see every list without an import cycle
class BroadCorpusGenerator(CorpusGenerator):
    """The base generator with open-vocabulary values, keys, repeat texts and phrasings."""

    def _syllable_word(self) -> str:
        r = self.rng
        word = "".join(
            r.choice(ONSETS) + r.choice(VOWELS) + r.choice(CODAS)
            for _ in range(r.choices([1, 2, 3], [45, 40, 15])[0])
        )
        if r.random() < 0.1:
            word += "s"
        return word.capitalize() if r.random() < 0.15 else word

    def _phrase(self, lo: int, hi: int) -> str:
        r = self.rng
        words = [
            self._syllable_word() if r.random() < 0.7 else r.choice(P.WORDS) for _ in range(r.randint(lo, hi))
        ]
        return " ".join(words)

    def _raw_value(self) -> str:
        r = self.rng
        if r.random() < 0.5:
            return super()._raw_value()
        kind = r.choices(["phrase", "word", "mixed"], weights=[45, 35, 20])[0]
        if kind == "phrase":
            return self._phrase(2, 4)
        if kind == "word":
            return self._syllable_word()
        return f"{self._syllable_word()} {r.randint(1, 9999)}"

    def _raw_key(self) -> str:
        r = self.rng
        if r.random() < 0.5:
            return super()._raw_key()
        return self._phrase(1, 2).lower()

    def _repeat_text(self) -> str:
        r = self.rng
        if r.random() < 0.4:
            return super()._repeat_text()
        text = self._phrase(1, 6)
        if r.random() < 0.2:
            text += r.choice([".", "!", "?", ","])
        return text

    def _set_template(self) -> str:
        return self._template(SET_MORE) if self.rng.random() < 0.3 else super()._set_template()

    def _get_template(self) -> str:
        return self._template(GET_MORE) if self.rng.random() < 0.3 else super()._get_template()

    def calc(self, box: ToolBox) -> Msgs:
        r = self.rng
        if r.random() < 0.7:
            return super().calc(box)
        while True:
            ask_t, expr_t = r.choice([(a, e) for a, e in CALC_WORDED if template_heldout(a) == self.heldout])
            if "**" in expr_t:
                a, b = str(r.randint(2, 30)), str(r.randint(2, 4))
            else:
                a, b = self._number(), self._number()
            expr = expr_t.format(a=a, b=b)
            if expr_heldout(expr) == self.heldout:
                break
        self.used.append(ask_t)
        msgs, result = self._tool_turn(box, ask_t.format(a=a, b=b), "calc", {"expr": expr})
        if result.startswith("error: "):
            answer = r.choice(P.CALC_ERROR_ANSWER).format(msg=result[len("error: ") :])
        else:
            answer = r.choice(P.CALC_ANSWER).format(e=expr, r=result)
        return [*msgs, {"role": "assistant", "content": answer}]
