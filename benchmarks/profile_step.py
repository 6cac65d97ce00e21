"""Where a decode step's time goes, and what an idle kernel costs the rest of its process.

Default mode (profile): for each model (the built-in one, and the random-init
"small" Llama of ``throughput_peers.py``) and each batch size (16, 64, 256
sequences of 32-92-token prompts), the driver is brought to steady decoding
and then ``--steps`` decode steps are timed, split into:

* ``batch_build``: Python and tensor work that builds the step's batch (``hf_attention.build_batch``);
* ``kv_write_gather``: inside the attention function, writing the new KV into the pool and
  gathering / updating the decode batch's KV (attention minus its math);
* ``attention_math``: the masked attention itself (SDPA, or the explicit softmax);
* ``mlp``: the MLP blocks; ``lm_head``: the output projection;
* ``other_forward``: the rest of the forward (embedding, norms, rotary, q/k/v/o projections, hooks);
* ``sampling``: choosing the next tokens;
* ``host_other``: the rest of ``driver.step`` (validation, block tables, commit, thread hand-off);
* ``cores_busy``: process CPU seconds per wall second during the steps, and ``idle`` the share of
  the torch threads' time left unused.

Timers are forward hooks and wrapped functions (a few microseconds each per layer), so the
figures are shares, not the speed of an uninstrumented step.

``--idle-kernel``: a bare batched transformers loop (``run_bare``) timed alone and then next to an
open, idle kernel (after a burst of 16 requests through it) in the same process: a fresh process
per case and round, alternating the driver's own step thread (the fix of issue 16) and steps on
the calling/worker threads (the old behaviour).  Reports the within-process ratios, and the voluntary
context switches per decode step of the bare loop: the mechanism of the slowdown (libgomp
waking sleeping workers through the OS), which load on a shared machine cannot fake.

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import throughput_peers as tp

BUILTIN = Path(__file__).resolve().parent.parent / "lmos" / "models" / "builtin"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_model(name: str) -> Any:
    import torch

    if name == "builtin":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(BUILTIN), dtype=torch.float32).eval()
    return tp.build_model(name, torch.device("cpu"))


def prompts(n: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(32 + (60 * i) // max(n - 1, 1))] for i in range(n)]


class Timers:
    """Accumulates seconds per label; wraps functions and hooks modules."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, label: str, fn: Any) -> Any:
        def timed(*a: Any, **kw: Any) -> Any:
            if not self.on:
                return fn(*a, **kw)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[label] += time.perf_counter() - t0

        return timed

    def hook(self, module: Any, label: str) -> None:
        start: list[float] = []

        def pre(*_: Any) -> None:
            start.append(time.perf_counter())

        def post(*_: Any) -> None:
            t0 = start.pop()
            if self.on:
                self.t[label] += time.perf_counter() - t0

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def instrument(driver: Any) -> Timers:
    from transformers import AttentionInterface

    from lmos.drivers import hf_attention, sampling

    tm = Timers()
    hf_attention.build_batch = tm.wrap("batch_build", hf_attention.build_batch)
    hf_attention._attend = tm.wrap("attention_math", hf_attention._attend)
    sampling.sample = tm.wrap("sampling", sampling.sample)
    AttentionInterface.register(hf_attention.ATTN_NAME, tm.wrap("attention", hf_attention.paged_attention))
    tm.hook(driver.model, "forward")
    for name, mod in driver.model.named_modules():
        if name.endswith(".mlp"):
            tm.hook(mod, "mlp")
        elif name == "lm_head":
            tm.hook(mod, "lm_head")
    return tm


