"""One peer of ``throughput.py``, run in a fresh process: reads a job on stdin, prints one JSON line.

Why a process per peer per round: an open lmos kernel (a second thread owning an
OpenMP team, see ``lmos/kernel/placement.py``) slows every other torch call in
its process, and a driver's or kernel's warm state (allocator, prefix cache)
would otherwise follow a peer from one round into the next.  A fresh process
gives every peer the same start: the same seeded weights, the same thread
count, one untimed warm-up run on prompts that share nothing with the timed
ones (except, in the shared-system-prompt mode, the system prompt itself).

The job (JSON on stdin): ``peer``, ``size``, ``device``, ``threads``, ``new``,
``prompts`` (the timed ones), ``warm`` (the warm-up ones), ``corrupt`` (perturb
one output token: the check in ``throughput.py`` must catch it) and, for the
``memory`` peer, ``quick``.  The answer: ``seconds``, ``tokens`` (per prompt),
``prompt_tokens``, ``prefix_hit_tokens`` (prompt tokens the prefix cache served
during the timed run), ``threads`` and ``peak_rss_mib``.
"""

from __future__ import annotations

import copy
import itertools
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

GREEDY_ARGS = dict(do_sample=False, pad_token_id=0)
SIZES: dict[str, dict[str, Any]] = {
    # the tests' shape (tests/models.py): fast enough for a CI check of the harness itself
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=256),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=4096),
    "large": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=8, vocab_size=32000),
}


