"""A pending ``llm_generate``: what to stop on and what has come out so far.

The scheduler appends tokens to the request after each step and decides here
whether the request is complete.  Stop strings need text, so only requests that
have stop strings (or a stream subscriber) decode incrementally; the others are
decoded once, at the end, which keeps per-token work in the kernel to a few
list operations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio

from lmos.drivers.base import Tokenizer
from lmos.errors import SyscallError


@dataclass(slots=True, eq=False)
class GenRequest:
    pid: int
    max_tokens: int
    stop: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = frozenset()
    tokenizer: Tokenizer | None = None
    prompt_tokens: int = 0
    out: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "eos" | "stop" | "length" | "quota" | None while running
    stop_hit: str | None = None
    error: SyscallError | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    arrival: float = field(default_factory=time.monotonic)
    first_at: float = 0.0  # when the first token came out (time to first token, lmos.kernel.counters)
    # incremental detokenisation state (used only with stop strings or streaming)
    decoded: str = ""
    _prefix: int = 0
    _read: int = 0
    _stop_window: int = 0

    def __post_init__(self) -> None:
        self._stop_window = max((len(s) for s in self.stop), default=0)

    @property
    def needs_text(self) -> bool:
        return bool(self.stop)

    def new_text(self) -> str:
        """Decode the text added by the latest token (handles partial UTF-8)."""
        tok = self.tokenizer
        if tok is None:
            return ""
        out, start, read = self.out, self._prefix, self._read
        full = tok.decode(out[start:])
        if full.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for more tokens
        delta = full[len(tok.decode(out[start:read])):] if read > start else full
        self._prefix, self._read = read, len(out)
        return delta

    def push(self, token: int) -> bool:
        """Record one generated token; return True when the request is complete."""
        if not self.out:
            self.first_at = time.monotonic()
        self.out.append(token)
        if token in self.stop_token_ids:
            self.finish_reason = "eos"
            return True
        if self.stop:
            start = max(0, len(self.decoded) - self._stop_window)
            self.decoded += self.new_text()  # (streamed requests without stop strings skip this)
            window = self.decoded[start:]
            for s in self.stop:
                idx = window.find(s)
                if idx >= 0:
                    self.decoded = self.decoded[: start + idx]
                    self.finish_reason = "stop"
                    self.stop_hit = s
                    return True
        if len(self.out) >= self.max_tokens:
            self.finish_reason = "length"
            return True
        return False

    def text(self) -> str:
        """Final text: with stop strings, the text before the stop string."""
        if self.finish_reason == "stop" or self.needs_text:
            return self.decoded
        if self.tokenizer is None:
            return ""
        ids = self.out[:-1] if self.finish_reason == "eos" else self.out
        return self.tokenizer.decode(ids)

    def fail(self, err: SyscallError) -> None:
        self.error = err
        self.done.set()