def profile(model_name: str, nseq: int, steps: int) -> dict[str, Any]:
    import torch

    from lmos.drivers.base import SamplingParams, StepItem, StepPlan
    from lmos.drivers.hf import HFDriver

    model = load_model(model_name)
    vocab = int(model.config.vocab_size)
    c = model.config
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    per_tok = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4
    budget = str(int(nseq * (92 + steps + 40) * per_tok * 1.3) + (8 << 20))
    d = HFDriver(model, block_size=16, kv_memory=budget, max_seqs=nseq, max_tokens_per_step=2048,
                 threads=torch.get_num_threads())
    tm = instrument(d)
    greedy = SamplingParams(temperature=0.0)
    for i, p in enumerate(prompts(nseq, vocab, nseq)):
        d.add(i, p, greedy)
    while any(d.pending(i) > 1 for i in range(nseq)):  # prefill, chunked to the token budget
        budget_left, items = 2048, []
        for i in range(nseq):
            n = min(d.pending(i), budget_left)
            if n:
                items.append(StepItem(i, n))
                budget_left -= n
            if not budget_left:
                break
        d.step(StepPlan(items=items))
    plan = StepPlan(items=[StepItem(i, 1) for i in range(nseq)])
    for _ in range(3):  # warm decode steps
        d.step(plan)
    tm.on = True
    cpu0, w0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        d.step(plan)
    wall, cpu = time.perf_counter() - w0, time.process_time() - cpu0
    tm.on = False
    d.close()
    t = {k: v / steps * 1e3 for k, v in tm.t.items()}  # ms per step
    step_ms = wall / steps * 1e3
    parts = {
        "batch_build": t.get("batch_build", 0.0),
        "kv_write_gather": t.get("attention", 0.0) - t.get("attention_math", 0.0),
        "attention_math": t.get("attention_math", 0.0),
        "mlp": t.get("mlp", 0.0),
        "lm_head": t.get("lm_head", 0.0),
        "other_forward": t.get("forward", 0.0) - t.get("attention", 0.0) - t.get("mlp", 0.0)
        - t.get("lm_head", 0.0),
        "sampling": t.get("sampling", 0.0),
    }
    parts["host_other"] = step_ms - t.get("forward", 0.0) - parts["batch_build"] - parts["sampling"]
    threads = torch.get_num_threads()
    busy = cpu / wall
    return {"model": model_name, "seqs": nseq, "step_ms": round(step_ms, 3),
            "tok_s": round(nseq / (wall / steps), 1),
            "ms": {k: round(v, 3) for k, v in parts.items()},
            "share": {k: round(v / step_ms, 3) for k, v in parts.items()},
            "cores_busy": round(busy, 2), "idle": round(max(0.0, 1 - busy / threads), 3), "threads": threads}


# ------------------------------------------------------------------ idle kernel
def voluntary_switches() -> int:
    """This process's voluntary context switches, all threads (Linux).  libgomp puts its workers
    to sleep at every parallel region once two threads own teams: a count that load cannot fake,
    unlike wall time on a shared machine."""
    import glob

    total = 0
    for path in glob.glob("/proc/self/task/*/status"):
        try:
            with open(path) as fh:
                total += sum(int(line.split()[1]) for line in fh if line.startswith("voluntary_ctxt"))
        except OSError:
            pass
    return total


def idle_case(step_thread: bool, new: int) -> dict[str, Any]:
    """One fresh process: the bare loop alone, then next to an open kernel idle after a burst."""
    import anyio
    import torch

    import lmos
    from lmos.drivers.hf import HFDriver

    model = tp.build_model("small", torch.device("cpu"))
    vocab = int(model.config.vocab_size)
    bare_prompts = prompts(16, vocab, 5)
    # long prompts too: their prefill steps outlast inline_step_ms, so the old behaviour ran them on
    # the event loop's worker threads (the case of issue 16), whatever the machine's speed
    rng = random.Random(6)
    burst = prompts(12, vocab, 6) + [[rng.randrange(3, vocab) for _ in range(1500)] for _ in range(4)]

    def bare() -> tuple[float, float]:
        """tok/s of the bare loop, and voluntary context switches per decode step."""
        with torch.inference_mode():
            c0 = voluntary_switches()
            t0 = time.perf_counter()
            tp.run_bare(model, bare_prompts, new, torch.device("cpu"))
            return 16 * new / (time.perf_counter() - t0), (voluntary_switches() - c0) / new

    bare()
    alone = [bare() for _ in range(2)]
    out: dict[str, Any] = {}

    async def main() -> None:
        d = HFDriver(copy.deepcopy(model), block_size=16, kv_memory="128MiB", max_seqs=64,
                     max_tokens_per_step=2048, step_thread=step_thread, threads=torch.get_num_threads())
        async with lmos.Kernel(model=d, state_dir=":memory:") as k:
            async with anyio.create_task_group() as tg:
                for p in burst:
                    tg.start_soon(lambda p=p: k.complete(p, max_tokens=8, temperature=0))
            await anyio.sleep(0.3)  # idle
            with_kernel = [bare() for _ in range(2)]
        d.close()
        out.update(alone_tok_s=max(r for r, _ in alone), kernel_tok_s=max(r for r, _ in with_kernel),
                   alone_switches=min(c for _, c in alone), kernel_switches=min(c for _, c in with_kernel))

    anyio.run(main)
    return out


