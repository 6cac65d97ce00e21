"""HFDriver: loading, sampling, limits and errors, sliding windows, CUDA parity."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from lmos.drivers.base import Driver, KVLocation, SamplingParams, StepItem, StepPlan
from lmos.drivers.hf import HFDriver
from lmos.drivers.sampling import sample
from lmos.errors import Errno, SyscallError
from tests.models import GREEDY, Loop, make_driver, prompt, reference, save_model_dir, tiny_config, tiny_model


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _errno(fn: Any, *args: Any) -> Errno:
    with pytest.raises(SyscallError) as e:
        fn(*args)
    return e.value.errno


# ------------------------------------------------------------------- loading
def test_bad_path_is_enoent_without_hub_lookup(tmp_path: Path) -> None:
    assert _errno(HFDriver.from_pretrained, str(tmp_path / "nope")) is Errno.ENOENT
    assert _errno(HFDriver.from_pretrained, str(tmp_path)) is Errno.ENOENT  # no config.json
    assert _errno(HFDriver.from_pretrained, "meta-llama/Llama-2-7b-hf") is Errno.ENOENT  # a hub id


def _save_tokenizer(path: Path) -> None:
    """A tiny byte-level BPE vocabulary of the model's own tokenizer class (no download)."""
    from transformers import Qwen2Tokenizer

    vocab = {"<unk>": 0, "<|endoftext|>": 1, "<pad>": 2}
    vocab.update({c: i + 3 for i, c in enumerate("abcdefghij\u0120")})  # \u0120: byte-level space
    Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<unk>").save_pretrained(str(path))


def test_from_pretrained_saved_model(tmp_path: Path) -> None:
    model = copy.deepcopy(tiny_model("qwen2"))
    model.generation_config.eos_token_id = [2, 5]
    model.save_pretrained(str(tmp_path))
    assert _errno(HFDriver.from_pretrained, str(tmp_path)) is Errno.ENOENT  # no tokenizer saved yet
    _save_tokenizer(tmp_path)
    d = HFDriver.from_pretrained(str(tmp_path), device="cpu", kv_memory="2MiB", block_size=8)
    assert isinstance(d, Driver)
    assert d.eos_token_ids == (2, 5)
    assert d.default_sampling().temperature == 0.0
    assert d.model.dtype == torch.float32
    assert d.tokenizer is not None
    ids = d.tokenizer.encode("abc ja")
    assert ids == [3, 4, 5, 13, 12, 3] and d.tokenizer.decode(ids) == "abc ja"
    p = prompt(50, 20)
    loop = Loop(d)
    loop.add(0, p, 8)
    assert loop.run()[0] == reference("qwen2", p, 8)
    d.close()
    d.close()  # idempotent


def test_default_sampling_follows_generation_config() -> None:
    model = copy.deepcopy(tiny_model("llama"))
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.7
    model.generation_config.top_p = 0.9
    d = HFDriver(model, kv_memory="1MiB")
    s = d.default_sampling()
    assert (s.temperature, s.top_p, s.top_k) == (0.7, 0.9, 50)


# ------------------------------------------------------------------ sampling
def _run_seeded(companions: int) -> list[int]:
    d = make_driver("llama", 16)
    loop = Loop(d, chunk=8)
    sp = SamplingParams(temperature=0.9, top_k=40, top_p=0.95, seed=7)
    loop.add(0, prompt(60, 12), 16, sp)
    for i in range(companions):
        other = SamplingParams(temperature=1.0, seed=100 + i) if i % 2 else SamplingParams(temperature=1.2)
        loop.add(i + 1, prompt(61 + i, 5 + 7 * i), 20, other)
    return loop.run()[0]


def test_seeded_sampling_ignores_batch_companions() -> None:
    alone = _run_seeded(0)
    assert alone == _run_seeded(3) == _run_seeded(5)
    assert len(set(alone)) > 3  # really sampled, not a constant


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    greedy = logits.argmax(-1).tolist()
    params = [SamplingParams(temperature=1.5, top_k=1), SamplingParams(temperature=1.0, top_p=1e-6)] * 2
    gens = [None, torch.Generator().manual_seed(1)] * 2
    assert sample(logits.clone(), params, gens, [[]] * 4, torch.Generator().manual_seed(0)) == greedy


def test_sampling_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]))
    rng = torch.Generator().manual_seed(0)
    counts = [0, 0, 0, 0]
    for _ in range(2000):
        counts[sample(logits.clone(), [SamplingParams(temperature=1.0)], [None], [[]], rng)[0]] += 1
    assert counts[3] == 0 and abs(counts[0] / 2000 - 0.5) < 0.05 and abs(counts[2] / 2000 - 0.2) < 0.05
    counts = [0, 0, 0, 0]
    for _ in range(1000):  # top_p 0.7 keeps {0, 1}: 0.5 + 0.3 covers it
        counts[sample(logits.clone(), [SamplingParams(top_p=0.7)], [None], [[]], rng)[0]] += 1
    assert counts[2] == 0 and counts[1] > 200


