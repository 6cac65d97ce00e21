"""The driver contract: what the kernel may ask of a model backend.

A driver owns one model and its KV cache.  The kernel owns *when* things run:
it decides, every tick, which sequences take part in the next forward pass and
how many of their pending tokens each one computes, and it decides what happens
to the KV of a preempted or blocked sequence (keep, swap to host, or drop and
recompute).  The driver owns *how*: block tables, prefix sharing, sampling.

Vocabulary
----------
sequence
    One process's context as token ids.  Its first ``length - pending`` tokens
    have KV in the cache ("computed"); the last ``pending`` tokens do not yet.
step
    One forward pass over a :class:`StepPlan`.  Each :class:`StepItem` computes
    ``num_tokens`` of that sequence's pending tokens (a decode computes 1; a
    chunk of a prefill computes several).  When an item consumes the last
    pending token and ``sample`` is set, the driver samples the next token,
    appends it to the sequence (it becomes the one pending token that the next
    decode computes) and reports it; otherwise it reports ``None``.

All methods except :meth:`Driver.step` are cheap bookkeeping and are called on
the event loop; ``step`` may take milliseconds to seconds and is called in a
worker thread, or on the loop thread while its steps stay short if the driver sets
``inline_step = True`` (worth it for CPU compute: see :mod:`lmos.kernel.placement`).
The kernel serialises every call into one driver, so a driver needs no
locking of its own.  Errors are raised as :class:`lmos.errors.SyscallError`
(``ENOMEM`` when blocks run out, ``E2BIG`` when a sequence would exceed the
model window, ``ENOENT`` for an unknown sequence, ``EINVAL`` for a bad
argument).

Request-level drivers
---------------------
A model behind a server (:mod:`lmos.drivers.remote`) cannot take part in a
step: the server batches on its own, and all it accepts is a whole generation
request.  Such a driver sets ``request_level = True`` and implements
:class:`RequestDriver`: it keeps the same sequence bookkeeping (``add``,
``append``, ``truncate``, ``tokens`` ...; ``step`` is never called), and
:meth:`RequestDriver.generate` streams one request's tokens, appending each to
the sequence just before yielding it, so a consumer that stops early (a stop
string, a quota, a kill) leaves exactly the tokens it saw.  The kernel still
decides *who* generates: it starts at most ``max_in_flight`` requests at once,
in its policy's order (see :mod:`lmos.kernel.reqsched`).  Such a driver holds no
KV the kernel could keep or swap: its sequences are always ``KVLocation.NONE``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """How to choose the next token.  ``temperature == 0`` means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    repetition_penalty: float = 1.0
    seed: int | None = None  # a seeded sequence is reproducible whatever else is batched


class DriverLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one step can hold; the scheduler never plans beyond these."""

    max_seqs: int  # sequences per step
    max_tokens: int  # tokens computed per step (decodes + prefill chunks)
    num_blocks: int  # KV blocks in the device pool
    block_size: int  # tokens per KV block
    max_model_len: int  # the model window: longest sequence the model accepts


class StepItem(msgspec.Struct, frozen=True, gc=False):
    """Compute ``num_tokens`` pending tokens of ``seq_id``; maybe sample.

    ``gc=False``: a plan holds one per sequence per step, and as GC-type objects
    they set off collections every step at a thousand sequences (plain ints cannot
    form a cycle).
    """

    seq_id: int
    num_tokens: int
    sample: bool = True


class StepPlan(msgspec.Struct, kw_only=True):
    """One forward pass plus the KV moves the kernel decided before it.

    The driver applies ``drop``, then ``swap_out``, then ``swap_in``, then runs
    ``items``.  Any list may be empty (a plan of moves alone is valid).
    """

    items: list[StepItem] = msgspec.field(default_factory=list)
    swap_out: list[int] = msgspec.field(default_factory=list)
    swap_in: list[int] = msgspec.field(default_factory=list)
    drop: list[int] = msgspec.field(default_factory=list)

    def apply_moves(self, driver: Any) -> None:
        """Apply the plan's KV moves to ``driver`` in the documented order (drop, swap out, swap in),
        so every step-level driver orders them the same way."""
        for seq_id in self.drop:
            driver.drop(seq_id)
        for seq_id in self.swap_out:
            driver.swap_out(seq_id)
        for seq_id in self.swap_in:
            driver.swap_in(seq_id)


class KVLocation(enum.Enum):
    DEVICE = "device"  # blocks in the device pool
    HOST = "host"  # swapped out: host copies of the blocks
    NONE = "none"  # nothing cached; every token must be recomputed


class KVCost(msgspec.Struct, frozen=True, kw_only=True):
    """Per-sequence KV report the kernel uses to choose keep / swap / drop."""

    location: KVLocation
    blocks: int  # device blocks this sequence references
    exclusive_blocks: int  # of those, blocks only it holds (freed if it lets go)
    swap_bytes: int  # bytes copied by a swap out (and again by a swap in)
    recompute_tokens: int  # tokens to prefill again if the KV is dropped
    swap_seconds: float  # estimated time to swap out and back in
    recompute_seconds: float  # estimated time to recompute after a drop


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids.  Drivers without a tokenizer set ``tokenizer = None``."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...


def encode_segments(tokenizer: Tokenizer, segments: Sequence[tuple[str, bool]]) -> list[int]:
    """Token ids of ``(text, is_data)`` segments: data never becomes a special token.

    A tokenizer that knows special tokens provides ``encode_segments`` itself
    (:class:`lmos.drivers.hf_load.HFTokenizer`); one without it (bytes, the
    scripted driver's) has no text that could turn into a control token, so the
    joined text is encoded as it is.
    """
    own = getattr(tokenizer, "encode_segments", None)
    if own is not None:
        return list(own(segments))
    return tokenizer.encode("".join(text for text, _ in segments))


def control_tokens(tok: Any) -> tuple[re.Pattern[str] | None, frozenset[int]]:
    """What counts as a control token of ``tok``: its special added tokens, any it lists
    in ``chat_control_tokens``, and added tokens its chat template writes (Qwen's
    ``<tool_call>`` is not "special" but is the model's call syntax).  Returns a
    pattern matching any of them (None if there are none) and their ids."""
    template = getattr(tok, "chat_template", None)
    template = template if isinstance(template, str) else ""
    listed = set(getattr(tok, "chat_control_tokens", None) or ())
    decoder = getattr(tok, "added_tokens_decoder", None) or {}
    found = {int(i): str(a.content) for i, a in decoder.items()
             if str(a.content) and (getattr(a, "special", False) or str(a.content) in listed
                                    or (str(a.content) in template and not str(a.content).isspace()))}
    for content in getattr(tok, "all_special_tokens", None) or ():
        ids = tok.convert_tokens_to_ids([content])
        if ids and ids[0] is not None:
            found.setdefault(int(ids[0]), str(content))
    if not found:
        return None, frozenset()
    alternatives = sorted(set(found.values()), key=lambda c: (-len(c), c))
    return re.compile("|".join(re.escape(c) for c in alternatives)), frozenset(found)


@runtime_checkable
class Driver(Protocol):
    """A model backend.  See the module docstring for the semantics."""

    name: str
    limits: DriverLimits
    tokenizer: Tokenizer | None
    eos_token_ids: tuple[int, ...]

    def default_sampling(self) -> SamplingParams:
        """Sampling defaults (from the model's generation config, if any)."""
        ...

    def add(self, seq_id: int, token_ids: list[int], sampling: SamplingParams) -> None:
        """Admit a new sequence; its tokens are pending until steps compute them.

        Prefix caching may make some of them computed at once, so callers read
        :meth:`pending` afterwards instead of assuming ``len(token_ids)``.
        """
        ...

    def set_sampling(self, seq_id: int, sampling: SamplingParams) -> None: ...

    def append(self, seq_id: int, token_ids: list[int]) -> None:
        """Add tokens (a prompt, a tool result) to the end; they become pending."""
        ...

    def truncate(self, seq_id: int, length: int) -> None:
        """Keep the first ``length`` tokens; KV after that point is invalidated."""
        ...

    def fork(self, seq_id: int, child_id: int) -> None:
        """Create ``child_id`` sharing the parent's tokens and KV (copy on write)."""
        ...

    def tokens(self, seq_id: int) -> list[int]:
        """The sequence's tokens (a copy)."""
        ...

    def length(self, seq_id: int) -> int: ...

    def pending(self, seq_id: int) -> int:
        """Tokens at the end of the sequence that have no KV yet."""
        ...

    def kv_needed(self, seq_id: int, num_tokens: int) -> int:
        """Free device blocks required to compute ``num_tokens`` more pending
        tokens (including a swap-in if the sequence is on the host)."""
        ...

    def kv_free(self) -> int:
        """Free blocks in the device pool now."""
        ...

    def step(self, plan: StepPlan) -> dict[int, int | None]:
        """Run one forward pass; map each planned seq_id to its new token or None."""
        ...

    def free(self, seq_id: int) -> None:
        """Forget the sequence and release its blocks.  Unknown ids are ignored."""
        ...

    def swap_out(self, seq_id: int) -> None: ...

    def swap_in(self, seq_id: int) -> None: ...

    def drop(self, seq_id: int) -> None:
        """Free the sequence's KV but keep its tokens (they become pending)."""
        ...

    def cost(self, seq_id: int) -> KVCost: ...

    def close(self) -> None:
        """Release the model and pools.  Idempotent."""
        ...


class RequestSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One whole generation request for a request-level driver (sampling is the sequence's own,
    as set by ``add`` / ``set_sampling``)."""

    max_tokens: int  # the most tokens the request may produce (the server stops there)


class RequestResult(msgspec.Struct, kw_only=True):
    """What a request-level driver learnt when a request ended (filled in as it streams)."""

    finish_reason: str | None = None  # "eos" | "length" | None (the consumer stopped it)
    prompt_tokens: int | None = None  # the server's count (``usage``), when it gave one
    completion_tokens: int | None = None


@runtime_checkable
class RequestDriver(Driver, Protocol):
    """A driver that runs whole requests (see "Request-level drivers" above)."""

    request_level: bool  # True
    max_in_flight: int  # requests the kernel may have running at once on this driver

    def generate(self, seq_id: int, spec: RequestSpec, result: RequestResult) -> AsyncGenerator[int, None]:
        """Stream the tokens of one request continuing ``seq_id``; each is appended to the
        sequence before it is yielded.  Ends when the server ends the request (``result`` says
        why); closing the iterator early cancels the request on the server.  Failures are
        raised as :class:`lmos.errors.SyscallError` (``EIO`` once retries are spent)."""
        ...

    async def aclose(self) -> None:
        """Close connections (called on the event loop when the kernel stops)."""
        ...


def is_request_level(driver: Driver) -> bool:
    return bool(getattr(driver, "request_level", False))