def idle_kernel(rounds: int, new: int) -> dict[str, Any]:
    """Fresh processes, alternating the fixed driver and the old behaviour (steps on whatever
    thread calls): once a worker thread holds a team it stays for the life of the event loop, so
    the two cannot share a process."""
    import subprocess

    ratios: dict[str, list[float]] = {"fixed": [], "old": []}
    switches: dict[str, list[float]] = {"alone": [], "fixed": [], "old": []}
    for r in range(rounds):
        for case in (["fixed", "old"] if r % 2 == 0 else ["old", "fixed"]):
            cmd = [sys.executable, __file__, "--idle-case", case, "--new-tokens", str(new)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            ratios[case].append(res["kernel_tok_s"] / res["alone_tok_s"])
            switches[case].append(res["kernel_switches"])
            switches["alone"].append(res["alone_switches"])
            log(f"round {r + 1}/{rounds} {case:>5}: alone {res['alone_tok_s']:8,.0f} tok/s "
                f"({res['alone_switches']:.1f} switches/step), idle kernel {res['kernel_tok_s']:8,.0f} tok/s "
                f"({res['kernel_switches']:.1f} switches/step)")
    return {"bench": "idle_kernel", "rounds": rounds, "new_tokens": new,
            "ratio_idle_kernel_vs_alone": round(statistics.median(ratios["fixed"]), 3),
            "ratio_old_vs_alone": round(statistics.median(ratios["old"]), 3),
            **{f"{k}_switches_per_step": round(statistics.median(v), 1) for k, v in switches.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default="builtin,small", help="builtin, tiny, small, large (comma-separated)")
    ap.add_argument("--seqs", default="16,64,256")
    ap.add_argument("--steps", type=int, default=20, help="timed decode steps per point")
    ap.add_argument("--idle-kernel", action="store_true", help="measure what an idle kernel costs other work")
    ap.add_argument("--rounds", type=int, default=5, help="--idle-kernel: interleaved rounds")
    ap.add_argument("--new-tokens", type=int, default=32, help="--idle-kernel: tokens of the bare loop")
    ap.add_argument("--idle-case", choices=("fixed", "old"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.idle_case:
        print(json.dumps(idle_case(args.idle_case == "fixed", args.new_tokens)))
        return 0
    if args.idle_kernel:
        print(json.dumps(idle_kernel(args.rounds, args.new_tokens)))
        return 0
    points = []
    for m in args.models.split(","):
        for n in (int(x) for x in args.seqs.split(",")):
            res = profile(m, n, args.steps)
            share = ", ".join(f"{k} {v:.0%}" for k, v in res["share"].items())
            log(f"{m:>8} {n:>4} seqs: {res['step_ms']:7.2f} ms/step, {res['tok_s']:8,.0f} tok/s, "
                f"cores busy {res['cores_busy']:.2f} | {share}")
            points.append(res)
    print(json.dumps({"bench": "profile_step", "points": points}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