def build_model(size: str, device: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # No eos token: every peer generates the full length, and greedy decoding is not altered by eos
    # suppression.  initializer_range 0.2 (as in tests/models.py) spreads a random model's logits, so
    # a greedy argmax is decided by the model and not by float rounding: the token-for-token check
    # against model.generate is then a check of the peer, not of luck.  The compute is unchanged.
    cfg = LlamaConfig(**SIZES[size], max_position_embeddings=2048, tie_word_embeddings=False,
                      initializer_range=0.2, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    dtype = torch.bfloat16 if device.type == "cuda" and size == "large" else torch.float32
    return model.to(device=device, dtype=dtype)


def new_driver(model: Any) -> Any:
    import inspect

    import torch

    from lmos.drivers.hf import HFDriver

    # every limit fixed, threads too: the peers must run with the same thread count (no auto-tuning;
    # an older lmos, run with --base, has no threads argument)
    has_threads = "threads" in inspect.signature(HFDriver).parameters
    fixed = {"threads": torch.get_num_threads()} if has_threads else {}
    return HFDriver(copy.deepcopy(model), block_size=16, kv_memory="128MiB", max_seqs=64,
                    max_tokens_per_step=2048, **fixed)


# ------------------------------------------------------------------ peers
def run_sequential(model: Any, prompts: list[list[int]], new: int, device: Any) -> list[list[int]]:
    """The reference: ``model.generate`` on one prompt at a time."""
    import torch

    outs = []
    for p in prompts:
        ids = torch.tensor([p], device=device)
        g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, **GREEDY_ARGS)
        outs.append(g[0, len(p):].tolist())
    return outs


def left_pad(prompts: list[list[int]], device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask


def run_padded(model: Any, prompts: list[list[int]], new: int, device: Any) -> list[list[int]]:
    """One left-padded static batch through ``model.generate``."""
    ids, mask = left_pad(prompts, device)
    g = model.generate(ids, attention_mask=mask, max_new_tokens=new, **GREEDY_ARGS)
    out: list[list[int]] = g[:, ids.shape[1]:].tolist()
    return out


def run_bare(model: Any, prompts: list[list[int]], new: int, device: Any) -> list[list[int]]:
    """The ceiling: a batched greedy forward loop over a ``DynamicCache``, no scheduling at all."""
    import torch
    from transformers import DynamicCache

    ids, mask = left_pad(prompts, device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    tok = out.logits[:, -1].argmax(-1)
    toks = [tok]
    ones = torch.ones(len(prompts), 1, dtype=mask.dtype, device=device)
    for _ in range(new - 1):
        mask = torch.cat([mask, ones], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache,
                    use_cache=True)
        tok = out.logits[:, -1].argmax(-1)
        toks.append(tok)
    res: list[list[int]] = torch.stack(toks, 1).tolist()
    return res


def run_generate_batch(model: Any, prompts: list[list[int]], new: int, device: Any) -> list[list[int]]:
    """transformers' own continuous batching (opt-in: slow on CPU), on this process's main thread."""
    from transformers import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=-1, pad_token_id=0)
    res = model.generate_batch(inputs=prompts, generation_config=cfg, progress_bar=False)
    ordered = sorted(res.values(), key=lambda r: int(str(r.request_id).split("_")[-1]))
    return [list(r.generated_tokens) for r in ordered]


def run_driver(driver: Any, prompts: list[list[int]], new: int, base_id: int = 0) -> list[list[int]]:
    """The paged driver alone under a minimal scheduler: admit all, chunk prefills, decode to the end."""
    from lmos.drivers.base import SamplingParams, StepItem, StepPlan

    greedy = SamplingParams(temperature=0.0)
    out: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        driver.add(base_id + i, p, greedy)
        out[base_id + i] = []
    live = set(out)
    while live:
        items: list[StepItem] = []
        budget = driver.limits.max_tokens
        free = driver.kv_free()
        for sid in sorted(live):
            if len(items) == driver.limits.max_seqs or budget == 0:
                break
            n = min(driver.pending(sid), budget)
            need = driver.kv_needed(sid, n)
            if n == 0 or need > free:
                continue
            free -= need
            budget -= n
            items.append(StepItem(sid, n))
        for sid, tok in driver.step(StepPlan(items=items)).items():
            if tok is not None:
                out[sid].append(tok)
                if len(out[sid]) == new:
                    live.discard(sid)
                    driver.free(sid)
    return [out[base_id + i] for i in range(len(prompts))]


def kernel_peer(driver: Any, job: dict[str, Any],
                sync: Callable[[], None]) -> tuple[float, list[list[int]], int]:
    """The full kernel: one process per request through ``Kernel.complete``, warm-up then timed run,
    in one open kernel (as a server runs them).  Returns seconds, tokens and the prefix-cache hit
    count before the timed run."""
    import anyio

    import lmos

    new = job["new"]

    async def batch(k: Any, prompts: list[list[int]]) -> list[list[int]]:
        results: list[list[int]] = [[] for _ in prompts]

        async def one(i: int) -> None:
            r = await k.complete(prompts[i], max_tokens=new, temperature=0)
            results[i] = list(r.token_ids)

        async with anyio.create_task_group() as tg:
            for i in range(len(prompts)):
                tg.start_soon(one, i)
        return results

    async def main() -> tuple[float, list[list[int]], int]:
        async with lmos.Kernel(model=driver, state_dir=":memory:") as k:
            await batch(k, job["warm"])
            hits = driver.table.alloc.hits
            sync()
            t0 = time.perf_counter()
            out = await batch(k, job["prompts"])
            sync()
            return time.perf_counter() - t0, out, hits

    return anyio.run(main)


# ------------------------------------------------------------------ memory figures
def budget_for(model: Any, tokens: int) -> str:
    """A KV budget (bytes) for ``tokens`` tokens with 50% headroom: no more memory than the figure needs."""
    c = model.config
    per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    per_token *= next(model.parameters()).element_size()
    return str(int(tokens * per_token * 1.5) + 2**20)


def memory_figures(model: Any, quick: bool) -> dict[str, Any]:
    """KV blocks used by sequences sharing a system prompt against the ideal; internal fragmentation."""
    import torch

    from lmos.drivers.base import SamplingParams, StepItem, StepPlan
    from lmos.drivers.hf import HFDriver

    greedy = SamplingParams(temperature=0.0)
    vocab = int(model.config.vocab_size)
    nseq, sys_len, own, gen = (8, 128, 32, 16) if quick else (32, 512, 64, 64)
    bs = 16
    d = HFDriver(copy.deepcopy(model), block_size=bs, max_seqs=64, max_tokens_per_step=2048,
                 kv_memory=budget_for(model, sys_len + nseq * (sys_len + own + gen)))
    g = torch.Generator().manual_seed(2)
    system = torch.randint(3, vocab, (sys_len,), generator=g).tolist()
    seqs = [system + torch.randint(3, vocab, (own,), generator=g).tolist() for _ in range(nseq)]
    fig: dict[str, Any] = {}
    with torch.inference_mode():
        # the first sequence computes the system prompt; later ones find it in the prefix cache
        d.add(0, seqs[0], greedy)
        d.step(StepPlan(items=[StepItem(0, d.pending(0) - 1, sample=False)]))
        d.free(0)
        peak = 0
        done = dict.fromkeys(range(nseq), 0)
        for i, s in enumerate(seqs):
            d.add(i, s, greedy)
        while any(v < gen for v in done.values()):
            items = [StepItem(i, d.pending(i)) for i in range(nseq) if done[i] < gen]
            for i, tok in d.step(StepPlan(items=items)).items():
                if tok is not None:
                    done[i] += 1
            peak = max(peak, d.limits.num_blocks - d.kv_free())
    ideal = -(-(sys_len + nseq * (own + gen)) // bs)
    d.close()
    fig.update(shared_blocks_used=peak, shared_blocks_ideal=ideal, shared_ratio=round(peak / ideal, 4))

    n, base = (4, 250) if quick else (16, 1000)
    d = HFDriver(copy.deepcopy(model), block_size=bs, kv_memory=budget_for(model, n * (base + 40)),
                 max_tokens_per_step=2048)
    g = torch.Generator().manual_seed(3)
    lengths = [base + int(x) for x in torch.randint(-24, 25, (n,), generator=g)]
    with torch.inference_mode():
        for i, length in enumerate(lengths):
            d.add(i, torch.randint(3, vocab, (length,), generator=g).tolist(), greedy)
            while d.pending(i) > 1:
                d.step(StepPlan(items=[StepItem(i, min(d.pending(i) - 1, 2048), sample=False)]))
    used = d.limits.num_blocks - d.kv_free()
    cached = sum(length - 1 for length in lengths)
    d.close()
    fig.update(frag_blocks=used, frag_tokens=cached, fragmentation=round(1 - cached / (used * bs), 4))
    return fig


# ------------------------------------------------------------------ one job
def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    model = build_model(job["size"], device)
    rss = lambda: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # noqa: E731
    if job["peer"] == "memory":
        return {**memory_figures(model, job["quick"]), "peak_rss_mib": rss()}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    peer, new, prompts = job["peer"], job["new"], job["prompts"]
    driver = new_driver(model) if peer in ("lmos", "lmos_driver") else None
    fns: dict[str, Callable[[list[list[int]]], list[list[int]]]] = {
        "sequential": lambda ps: run_sequential(model, ps, new, device),
        "padded": lambda ps: run_padded(model, ps, new, device),
        "bare": lambda ps: run_bare(model, ps, new, device),
        "generate_batch": lambda ps: run_generate_batch(model, ps, new, device),
        # sequence ids: the warm-up run's and the timed run's never meet
        "lmos_driver": lambda ps: run_driver(driver, ps, new, base_id=next(ids)),
    }
    ids = itertools.count(0, 1_000_000)
    with torch.inference_mode(peer != "generate_batch"):
        if peer == "lmos":
            seconds, out, hits_before = kernel_peer(driver, job, sync)
        else:
            fn = fns[peer]
            fn(job["warm"])  # untimed: the first run pays one-off costs (allocator, lazy imports)
            hits_before = driver.table.alloc.hits if driver is not None else 0
            sync()
            t0 = time.perf_counter()
            out = fn(prompts)
            sync()
            seconds = time.perf_counter() - t0
    hit_tokens = (driver.table.alloc.hits - hits_before) * driver.limits.block_size if driver else 0
    if job.get("corrupt"):  # the harness's own check: one wrong token must fail the whole run
        out[0][-1] = (out[0][-1] + 1) % int(model.config.vocab_size)
    return {"seconds": seconds, "tokens": out, "prompt_tokens": sum(len(p) for p in prompts),
            "prefix_hit_tokens": hit_tokens, "threads": torch.get_num_threads(), "peak_rss_mib": rss(),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "dtype": str(next(model.parameters()).dtype)}


def main() -> int:
    job = json.loads(sys.stdin.read())
    print(json.dumps(run_job(job)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
