"""Random interleavings of every driver operation: every sampled token stays the greedy choice.

After any mix of admissions, chunked steps, swaps, drops, forks, truncations
and appends, each token the driver sampled must equal the argmax of the plain
(uncached) model over the tokens before it.  One forward pass per surviving
sequence checks a whole history, so hundreds of operations cost little.
"""

from __future__ import annotations

import random

import pytest
import torch

from lmos.drivers.base import KVLocation, StepItem, StepPlan
from lmos.errors import SyscallError
from tests.models import make_driver, prompt, tiny_model


@pytest.mark.parametrize(("arch", "bs", "seed"), [("llama", 1, 0), ("qwen2", 4, 1), ("mistral", 16, 2)])
def test_random_operations_keep_greedy_outputs(arch: str, bs: int, seed: int) -> None:
    torch.set_num_threads(1)
    rng = random.Random(seed)
    d = make_driver(arch, bs, kv_memory="192KiB", max_seqs=6, max_tokens_per_step=48)
    sampled: dict[int, set[int]] = {}  # seq -> positions whose token the driver sampled
    next_id = 0
    for _ in range(160):
        op = rng.random()
        live = sorted(sampled)
        if op < 0.12 or not live:
            try:
                d.add(next_id, prompt(rng.randrange(10**6), rng.randint(1, 40)), d.default_sampling())
                sampled[next_id] = set()
            except SyscallError:
                pass
            next_id += 1
            continue
        sid = rng.choice(live)
        if op < 0.17:
            d.fork(sid, next_id)
            sampled[next_id] = set(sampled[sid])
            next_id += 1
        elif op < 0.21:
            cut = rng.randint(1, d.length(sid))
            d.truncate(sid, cut)
            sampled[sid] = {p for p in sampled[sid] if p < cut}
        elif op < 0.25:
            d.append(sid, prompt(rng.randrange(10**6), rng.randint(1, 6)))
        elif op < 0.30:
            d.step(StepPlan(swap_out=[sid]))
        elif op < 0.33:
            d.step(StepPlan(drop=[sid]))
        elif op < 0.36:
            d.free(sid)
            del sampled[sid]
        else:  # a step over a random subset, within the limits
            plan = StepPlan()
            budget, free = d.limits.max_tokens, d.kv_free()
            for s in rng.sample(live, min(len(live), d.limits.max_seqs)):
                if d.cost(s).location is KVLocation.HOST:
                    need = d.kv_needed(s, 0)
                    if need > free:
                        continue
                    plan.swap_in.append(s)
                    free -= need
                n = min(d.pending(s), budget, rng.choice([1, 3, 17, 48]))
                if n == 0 or d.length(s) >= d.limits.max_model_len:
                    continue
                need = d.kv_needed(s, n) - (d.kv_needed(s, 0) if s in plan.swap_in else 0)
                if need > free:
                    continue
                free -= need
                budget -= n
                plan.items.append(StepItem(s, n))
            for s, tok in d.step(plan).items():
                if tok is not None:
                    sampled[s].add(d.length(s) - 1)
        d.table.alloc.check()
    model = tiny_model(arch)
    checked = 0
    for sid, positions in sampled.items():
        if not positions:
            continue
        toks = d.tokens(sid)
        with torch.inference_mode():
            best = model(torch.tensor([toks]), use_cache=False).logits[0].argmax(-1).tolist()
        for p in sorted(positions):
            assert toks[p] == best[p - 1], (sid, p)
            checked += 1
    assert checked > 20
    for sid in list(sampled):
        d.free(sid)
    assert d.kv_free() == d.limits.num_blocks
