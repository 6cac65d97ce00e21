"""Sizing a driver's limits from the machine and the model at start, instead of fixed defaults.

Why: ``max_seqs=64`` and 2,048 tokens per step held on no machine in particular.
On a 2-core CPU a small model still gains throughput from 64 to 256 sequences
per step (issue 16: 3,323 -> 4,907 tok/s at 256 requests), while a large model
on the same CPU gains nothing past 16 and only makes every token wait longer.
So at start the driver times a few forward passes of the real model (with the
load-time :class:`~lmos.drivers.hf_probe.Probe` standing in for attention, so no
KV is needed) and picks:

* ``max_seqs``: the largest of 16 / 64 / 256 sequences per decode step up to
  which doubling the batch still paid (tokens per second grew by at least
  ``GAIN`` per 4x step), bounded by what the KV budget holds at ``MIN_CONTEXT``
  tokens per sequence;
* ``max_tokens_per_step``: the prefill chunk that one step computes in about
  ``STEP_TARGET`` seconds (a longer chunk stalls every running decode), a
  multiple of 256 between ``max(256, max_seqs)`` and 8,192;
* ``threads``: torch's intra-op threads: one when a 64-token decode pass runs at least
  ``ONE_THREAD_MIN`` as fast on one thread as on all (vLLM's CPU backend makes the same choice
  on 2 cores: one model thread, the other core for its scheduler), else the physical cores;
  as configured when ``threads`` is set.

KV blocks follow from the memory budget as before (``kv_memory``).  Any value
set in the configuration (non-zero) is used as given, without a probe for it.
The probe costs a handful of forward passes (about 0.1-0.3 s for the built-in
model on a 2-core CPU) and stops after ``PROBE_BUDGET`` seconds on a busy
machine, deciding from what it measured by then (unmeasured larger batches
are not chosen).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lmos.drivers.hf_probe import Probe

GAIN = 1.15  # a 4x larger decode batch must raise tokens/s by this factor to be worth its latency
MIN_CONTEXT = 256  # tokens of KV each of max_seqs sequences should find room for
STEP_TARGET = {"cpu": 0.2, "cuda": 0.05}  # seconds a full prefill step may take
SIZES = (16, 64, 256)
PREFILL = 512  # tokens of the prefill pass that measures the per-token cost
ONE_THREAD_MIN = 0.8  # one torch thread is chosen when it decodes at least this fraction as fast as all
FALLBACK_SEQS, FALLBACK_TOKENS = 64, 2048  # when the probe ran out of time before measuring
PROBE_BUDGET = 0.4  # seconds the probe may take; past it, what is measured decides


@dataclass
class Tuning:
    """What the driver chose at start, and why (shown by ``models`` / ``lmos status``)."""

    max_seqs: int
    max_tokens_per_step: int
    threads: int
    source: dict[str, str] = field(default_factory=dict)  # value name -> "auto" or "config"
    decode_tok_s: dict[int, float] = field(default_factory=dict)  # measured, per batch size
    prefill_tok_s: float = 0.0
    probe_seconds: float = 0.0
    num_blocks: int = 0  # set by the driver once the pool is sized

    def summary(self) -> str:
        s = self.source
        return (f"max_seqs {self.max_seqs} ({s.get('max_seqs', 'config')}), "
                f"{self.max_tokens_per_step} tokens/step ({s.get('max_tokens_per_step', 'config')}), "
                f"{self.num_blocks} KV blocks (kv_memory), {self.threads or '-'} threads "
                f"({s.get('threads', 'default')})")

    def as_dict(self) -> dict[str, Any]:
        return {"max_seqs": self.max_seqs, "max_tokens_per_step": self.max_tokens_per_step,
                "num_blocks": self.num_blocks, "threads": self.threads, "source": dict(self.source),
                "decode_tok_s": {str(k): round(v, 1) for k, v in self.decode_tok_s.items()},
                "prefill_tok_s": round(self.prefill_tok_s, 1), "probe_seconds": round(self.probe_seconds, 3)}


def _timed_forward(model: Any, tokens: int, keep_all: bool, device: torch.device, keep_arg: bool) -> float:
    vocab = int(getattr(model.config, "vocab_size", 0) or 100)  # a tiny vocabulary has no id 99
    ids = torch.randint(min(3, vocab - 1), min(100, vocab), (1, tokens), device=device)
    kw: dict[str, Any] = {}
    if keep_arg and not keep_all:
        kw["logits_to_keep"] = 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    model(input_ids=ids, position_ids=torch.zeros_like(ids), use_cache=False, lmos_batch=Probe(), **kw)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def tune(model: Any, device: torch.device, *, max_seqs: int, max_tokens_per_step: int, kv_tokens: int,
         threads: int = 0, keep_arg: bool = True) -> Tuning:
    """Choose the limits left at 0 (auto); keep the others.  ``kv_tokens``: what the KV budget holds."""
    source: dict[str, str] = {}
    if threads > 0 and device.type == "cpu":
        torch.set_num_threads(threads)
        source["threads"] = "config"
    elif device.type == "cpu":
        source["threads"] = "auto"
    n_threads = torch.get_num_threads() if device.type == "cpu" else 0
    tuning = Tuning(max_seqs=max_seqs, max_tokens_per_step=max_tokens_per_step, threads=n_threads,
                    source=source)
    source["max_seqs"] = "config" if max_seqs > 0 else "auto"
    source["max_tokens_per_step"] = "config" if max_tokens_per_step > 0 else "auto"
    if max_seqs > 0 and max_tokens_per_step > 0 and not (source.get("threads") == "auto" and n_threads > 1):
        return tuning
    start = time.perf_counter()
    deadline = start + PROBE_BUDGET

    def timed(tokens: int, keep_all: bool) -> float:
        """Best of two passes, or of one when the first was slow (a busy machine: keep startup short)."""
        first = _timed_forward(model, tokens, keep_all, device, keep_arg)
        if first > PROBE_BUDGET / 8 or time.perf_counter() > deadline:
            return first
        return min(first, _timed_forward(model, tokens, keep_all, device, keep_arg))

    with torch.inference_mode():
        _timed_forward(model, SIZES[0], True, device, keep_arg)  # warm-up: one-off allocations
        if source["threads"] == "auto" and n_threads > 1:
            # One torch thread when it decodes nearly as fast as all: the other cores then serve the
            # kernel's own work (scheduling, syscalls) instead of an OpenMP worker spinning between
            # ops, and on a busy machine one thread is far faster (workers spin for descheduled
            # partners, docs/performance.md).  Measured first: it matters most when time is short.
            multi = 64 / timed(64, True)
            torch.set_num_threads(1)
            one = 64 / timed(64, True)
            if one >= ONE_THREAD_MIN * multi:
                tuning.threads, source["threads"] = 1, "auto: 1 decodes as fast"
                tuning.decode_tok_s[64] = one
            else:
                torch.set_num_threads(n_threads)
                tuning.decode_tok_s[64] = multi
        for n in SIZES if max_seqs <= 0 else ():
            if n in tuning.decode_tok_s:
                continue
            if time.perf_counter() > deadline:  # out of time: larger batches stay unproven
                break
            tuning.decode_tok_s[n] = n / timed(n, True)
        if max_tokens_per_step <= 0 and time.perf_counter() < deadline:
            tuning.prefill_tok_s = PREFILL / timed(PREFILL, False)
    tuning.probe_seconds = time.perf_counter() - start
    if max_seqs <= 0:
        rates = tuning.decode_tok_s
        chosen = FALLBACK_SEQS  # too busy a machine to compare two sizes: the old default
        if len(rates) >= 2:
            chosen = SIZES[0]
            for small, big in itertools.pairwise(SIZES):
                if big not in rates or rates[big] < GAIN * rates[small]:
                    break
                chosen = big
        # every sequence should find room for MIN_CONTEXT tokens of KV
        tuning.max_seqs = max(1, min(chosen, kv_tokens // MIN_CONTEXT)) if kv_tokens >= MIN_CONTEXT else 1
    if max_tokens_per_step <= 0:
        target = STEP_TARGET.get(device.type, STEP_TARGET["cuda"])
        tokens = int(target * tuning.prefill_tok_s) // 256 * 256 if tuning.prefill_tok_s else FALLBACK_TOKENS
        tuning.max_tokens_per_step = max(max(256, tuning.max_seqs), min(tokens, 8192))
    return tuning
