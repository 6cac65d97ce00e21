"""A deterministic, near-zero-cost driver for tests and kernel benchmarks.

It honours the whole driver contract (pending tokens, chunked prefill, block
accounting, swap, drop, fork, truncate) without a neural network, so kernel
behaviour can be tested exactly and the scheduler's own overhead measured.

Tokens are bytes: ids 0-255 are UTF-8 bytes and :data:`EOS` (256) ends a
reply.  When a sequence finishes its pending tokens and must sample, the driver
asks a *responder* for a reply to the text in the sequence's window and emits
that reply one token per step, followed by EOS.  New input (``append``)
discards the rest of an unfinished reply.

``responder`` may be:

- ``None`` or ``"echo"``: reply with the latest input (the text appended since
  the previous reply);
- ``"cycle"``: an endless stream ``abc...z abc...`` with no EOS (benchmarks);
- a ``str``: always that reply;
- a ``list[str]``: the n-th reply of a sequence is ``list[n % len(list)]``;
- a ``dict[str, str]``: the value of the first key found in the window, else echo;
- a callable ``(window_text) -> str``: anything, e.g. answer from the window.

``step_delay`` (seconds per step) emulates a model's forward time; with it at
0 the kernel runs ``step`` inline instead of in a worker thread.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lmos.drivers.base import DriverLimits, KVCost, KVLocation, SamplingParams, StepPlan
from lmos.drivers.masks import AllowedFn, TokenMasks
from lmos.errors import Errno, SyscallError

EOS = 256
Responder = Callable[[str], str] | str | list[str] | dict[str, str] | None


class ByteTokenizer:
    """UTF-8 bytes as token ids; ids >= 256 are special and decode to nothing."""

    vocab_size = 257
    max_token_chars = 1  # one byte per token: the kernel's cheap length check (kernel/tokenize.py)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, token_ids: list[int]) -> str:
        try:  # the common case, cheap: streaming decodes every token twice (kernel/request.py)
            raw = bytes(token_ids)
        except ValueError:  # a special id (EOS) in the list
            raw = bytes(t for t in token_ids if 0 <= t < 256)
        return raw.decode("utf-8", errors="replace")


@dataclass(slots=True)
class _Seq:
    tokens: list[int]
    sampling: SamplingParams
    computed: int = 0
    where: str = "device"  # device | host
    blocks: int = 0  # blocks held (on the device or, when swapped, on the host)
    reply: deque[int] = field(default_factory=deque)
    last_input: list[int] = field(default_factory=list)
    fresh_input: bool = True  # the next append extends last_input instead of replacing it
    turns: int = 0


class ScriptedDriver:
    """See the module docstring.  Every argument is optional."""

    name = "scripted"

    def __init__(self, responder: Responder = None, *, max_seqs: int = 256, max_tokens: int = 8192,
                 num_blocks: int = 1 << 20, block_size: int = 16, max_model_len: int = 1 << 20,
                 step_delay: float = 0.0, bytes_per_block: int = 1 << 16,
                 seconds_per_token: float = 2e-4, swap_bandwidth: float = 1e10) -> None:
        if block_size < 1 or num_blocks < 1 or max_seqs < 1 or max_tokens < 1:
            raise SyscallError(Errno.EINVAL, "driver limits must be positive")
        self.limits = DriverLimits(max_seqs=max_seqs, max_tokens=max_tokens, num_blocks=num_blocks,
                                   block_size=block_size, max_model_len=max_model_len)
        self.tokenizer = ByteTokenizer()
        self.eos_token_ids: tuple[int, ...] = (EOS,)
        self.responder = responder
        self.step_delay = step_delay
        self.inline_step = step_delay == 0
        self.bytes_per_block = bytes_per_block
        self.seconds_per_token = seconds_per_token
        self.swap_bandwidth = swap_bandwidth
        self.seqs: dict[int, _Seq] = {}
        self.used = 0  # device blocks in use
        self.steps = 0
        self.masks = TokenMasks()  # constrained decoding (see constrain)

    # -- contract ------------------------------------------------------------
    def default_sampling(self) -> SamplingParams:
        return SamplingParams(temperature=0.0)

    def _seq(self, seq_id: int) -> _Seq:
        s = self.seqs.get(seq_id)
        if s is None:
            raise SyscallError(Errno.ENOENT, f"no sequence {seq_id}")
        return s

    def _check_len(self, n: int) -> None:
        if n > self.limits.max_model_len:
            raise SyscallError(Errno.E2BIG, f"sequence of {n} tokens exceeds the window "
                               f"({self.limits.max_model_len})")

    def add(self, seq_id: int, token_ids: list[int], sampling: SamplingParams) -> None:
        if seq_id in self.seqs:
            raise SyscallError(Errno.EEXIST, f"sequence {seq_id} exists")
        self._check_len(len(token_ids))
        self.seqs[seq_id] = _Seq(list(token_ids), sampling, last_input=list(token_ids), fresh_input=False)

    def set_sampling(self, seq_id: int, sampling: SamplingParams) -> None:
        self._seq(seq_id).sampling = sampling

    def append(self, seq_id: int, token_ids: list[int]) -> None:
        s = self._seq(seq_id)
        self._check_len(len(s.tokens) + len(token_ids))
        s.tokens.extend(token_ids)
        s.reply.clear()
        if s.fresh_input:
            s.last_input = list(token_ids)
            s.fresh_input = False
        else:
            s.last_input.extend(token_ids)

    def truncate(self, seq_id: int, length: int) -> None:
        s = self._seq(seq_id)
        if length < 0 or length > len(s.tokens):
            raise SyscallError(Errno.EINVAL, f"cannot truncate {len(s.tokens)} tokens to {length}")
        del s.tokens[length:]
        s.reply.clear()
        if s.computed > length:
            s.computed = length
            if s.where == "device":
                self._resize(s, self._blocks_for(length))
            else:
                s.blocks = self._blocks_for(length)

    def fork(self, seq_id: int, child_id: int) -> None:
        s = self._seq(seq_id)
        if child_id in self.seqs:
            raise SyscallError(Errno.EEXIST, f"sequence {child_id} exists")
        if s.where == "device" and self.used + s.blocks > self.limits.num_blocks:
            raise SyscallError(Errno.ENOMEM, "no free blocks to fork")
        c = _Seq(list(s.tokens), s.sampling, s.computed, s.where, s.blocks, deque(s.reply),
                 list(s.last_input), s.fresh_input, s.turns)
        if c.where == "device":
            self.used += c.blocks
        self.seqs[child_id] = c

    def tokens(self, seq_id: int) -> list[int]:
        return list(self._seq(seq_id).tokens)

    def length(self, seq_id: int) -> int:
        return len(self._seq(seq_id).tokens)

    def pending(self, seq_id: int) -> int:
        s = self._seq(seq_id)
        return len(s.tokens) - s.computed

    def _blocks_for(self, n: int) -> int:
        return -(-n // self.limits.block_size)

    def kv_needed(self, seq_id: int, num_tokens: int) -> int:
        s = self._seq(seq_id)
        grow = self._blocks_for(s.computed + num_tokens) - s.blocks
        return grow + (s.blocks if s.where == "host" else 0)

    def kv_free(self) -> int:
        return self.limits.num_blocks - self.used

    def _resize(self, s: _Seq, blocks: int) -> None:
        self.used += blocks - s.blocks
        s.blocks = blocks

    def step(self, plan: StepPlan) -> dict[int, int | None]:
        for sid in plan.drop:
            self.drop(sid)
        for sid in plan.swap_out:
            self.swap_out(sid)
        for sid in plan.swap_in:
            self.swap_in(sid)
        out: dict[int, int | None] = {}
        for item in plan.items:
            s = self._seq(item.seq_id)
            if s.where != "device":
                raise SyscallError(Errno.EINVAL, f"sequence {item.seq_id} is swapped out")
            n = item.num_tokens
            if n < 1 or n > len(s.tokens) - s.computed:
                raise SyscallError(Errno.EINVAL, f"bad step of {n} tokens for sequence {item.seq_id}")
            s.computed += n
            need = self._blocks_for(s.computed)
            if need != s.blocks:
                if self.used + need - s.blocks > self.limits.num_blocks:
                    s.computed -= n
                    raise SyscallError(Errno.ENOMEM, "KV pool exhausted")
                self._resize(s, need)
            if s.computed == len(s.tokens) and item.sample:
                allowed = self.masks.allowed(item.seq_id, s.tokens) if self.masks.fns else None
                tok = self._next(s) if allowed is None else self._next_allowed(s, set(allowed))
                s.tokens.append(tok)
                out[item.seq_id] = tok
            else:
                out[item.seq_id] = None
        self.steps += 1
        if self.step_delay:
            time.sleep(self.step_delay)
        return out

    def _next(self, s: _Seq) -> int:
        if self.responder == "cycle":
            return 97 + (len(s.tokens) % 26)
        if not s.reply:
            text = self._respond(s)
            s.reply.extend(self.tokenizer.encode(text))
            s.reply.append(EOS)
            s.turns += 1
            s.fresh_input = True
        return s.reply.popleft()

    def constrain(self, seq_id: int, allowed: AllowedFn | None) -> None:
        """Sample ``seq_id`` only among the ids ``allowed(tokens)`` gives (see lmos.drivers.masks).

        The scripted "model" skips the tokens of its reply that are not allowed, as a real
        model's next-best token would take their place; with its reply used up it takes the
        smallest allowed id.
        """
        self.masks.set(seq_id, allowed)

    def _next_allowed(self, s: _Seq, allowed: set[int]) -> int:
        tok = self._next(s)
        while tok not in allowed and s.reply:
            tok = s.reply.popleft()
        return tok if tok in allowed or not allowed else min(allowed)

    def _respond(self, s: _Seq) -> str:
        r = self.responder
        tok = self.tokenizer
        if r is None or r == "echo":
            return tok.decode(s.last_input)
        if isinstance(r, str):
            return r
        if isinstance(r, list):
            return r[s.turns % len(r)] if r else ""
        window = tok.decode(s.tokens)
        if isinstance(r, dict):
            for key, value in r.items():
                if key in window:
                    return value
            return tok.decode(s.last_input)
        return r(window)

    def free(self, seq_id: int) -> None:
        s = self.seqs.pop(seq_id, None)
        if s is not None and s.where == "device":
            self.used -= s.blocks

    def swap_out(self, seq_id: int) -> None:
        s = self._seq(seq_id)
        if s.where == "device":
            self.used -= s.blocks
            s.where = "host"

    def swap_in(self, seq_id: int) -> None:
        s = self._seq(seq_id)
        if s.where == "host":
            if self.used + s.blocks > self.limits.num_blocks:
                raise SyscallError(Errno.ENOMEM, "no free blocks to swap in")
            self.used += s.blocks
            s.where = "device"

    def drop(self, seq_id: int) -> None:
        s = self._seq(seq_id)
        if s.where == "device":
            self.used -= s.blocks
        s.where, s.blocks, s.computed = "device", 0, 0

    def cost(self, seq_id: int) -> KVCost:
        s = self._seq(seq_id)
        if s.computed == 0:
            loc = KVLocation.NONE
        else:
            loc = KVLocation.DEVICE if s.where == "device" else KVLocation.HOST
        nbytes = s.blocks * self.bytes_per_block
        return KVCost(location=loc, blocks=s.blocks if s.where == "device" else 0,
                      exclusive_blocks=s.blocks if s.where == "device" else 0, swap_bytes=nbytes,
                      recompute_tokens=s.computed, swap_seconds=2 * nbytes / self.swap_bandwidth,
                      recompute_seconds=s.computed * self.seconds_per_token)

    def close(self) -> None:
        self.seqs.clear()
        self.used = 0


def blocks_for(tokens: int, block_size: int) -> int:
    return math.ceil(tokens / block_size)
