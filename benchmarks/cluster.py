"""The Ray cluster driver: 1 replica against 2 on this machine, placement, and resuming after a death.

A local Ray instance (all the machine's CPUs) runs replicas of a random-init Llama
(hidden 256, 4 layers, vocab 4096).  The workload: ``--groups`` system prompts of 64
tokens, each shared by ``--per-group`` sequences with their own 8-24 token question,
admitted a few per step (so earlier sequences' prompt blocks are cached when later
ones arrive), each generating ``--new`` tokens greedily.  The loop plays the kernel's
role at driver level (plans within the driver's limits), so the figures are the
driver's.

Reported:
- ``tok_s_1`` / ``tok_s_2``: generated tokens per wall second, one replica with every
  CPU against two replicas with half each, and ``tok_s_1_half_cpus``: one replica with
  half the CPUs (what each of the two has).  The three stay up side by side and run in
  turn, ``--rounds`` times, each round on fresh prompts (medians; the speedups are
  medians of the per-round ratios).  On a loaded machine one replica's OpenMP team of
  every core suffers most (a thread descheduled by another process stalls each parallel
  region), so read the figures with ``loadavg_1m``;
- ``hit_rate_affinity`` / ``hit_rate_random``: prompt tokens found in the replica's
  prefix cache, with prefix-affinity placement and with random placement (two replicas,
  fresh prompts for each so no run inherits another's cache);
- ``resume_s_mean`` / ``resume_s_max``: from killing one replica mid-generation to the
  next token of each of its sequences (recomputed on the survivor), and whether every
  sequence's tokens still equal the run without a failure (``resume_token_exact``).

Progress on stderr; the last stdout line is JSON.

    python benchmarks/cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from lmos.drivers.base import SamplingParams, StepItem, StepPlan
from lmos.drivers.ray import RayDriver
from lmos.drivers.ray_cluster import load_cluster
from lmos.drivers.ray_replica import ModelSpec

GREEDY = SamplingParams(temperature=0.0)
Hook = Callable[[int, dict[int, list[int]]], None]
CONFIG = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
          "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096,
          "max_position_embeddings": 2048, "bos_token_id": None, "eos_token_id": None, "pad_token_id": 0}


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def workload(seed: int, groups: int, per_group: int) -> list[list[int]]:
    rng = random.Random(seed)
    systems = [[rng.randrange(10, 4000) for _ in range(64)] for _ in range(groups)]
    prompts = [s + [rng.randrange(10, 4000) for _ in range(rng.randrange(8, 25))]
               for _ in range(per_group) for s in systems]
    rng.shuffle(prompts)
    return prompts


def drive(drv: RayDriver, prompts: list[list[int]], new: int, *, admit_per_step: int = 2,
          hook: Hook | None = None) -> tuple[dict[int, list[int]], float]:
    """Admit ``admit_per_step`` sequences per step; plan like the kernel; run until each has ``new``
    tokens.  Returns the tokens and the wall seconds."""
    out: dict[int, list[int]] = {}
    waiting = list(enumerate(prompts))
    lim = drv.limits
    t0 = time.perf_counter()
    step = 0
    while waiting or any(len(v) < new for v in out.values()):
        for sid, p in waiting[:admit_per_step]:
            drv.add(sid, p, GREEDY)
            out[sid] = []
        waiting = waiting[admit_per_step:]
        if hook is not None:
            hook(step, out)
        items: list[StepItem] = []
        budget, free = lim.max_tokens, drv.kv_free()
        for sid, toks in out.items():
            if len(toks) >= new or len(items) >= lim.max_seqs or budget <= 0:
                continue
            n = min(drv.pending(sid), budget)
            need = drv.kv_needed(sid, n)
            if need > free:
                continue
            free -= need
            budget -= n
            items.append(StepItem(sid, n))
        for sid, tok in drv.step(StepPlan(items=items)).items():
            if tok is not None:
                out[sid].append(tok)
        step += 1
    seconds = time.perf_counter() - t0
    for sid in out:
        drv.free(sid)
    drv.step(StepPlan())
    return out, seconds


def start(replicas: int, cpus: float) -> RayDriver:
    spec = ModelSpec(config=CONFIG, seed=0, device="cpu", kv_memory="64MiB", max_seqs=32,
                     max_tokens_per_step=512)
    t0 = time.perf_counter()
    drv = load_cluster("local", spec, replicas=replicas, num_cpus=cpus, start_timeout=600)
    log(f"{replicas} replica(s) of {cpus:g} CPU up in {time.perf_counter() - t0:.1f} s")
    return drv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--per-group", type=int, default=6)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.quick:
        a.groups, a.per_group, a.new, a.rounds = 3, 4, 16, 1
    import ray

    cpus = os.cpu_count() or 2
    # Logical CPUs for Ray: the three setups below stay up side by side and run in turn (an idle
    # replica gives its threads back); each replica's torch threads are the CPUs it asks for.
    ray.init(num_cpus=4 * cpus, include_dashboard=False, log_to_driver=False)
    res: dict[str, Any] = {"bench": "cluster", "cpus": cpus, "sequences": a.groups * a.per_group,
                           "new_tokens": a.new, "rounds": a.rounds}
    setups = {"1": start(1, cpus), "1_half_cpus": start(1, cpus / 2), "2": start(2, cpus / 2)}
    for drv in setups.values():
        drive(drv, workload(9, 2, 2), 8)  # warm up (first steps allocate and initialise)
    rates: dict[str, list[float]] = {k: [] for k in setups}
    equal = True
    for rnd in range(a.rounds):  # interleaved; fresh prompts each round, the same for every setup
        prompts = workload(100 + rnd, a.groups, a.per_group)
        outs = []
        for name, drv in setups.items():
            out, seconds = drive(drv, prompts, a.new)
            rates[name].append(len(prompts) * a.new / seconds)
            outs.append(out)
        equal = equal and all(o == outs[0] for o in outs)
        log(f"round {rnd}: " + ", ".join(f"{k} replica(s): {v[-1]:.0f} tok/s" for k, v in rates.items()))
    for name, v in rates.items():
        res[f"tok_s_{name}"] = round(statistics.median(v), 1)
    res["speedup_2_vs_1"] = round(statistics.median(b / a_ for a_, b in zip(rates["1"], rates["2"],
                                                                           strict=True)), 3)
    res["speedup_2_vs_1_half_cpus"] = round(statistics.median(
        b / a_ for a_, b in zip(rates["1_half_cpus"], rates["2"], strict=True)), 3)
    res["two_equal_one"] = equal
    setups["1"].close()
    setups["1_half_cpus"].close()
    two = setups["2"]

    for mode, seed in (("affinity", 2), ("random", 3)):
        two.placement.mode = mode  # type: ignore[assignment]
        two.placement.stats = type(two.placement.stats)()
        drive(two, workload(seed, a.groups, a.per_group), a.new)
        res[f"hit_rate_{mode}"] = round(two.placement.stats.hit_rate, 3)
        log(f"prefix-hit rate with {mode} placement: {res[f'hit_rate_{mode}']}")

    two.placement.mode = "affinity"
    prompts = workload(4, a.groups, a.per_group)
    want, _ = drive(two, prompts, a.new)  # the run without a failure, for the token check
    killed: dict[str, Any] = {}

    def hook(step: int, out: dict[int, list[int]]) -> None:
        if step == 12 and not killed:
            victims = {sid: len(out[sid]) for sid, s in two.seqs.items()
                       if s.replica == 0 and len(out[sid]) < a.new}
            ray.kill(two.handles[0], no_restart=True)
            killed.update(t=time.perf_counter(), victims=victims, first={})
        elif killed:
            for sid, n in killed["victims"].items():
                if sid not in killed["first"] and len(out[sid]) > n:
                    killed["first"][sid] = time.perf_counter() - killed["t"]

    got, _ = drive(two, prompts, a.new, hook=hook)
    waits = list(killed.get("first", {}).values())
    res["resumed"] = two.placement.stats.resumed
    res["resume_s_mean"] = round(sum(waits) / len(waits), 3) if waits else None
    res["resume_s_max"] = round(max(waits), 3) if waits else None
    res["resume_token_exact"] = got == want
    log(f"resume after a replica died: {res['resumed']} sequences, mean {res['resume_s_mean']} s, "
        f"max {res['resume_s_max']} s, token-exact {res['resume_token_exact']}")
    two.close()
    ray.shutdown()
    res["loadavg_1m"] = round(os.getloadavg()[0], 2)  # the machine is shared: ratios, not absolutes
    print(json.dumps(res))


if __name__ == "__main__":
    main()
