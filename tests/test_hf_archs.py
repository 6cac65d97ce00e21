"""Architectures beyond Llama/Qwen2/Mistral work unchanged, or are refused at load.

The driver integrates only through transformers' ``AttentionInterface``, so
any decoder that dispatches attention the standard way must produce, token for
token, what ``model.generate`` produces alone: multi-head models without a
``num_key_value_heads`` (GPT-NeoX), QK-norm (Qwen3), logit soft-capping
(Gemma 2, against its eager attention), attention sinks (gpt-oss).  Models the
paged cache cannot serve (attention outside the interface, convolutional or
recurrent mixers) must fail at load with EINVAL, never run and print garbage.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from lmos.drivers.hf import HFDriver
from lmos.errors import Errno, SyscallError
from tests.models import ARCHS, Loop, prompt, tiny_model

BASE: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            vocab_size=256, max_position_embeddings=512, initializer_range=0.2,
                            tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=0)
GQA = dict(num_key_value_heads=2)

# arch -> (config overrides, reference attention implementation)
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "qwen3": ({**GQA, "head_dim": 16}, "sdpa"),
    "phi3": (GQA, "sdpa"),
    "gemma": ({**GQA, "head_dim": 16}, "sdpa"),
    "gpt_neox": ({}, "sdpa"),  # plain multi-head attention, partial rotary
    "starcoder2": ({**GQA, "sliding_window": 12}, "sdpa"),
    # a small cap, so that ignoring it would change the logits a lot
    "gemma2": ({**GQA, "head_dim": 16, "attn_logit_softcapping": 1.0, "sliding_window": 12}, "eager"),
    "gpt_oss": ({**GQA, "head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 2,
                 "sliding_window": 12}, "eager"),
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def build(arch: str, attn: str, **over: Any) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(arch, **{**BASE, **over})
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).eval()
    if arch == "gpt_oss":  # strong sinks: an attention that ignored them would not match
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.fill_(2.0)
    return model


def generate(model: Any, ids: list[int], new: int) -> list[int]:
    with torch.inference_mode():
        t = torch.tensor([ids])
        out = model.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("arch", sorted(CASES))
@pytest.mark.parametrize("bs", [4, 16])
def test_other_architectures_equal_generate(arch: str, bs: int) -> None:
    over, attn = CASES[arch]
    model = build(arch, attn, **over)
    prompts = {0: prompt(10, 5), 1: prompt(11, 37), 2: prompt(12, 20)}
    new = {0: 14, 1: 8, 2: 11}
    refs = {sid: generate(model, p, new[sid]) for sid, p in prompts.items()}
    d = HFDriver(copy.deepcopy(model), block_size=bs, kv_memory="4MiB", max_seqs=8, max_tokens_per_step=64)
    loop = Loop(d, chunk=16)  # chunked prefill next to decodes
    for sid, p in prompts.items():
        loop.add(sid, p, new[sid])
    assert loop.run() == refs


@pytest.mark.parametrize("arch", sorted(CASES) + list(ARCHS))
def test_unmasked_decodes_equal_generate(arch: str) -> None:
    """Decodes whose every key is visible (one sequence alone, or rows of one length) attend without
    a mask and write the working copy by slicing: still token for token ``generate``, and past the
    sliding window (12 tokens) the mask must come back."""
    if arch in CASES:
        over, attn = CASES[arch]
        model = build(arch, attn, **over)
    else:
        model = tiny_model(arch)
    prompts = {0: prompt(20, 5), 1: prompt(21, 9), 2: prompt(22, 9)}
    refs = {sid: generate(model, p, 20) for sid, p in prompts.items()}
    d = HFDriver(copy.deepcopy(model), block_size=4, kv_memory="4MiB", max_seqs=8, max_tokens_per_step=64)
    alone = Loop(d)  # one sequence
    alone.add(0, prompts[0], 20)
    pair = Loop(d)  # two rows at the same length
    for sid in (1, 2):
        pair.add(sid, prompts[sid], 20)
    assert {**alone.run(), **pair.run()} == refs
    assert d._decode_cache is not None and d._decode_cache.hits > 30  # the fast path ran


def test_softcap_and_sinks_matter() -> None:
    """The two cases above would catch an attention that ignored the cap or the sinks."""
    for arch in ("gemma2", "gpt_oss"):
        over, attn = CASES[arch]
        model = build(arch, attn, **over)
        no_cap = {"attn_logit_softcapping": None} if arch == "gemma2" else {}
        plain = build(arch, attn, **{**over, **no_cap})
        if arch == "gpt_oss":
            with torch.no_grad():
                for layer in plain.model.layers:
                    layer.self_attn.sinks.fill_(-1e4)  # sinks that take no probability mass
        ids = prompt(13, 30)
        assert generate(model, ids, 12) != generate(plain, ids, 12)


@pytest.mark.parametrize(("arch", "over", "why"), [
    ("bloom", {}, "AttentionInterface"),  # computes attention itself (ALiBi)
    ("lfm2", {**GQA, "layer_types": ["conv", "full_attention"]}, "1 of 2 layers"),
    ("falcon_h1", GQA, "packed in one row"),  # every layer: attention beside a Mamba mixer
])
def test_models_the_paged_cache_cannot_serve_are_refused(arch: str, over: dict[str, Any], why: str) -> None:
    model = build(arch, "eager", **over)
    with pytest.raises(SyscallError) as err:
        HFDriver(model, kv_memory="4MiB")
    assert err.value.errno is Errno.EINVAL
    assert why in err.value.message
