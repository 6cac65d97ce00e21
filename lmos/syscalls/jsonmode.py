"""JSON mode: constrained decoding that makes a generation one JSON object.

``llm_generate(json_object=True)`` (OpenAI's ``response_format: {"type":
"json_object"}``) is *enforced*, not asked for: before every sampled token the
driver masks the logits to the tokens that keep the text a prefix of one JSON
object (the driver's ``constrain`` hook, :mod:`lmos.drivers.masks`), and end-of-sequence is
allowed only once the object is closed.  A reply that ends on ``<|end|>`` is
therefore valid JSON whatever the model would have said; one cut by
``max_tokens`` is a valid prefix (finish reason ``length``), as with OpenAI.

Three pieces, all plain Python:

* :func:`step` is a pushdown automaton over characters: the state is the
  lexical position (in a key, a string, a number, a literal, between values),
  the stack of open containers and the run of whitespace so far.  Runs of
  whitespace outside strings are capped (:data:`MAX_WS`), and the reply
  starts with ``{`` itself: a small model that likes spaces and newlines
  would otherwise pad instead of answering.
* :class:`TokenTable` is a vocabulary as text, built once per tokenizer:
  every token's decoded text, grouped by first character.  Structure is ASCII,
  so a token holding part of a multi-byte character (decoded as U+FFFD) is
  just a non-ASCII character, valid inside strings only.  Tokens that decode
  to nothing or are control tokens are never allowed (EOS aside).
* :class:`JsonObjectConstraint` is the per-sequence callable the driver asks:
  it follows the generated tokens incrementally and returns the allowed ids.
  Allowed sets are cached per automaton state, with the stack cut to what one
  token can reach (a token of ``L`` characters pops at most ``L`` containers),
  so a state is scanned over the vocabulary once per tokenizer, not per step.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import Any

from lmos.errors import Errno, SyscallError

MAX_WS = 24  # consecutive whitespace characters outside strings
WS = " \t\n\r"
HEX = "0123456789abcdefABCDEF"
DIGITS = "0123456789"
LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
# state = (lexical position, open containers ("o" object, "a" array), whitespace run)
State = tuple[str, tuple[str, ...], int]
START: State = ("start", (), 0)


def _value(ch: str, stack: tuple[str, ...]) -> State | None:
    """The state after the first character of a value."""
    if ch == "{":
        return ("obj_first", (*stack, "o"), 0)
    if ch == "[":
        return ("arr_first", (*stack, "a"), 0)
    if ch == '"':
        return ("str", stack, 0)
    if ch == "-":
        return ("minus", stack, 0)
    if ch == "0":
        return ("zero", stack, 0)
    if ch in DIGITS:
        return ("int", stack, 0)
    rest = LITERALS.get(ch)
    return ("lit:" + rest, stack, 0) if rest else None


def _after(ch: str, stack: tuple[str, ...], ws: int) -> State | None:
    """After a complete value inside a container: whitespace, a comma or the closer."""
    if ch in WS:
        return ("after", stack, ws + 1) if ws < MAX_WS else None
    if ch == ",":
        return ("obj_key" if stack[-1] == "o" else "value", stack, 0)
    if ch == ("}" if stack[-1] == "o" else "]"):
        rest = stack[:-1]
        return ("after", rest, 0) if rest else ("done", rest, 0)
    return None


def _ended(ch: str, stack: tuple[str, ...]) -> State | None:
    """A number ends at the first character that cannot continue it."""
    return _after(ch, stack, 0)


def step(state: State, ch: str) -> State | None:
    """The state after ``ch``, or None if ``ch`` cannot follow (the text is no JSON-object prefix)."""
    lex, stack, ws = state
    if lex in ("str", "key"):
        if ch == '"':
            return ("after", stack, 0) if lex == "str" else ("colon", stack, 0)
        if ch == "\\":
            return (lex + "_esc", stack, 0)
        return None if ch < " " else state
    if lex in ("str_esc", "key_esc"):
        if ch == "u":
            return (lex[:3] + "_u4", stack, 0)
        return (lex[:3], stack, 0) if ch in '"\\/bfnrt' else None
    if lex.startswith(("str_u", "key_u")):
        if ch not in HEX:
            return None
        left = int(lex[5:]) - 1
        return (lex[:3] if left == 0 else f"{lex[:5]}{left}", stack, 0)
    if ch in WS and lex in ("obj_first", "obj_key", "colon", "value", "arr_first", "done"):
        return (lex, stack, ws + 1) if ws < MAX_WS else None
    if lex == "start":
        return ("obj_first", ("o",), 0) if ch == "{" else None
    if lex in ("obj_first", "obj_key"):
        if ch == '"':
            return ("key", stack, 0)
        if ch == "}" and lex == "obj_first":
            return _after("}", stack, 0)
        return None
    if lex == "colon":
        return ("value", stack, 0) if ch == ":" else None
    if lex in ("value", "arr_first"):
        if ch == "]" and lex == "arr_first":
            return _after("]", stack, 0)
        return _value(ch, stack)
    if lex == "after":
        return _after(ch, stack, ws)
    if lex == "done":
        return None
    if lex.startswith("lit:"):
        rest = lex[4:]
        if ch != rest[0]:
            return None
        return ("lit:" + rest[1:], stack, 0) if len(rest) > 1 else ("after", stack, 0)
    return _number(lex, ch, stack)


def _number(lex: str, ch: str, stack: tuple[str, ...]) -> State | None:
    digit = ch in DIGITS
    if lex == "minus":
        return ("zero" if ch == "0" else "int", stack, 0) if digit else None
    if lex in ("zero", "int"):
        if digit and lex == "int":
            return ("int", stack, 0)
        if ch == ".":
            return ("dot", stack, 0)
        if ch in "eE":
            return ("exp", stack, 0)
        return None if digit else _ended(ch, stack)
    if lex == "dot":
        return ("frac", stack, 0) if digit else None
    if lex == "frac":
        if digit:
            return ("frac", stack, 0)
        return ("exp", stack, 0) if ch in "eE" else _ended(ch, stack)
    if lex == "exp":
        if ch in "+-":
            return ("exp_sign", stack, 0)
        return ("exp_int", stack, 0) if digit else None
    if lex == "exp_sign":
        return ("exp_int", stack, 0) if digit else None
    if lex == "exp_int":
        return ("exp_int", stack, 0) if digit else _ended(ch, stack)
    raise AssertionError(f"unknown JSON lexer state {lex!r}")


def feed(state: State | None, text: str) -> State | None:
    for ch in text:
        if state is None:
            return None
        state = step(state, ch if ch < "\x80" else "\u00e9")  # any non-ASCII character: string content
    return state


class TokenTable:
    """A vocabulary as text (see the module docstring), with the allowed-id cache of its states."""

    def __init__(self, texts: Sequence[str], banned: Collection[int] = ()) -> None:
        self.texts = list(texts)
        self.by_first: dict[str, list[int]] = {}
        self.plain: list[int] = []  # ids that stay inside a string whatever it is (no quote, escape, control)
        self.other: list[int] = []
        for i, t in enumerate(self.texts):
            if t and i not in banned:
                first = t[0] if t[0] < "\x80" else "\u00e9"
                self.by_first.setdefault(first, []).append(i)
                quiet = '"' not in t and "\\" not in t and min(t) >= " "
                (self.plain if quiet else self.other).append(i)
        self.longest = max((len(t) for t in self.texts), default=1)
        self.cache: dict[State, tuple[int, ...]] = {}
        self.lock = threading.Lock()  # (drivers may step in a worker thread)

    @classmethod
    def of(cls, tokenizer: Any, vocab_size: int) -> TokenTable:
        """The table of ``tokenizer`` (built once: cached on the tokenizer object)."""
        table = getattr(tokenizer, "_lmos_json_table", None)
        if isinstance(table, TokenTable) and len(table.texts) == vocab_size:
            return table
        if tokenizer is None:
            raise SyscallError(Errno.EINVAL, "JSON mode needs the model's tokenizer")
        texts = []
        for i in range(vocab_size):
            try:
                texts.append(str(tokenizer.decode([i])))
            except (ValueError, IndexError, KeyError, TypeError, OverflowError):
                texts.append("")  # a spare embedding row: never allowed
        banned = set(getattr(tokenizer, "control_ids", None) or ())
        hf = getattr(tokenizer, "hf", None)
        banned.update(getattr(hf, "all_special_ids", None) or ())
        table = cls(texts, banned)
        try:
            tokenizer._lmos_json_table = table
        except AttributeError:
            pass
        return table

    def allowed(self, state: State) -> tuple[int, ...]:
        """The ids whose text can follow ``state`` (EOS not included)."""
        lex, stack, ws = state
        key = (lex, stack[-(self.longest + 1):], ws)
        got = self.cache.get(key)
        if got is not None:
            return got
        with self.lock:
            ok: list[int] = []
            if lex in ("str", "key"):  # most of a vocabulary: the quiet tokens, then the rest one by one
                ok.extend(self.plain)
                ok.extend(i for i in self.other if feed(key, self.texts[i]) is not None)
            else:
                for first, ids in self.by_first.items():
                    if step(key, first) is not None:
                        ok.extend(i for i in ids if feed(key, self.texts[i]) is not None)
            got = self.cache[key] = tuple(sorted(ok))
        return got


class JsonObjectConstraint:
    """The driver's per-sequence mask for one JSON-mode generation (see the module docstring).

    The first call fixes where the generation starts (the driver asks only once
    the prompt is computed); afterwards ``tokens[start:]`` is what was generated.
    """

    def __init__(self, table: TokenTable, eos_ids: Collection[int], start: int | None = None) -> None:
        self.table = table
        self.eos = tuple(sorted(eos_ids))
        self.start = start
        self.seen: list[int] = []
        self.state: State | None = START
        self.with_eos: dict[int, tuple[int, ...]] = {}

    def fork(self) -> JsonObjectConstraint:
        """A constraint for a fork of the sequence (same start, its own progress)."""
        return JsonObjectConstraint(self.table, self.eos, self.start)

    def __call__(self, tokens: Sequence[int]) -> tuple[int, ...] | None:
        if self.start is None:
            self.start = len(tokens)
        gen = tokens[self.start:]
        seen = self.seen
        if len(gen) < len(seen) or (seen and gen[len(seen) - 1] != seen[-1]):
            self.seen, self.state = [], START  # rewound (a fork's restart): follow again
            seen = self.seen
        for t in gen[len(seen):]:
            seen.append(t)
            text = self.table.texts[t] if 0 <= t < len(self.table.texts) else ""
            self.state = feed(self.state, text) if text else None
        if self.state is None:
            return None  # off the rails (a token the mask did not allow): leave the model be
        ids = self.table.allowed(self.state)
        if self.state[0] != "done":
            return ids or None  # (no token fits: a vocabulary without some character; leave it be)
        got = self.with_eos.get(id(ids))  # (the table keeps ids alive, so its id stays its own)
        if got is None:
            got = self.with_eos[id(ids)] = tuple(sorted({*ids, *self.eos}))
        return got