def test_repetition_penalty_matches_generate() -> None:
    p = prompt(70, 15)
    model = tiny_model("llama")
    with torch.inference_mode():
        ref = model.generate(
            torch.tensor([p]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
            repetition_penalty=1.5, pad_token_id=0,
        )[0, len(p) :].tolist()
    d = make_driver("llama")
    loop = Loop(d)
    loop.add(0, p, 12, SamplingParams(temperature=0.0, repetition_penalty=1.5))
    assert loop.run()[0] == ref


# ------------------------------------------------------------ limits, errors
def test_errors() -> None:
    d = make_driver("llama", 16, kv_memory="64KiB")  # 64KiB / (512 B/token * 16) = 8 blocks
    assert d.limits.num_blocks == 8
    assert _errno(d.add, 0, [1] * 600, GREEDY) is Errno.E2BIG
    assert _errno(d.add, 0, [1, 999], GREEDY) is Errno.EINVAL
    assert _errno(d.add, 0, [1], SamplingParams(temperature=-1)) is Errno.EINVAL
    assert _errno(d.pending, 42) is Errno.ENOENT
    d.add(0, prompt(80, 100), GREEDY)
    assert _errno(d.add, 0, [1], GREEDY) is Errno.EEXIST
    assert _errno(d.step, StepPlan(items=[StepItem(0, 101)])) is Errno.EINVAL  # more than pending
    assert _errno(d.step, StepPlan(items=[StepItem(0, 50), StepItem(0, 1)])) is Errno.EINVAL
    d.add(1, prompt(81, 100), GREEDY)
    assert d.kv_needed(1, 100) == 7
    d.step(StepPlan(items=[StepItem(0, 99)]))
    assert d.kv_free() == 1
    assert _errno(d.step, StepPlan(items=[StepItem(1, 100)])) is Errno.ENOMEM
    assert d.pending(1) == 100  # a refused step changes nothing
    d.free(0)
    d.free(0)  # unknown ids are ignored
    assert d.kv_free() == 8


def test_cost_estimates_follow_measurements() -> None:
    d = make_driver("llama", 4, max_tokens_per_step=512)
    d.add(0, prompt(90, 200), GREEDY)
    before = d.prefill_tok_s
    d.step(StepPlan(items=[StepItem(0, 200)]))
    assert d.prefill_tok_s != before
    c = d.cost(0)
    assert c.location is KVLocation.DEVICE and c.blocks == 50 and c.exclusive_blocks == 50
    assert c.recompute_tokens == 200 and c.swap_bytes == 50 * d.pool.block_bytes
    assert c.recompute_seconds > 0 and c.swap_seconds > 0
    d.swap_out(0)
    assert d.cost(0).swap_bytes == c.swap_bytes and d.kv_free() == d.limits.num_blocks
    d.swap_in(0)
    assert d.pool.swap_used == 0


def test_sliding_window_matches_full_forward() -> None:
    """A window much shorter than the context, against the uncached forward (the model's definition).

    The parity tests check Mistral's window against ``generate``; this one
    also crosses block boundaries inside the window (block 4, window 12).
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_config(tiny_config("mistral", sliding_window=12)).eval()
    d = HFDriver(copy.deepcopy(model), kv_memory="2MiB", block_size=4)
    p = prompt(95, 30)
    loop = Loop(d, chunk=7)
    loop.add(0, p, 10)
    out = loop.run()[0]
    with torch.inference_mode():
        logits = model(torch.tensor([p + out]), use_cache=False).logits[0]
    assert logits[len(p) - 1 : -1].argmax(-1).tolist() == out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_cuda_equals_generate(arch: str) -> None:
    model = tiny_model(arch)
    gpu = copy.deepcopy(model).to("cuda")
    d = HFDriver(copy.deepcopy(gpu), kv_memory="8MiB", block_size=16, max_tokens_per_step=64)
    loop = Loop(d, chunk=16)
    ps = [prompt(100 + i, 6 + 13 * i) for i in range(5)]
    for i, p in enumerate(ps):
        loop.add(i, p, 12)
    out = loop.run()
    for i, p in enumerate(ps):
        with torch.inference_mode():
            ref = gpu.generate(
                torch.tensor([p], device="cuda"), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                pad_token_id=0,
            )[0, len(p) :].tolist()
        assert out[i] == ref, i


def test_identical_prompts_admitted_together_end_up_sharing() -> None:
    """Neither can hit the prefix cache at admission; the commit deduplicates their full blocks."""
    d = make_driver("llama", 8)
    p = prompt(120, 40)
    loop = Loop(d)
    loop.add(0, p, 5)
    loop.add(1, p, 5)
    assert d.pending(0) == d.pending(1) == 40
    out = loop.run()
    assert out[0] == out[1] == reference("llama", p, 5)
    a, b = d.table.get(0), d.table.get(1)
    assert a.blocks[:5] == b.blocks[:5]  # the 5 full prompt blocks are held once
    assert d.limits.num_blocks - d.kv_free() == len(a.blocks) + len(b.blocks) - 5
    d.table.alloc.check()


def test_kv_budget_parsing() -> None:
    from lmos.drivers.kv_pool import CPU_FRACTION_CAP, available_memory, budget_bytes

    cpu = torch.device("cpu")
    assert budget_bytes("512MiB", cpu) == 512 * 2**20
    assert budget_bytes("2000000", cpu) == 2_000_000
    frac = budget_bytes("0.25", cpu)
    assert 0 < frac <= min(available_memory(cpu) // 4 + 2**20, CPU_FRACTION_CAP)
    for bad in ("-1", "0", "lots"):
        assert _errno(budget_bytes, bad, cpu) is Errno.EINVAL


def test_swap_space_is_bounded() -> None:
    d = make_driver("llama", 4, swap_memory="4KiB")  # one block of 4 tokens is 2KiB here
    loop = Loop(d)
    loop.add(0, prompt(130, 12), 1)
    loop.run()
    assert _errno(d.swap_out, 0) is Errno.ENOMEM
    assert d.cost(0).location is KVLocation.DEVICE  # a refused swap leaves the KV where it was


def test_unwritten_pool_memory_never_leaks_into_attention() -> None:
    """The CPU pool is allocated uninitialised: poison it and check padded gathers stay finite."""
    d = make_driver("qwen2", 16)
    for t in d.pool.keys + d.pool.values:
        t.fill_(float("nan"))
    loop = Loop(d, chunk=16)
    ps = [prompt(140 + i, 3 + 11 * i) for i in range(4)]
    for i, p in enumerate(ps):
        loop.add(i, p, 6)
    out = loop.run()
    for i, p in enumerate(ps):
        assert out[i] == reference("qwen2", p, 6)


def test_plan_limits_and_moves_in_one_plan() -> None:
    d = make_driver("llama", 8, max_seqs=2, max_tokens_per_step=32)
    for i in range(3):
        d.add(i, prompt(150 + i, 20), GREEDY)
    three = StepPlan(items=[StepItem(i, 1) for i in range(3)])
    assert _errno(d.step, three) is Errno.EINVAL
    assert _errno(d.step, StepPlan(items=[StepItem(0, 20), StepItem(1, 20)])) is Errno.EINVAL  # 40 > 32
    d.step(StepPlan(items=[StepItem(0, 20), StepItem(1, 12)]))
    # swap 0 out and straight back in, and compute with it, all in one plan
    res = d.step(StepPlan(items=[StepItem(0, 1), StepItem(1, 8)], swap_out=[0], swap_in=[0]))
    assert res[0] is not None and res[1] is not None
    assert _errno(d.step, StepPlan(items=[StepItem(0, 1)], swap_out=[0])) is Errno.EINVAL  # on the host


def test_fork_of_seeded_sequence_continues_its_stream() -> None:
    d = make_driver("llama", 4)
    d.add(0, prompt(160, 10), SamplingParams(temperature=1.0, seed=3))
    d.step(StepPlan(items=[StepItem(0, 10)]))
    d.fork(0, 1)
    res = d.step(StepPlan(items=[StepItem(0, 1), StepItem(1, 1)]))
    assert res[0] == res[1]  # same context, same generator state
    d.set_sampling(1, SamplingParams(temperature=0.0))
    assert d.default_sampling().temperature == 0.0
    assert d.tokens(0) == d.tokens(1) and d.length(1) == 12


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_from_pretrained_and_swap(tmp_path: Path) -> None:
    """The real loading path onto the GPU (accelerate placement); a swap round trip via pinned memory."""
    save_model_dir(copy.deepcopy(tiny_model("llama")), tmp_path)
    d = HFDriver.from_pretrained(str(tmp_path), device="cuda", kv_memory="0.01", block_size=16)
    assert d.device.type == "cuda" and d.model.dtype == torch.float32  # "auto" keeps the checkpoint's
    p = prompt(170, 40)
    loop = Loop(d, chunk=16)
    loop.add(0, p, 12)

    def hook(step: int) -> None:
        if step == 5:
            d.step(StepPlan(swap_out=[0]))
            d.step(StepPlan(swap_in=[0]))

    out = loop.run(hook)[0]
    gpu = copy.deepcopy(tiny_model("llama")).to("cuda")
    with torch.inference_mode():
        ref = gpu.generate(torch.tensor([p], device="cuda"), max_new_tokens=12, do_sample=False)
    assert out == ref[0, len(p) :].tolist()


def test_failed_forward_is_eio_and_changes_nothing() -> None:
    d = make_driver("llama", 4)
    p = prompt(180, 15)
    loop = Loop(d)
    loop.add(0, p, 6)
    real = d.model.forward
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("device lost")
        return real(*args, **kwargs)

    d.model.forward = flaky
    with pytest.raises(SyscallError) as e:
        loop.run()
    assert e.value.errno is Errno.EIO and d.pending(0) == 1
    assert loop.run()[0] == reference("llama", p, 6)
