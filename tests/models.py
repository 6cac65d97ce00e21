"""Tiny random-init models and a driver-level step loop for the HF driver tests.

No downloads: models are built from configs.  ``initializer_range`` is raised
above the usual 0.02 so the logits of a random model are spread out and a
greedy argmax is not decided by float rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from lmos.drivers.base import SamplingParams, StepItem, StepPlan
from lmos.drivers.hf import HFDriver

ARCHS = ("llama", "qwen2", "mistral")
GREEDY = SamplingParams(temperature=0.0)


def tiny_config(arch: str, **over: Any) -> Any:
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common: dict[str, Any] = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
        initializer_range=0.2,
        tie_word_embeddings=False,
        # no end-of-sequence token: generate must run the full length, and suppressing an eos id
        # (min_new_tokens) would make generate deviate from plain greedy decoding
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    common.update(over)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "mistral":
        # a short window so the sliding-window masks are exercised by the equality checks
        common.setdefault("sliding_window", 24)
        return MistralConfig(**common)
    raise ValueError(arch)


_MODELS: dict[str, Any] = {}


def tiny_model(arch: str) -> Any:
    """A reference model (sdpa attention) built once per architecture, seed-stable."""
    if arch not in _MODELS:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(tiny_config(arch), attn_implementation="sdpa")
        _MODELS[arch] = model.eval()
    return _MODELS[arch]


def save_model_dir(model: Any, path: Any) -> None:
    """``model`` as a directory the HF driver loads: its weights and a byte-level tokenizer of its
    vocabulary size (a directory without a tokenizer is refused at load)."""
    from lmos.train.tokenizer import byte_tokenizer

    model.save_pretrained(str(path))
    byte_tokenizer(model.config.vocab_size).save_pretrained(str(path))


def make_driver(arch: str, block_size: int = 16, **kw: Any) -> HFDriver:
    """A driver over a private copy of the reference model (the driver switches its attention)."""
    kw.setdefault("kv_memory", "4MiB")
    kw.setdefault("max_seqs", 16)
    kw.setdefault("max_tokens_per_step", 256)
    return HFDriver(copy.deepcopy(tiny_model(arch)), block_size=block_size, **kw)


_REFS: dict[tuple[str, tuple[int, ...], int], list[int]] = {}


def reference(arch: str, prompt: list[int], new_tokens: int) -> list[int]:
    """What ``model.generate`` alone produces greedily (the tiny configs have no eos token)."""
    key = (arch, tuple(prompt), new_tokens)
    if key not in _REFS:
        model = tiny_model(arch)
        with torch.inference_mode():
            ids = torch.tensor([prompt])
            out = model.generate(
                ids,
                # explicit mask: with pad_token_id set, generate would otherwise mask every
                # token that happens to equal it, which is not what the prompt means
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        _REFS[key] = out[0, len(prompt) :].tolist()
    return _REFS[key]


def prompt(seed: int, length: int, vocab: int = 256) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (length,), generator=g).tolist()


class Loop:
    """Plays the kernel's role at driver level: plans steps within the driver's limits.

    Each running sequence wants ``want[seq]`` new tokens; prefill is chunked to
    ``chunk`` tokens; plans respect ``pending()``, ``max_seqs``, ``max_tokens``
    and ``kv_needed``/``kv_free``.  ``hook(step_no)`` runs before each step so
    tests can preempt, fork or admit sequences mid-run.
    """

    def __init__(self, driver: HFDriver, chunk: int = 10_000) -> None:
        self.d = driver
        self.chunk = chunk
        self.want: dict[int, int] = {}
        self.out: dict[int, list[int]] = {}
        self.paused: set[int] = set()
        self.steps = 0

    def add(self, seq_id: int, tokens: list[int], new_tokens: int, sampling: SamplingParams = GREEDY) -> None:
        self.d.add(seq_id, tokens, sampling)
        self.want[seq_id] = new_tokens
        self.out[seq_id] = []

    def plan(self) -> StepPlan:
        items: list[StepItem] = []
        budget = self.d.limits.max_tokens
        free = self.d.kv_free()
        for seq_id, want in self.want.items():
            if seq_id in self.paused or len(self.out[seq_id]) >= want:
                continue
            if len(items) == self.d.limits.max_seqs or budget == 0:
                break
            n = min(self.d.pending(seq_id), budget, self.chunk)
            if n == 0:
                continue
            need = self.d.kv_needed(seq_id, n)
            if need > free:
                continue
            free -= need
            budget -= n
            items.append(StepItem(seq_id, n))
        return StepPlan(items=items)

    def run(self, hook: Callable[[int], None] | None = None, max_steps: int = 10_000) -> dict[int, list[int]]:
        while self.steps < max_steps:
            if hook is not None:
                hook(self.steps)
            plan = self.plan()
            if not plan.items:
                if all(len(self.out[s]) >= w for s, w in self.want.items() if s not in self.paused):
                    break
                raise AssertionError("no progress possible")
            for seq_id, tok in self.d.step(plan).items():
                if tok is not None:
                    self.out[seq_id].append(tok)
            self.steps += 1
        return self.out
