"""lmos against vLLM's CPU build on the same model and token-id prompts (``./dev peer-vllm``).

The model is the random-init Llama of ``throughput_peers.py`` ("small": ~5M parameters, fp32),
saved once to a temporary directory that both systems load.  Prompts: token ids, 32-92 tokens,
new ones for every run; 64 greedy tokens each, EOS ignored.  Every system runs in its own
process per round, the processes alternating: lmos (the whole kernel, one process per request
through ``Kernel.complete``, at its auto-tuned limits), vLLM at its defaults (its CPU backend
gives the model one OpenMP thread and keeps the other core for its scheduler), and vLLM bound
to every core (``VLLM_CPU_OMP_THREADS_BIND=0-N``).  Each process times 16, 64 and 256
concurrent requests after one untimed warm-up, and reports its startup (until it can serve)
and the peak resident memory of its whole process tree (vLLM runs its engine in child
processes).  Matching sequences (lmos's tokens equal vLLM's) are counted and reported, not
enforced: float noise may flip a near-tie.

vLLM runs from its own virtual environment (``--vllm-python``, set up by ``./dev peer-vllm``):
never a dependency of lmos.  As its x86 CPU docs ask, TCMalloc and the wheel's Intel OpenMP are
put in ``LD_PRELOAD`` when found.  Progress on stderr, one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES = (16, 64, 256)
SYSTEMS = ("lmos", "vllm_default", "vllm_all_cores")

# Runs inside vLLM's own venv: reads the job on stdin, prints one JSON line.
VLLM_CHILD = r"""
import json, sys, time
job = json.loads(sys.stdin.read())
t0 = time.perf_counter()
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
llm = LLM(model=job["model"], skip_tokenizer_init=True, dtype="float32", max_num_seqs=max(job["sizes"]),
          max_model_len=512, seed=0)
startup = time.perf_counter() - t0
sp = SamplingParams(temperature=0.0, max_tokens=job["new"], ignore_eos=True, detokenize=False)
def run(prompts):
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]
res = {"startup_s": startup, "sizes": {}}
for n, (warm, timed) in zip(job["sizes"], job["prompts"]):
    run(warm)
    t = time.perf_counter()
    toks = run(timed)
    res["sizes"][str(n)] = {"seconds": time.perf_counter() - t, "tokens": toks}
print("LMOS_PEER_RESULT " + json.dumps(res), flush=True)
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def save_model(path: Path) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    import throughput_peers as tp

    from lmos.train.tokenizer import byte_tokenizer

    model = tp.build_model("small", torch.device("cpu"))
    model.generation_config.eos_token_id = None
    model.save_pretrained(path)
    # lmos loads no model directory without a tokenizer (vLLM skips it: the prompts are token ids)
    byte_tokenizer(model.config.vocab_size).save_pretrained(path)


def prompts_for(rng: random.Random, vocab: int, sizes: tuple[int, ...]) -> list[tuple[list[list[int]], ...]]:
    def draw(n: int) -> list[list[int]]:
        return [[rng.randrange(3, vocab) for _ in range(32 + (60 * i) // max(n - 1, 1))] for i in range(n)]

    return [(draw(min(n, 16)), draw(n)) for n in sizes]


def lmos_child(job: dict[str, Any]) -> dict[str, Any]:
    """The lmos side (run in a fresh process of lmos's own venv)."""
    t0 = time.perf_counter()
    import anyio

    import lmos
    from lmos.drivers.hf import HFDriver

    driver = HFDriver.from_pretrained(job["model"], device="cpu", dtype="float32")
    res: dict[str, Any] = {"sizes": {}, "tuning": driver.tuning.as_dict()}

    async def main() -> None:
        async with lmos.Kernel(model=driver, state_dir=":memory:") as k:
            res["startup_s"] = time.perf_counter() - t0

            async def batch(prompts: list[list[int]]) -> list[list[int]]:
                out: list[list[int]] = [[] for _ in prompts]

                async def one(i: int) -> None:
                    r = await k.complete(prompts[i], max_tokens=job["new"], temperature=0)
                    out[i] = list(r.token_ids)

                async with anyio.create_task_group() as tg:
                    for i in range(len(prompts)):
                        tg.start_soon(one, i)
                return out

            for n, (warm, timed) in zip(job["sizes"], job["prompts"], strict=True):
                await batch(warm)
                t = time.perf_counter()
                toks = await batch(timed)
                res["sizes"][str(n)] = {"seconds": time.perf_counter() - t, "tokens": toks}

    anyio.run(main)
    return res


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total


def run_process(cmd: list[str], job: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            done.wait(0.2)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        out, err = proc.communicate(json.dumps(job), timeout=timeout)
    finally:
        done.set()
        th.join()
    lines = [ln for ln in out.splitlines() if ln.startswith("LMOS_PEER_RESULT ")]
    if proc.returncode != 0 or not lines:  # vLLM logs to stdout too: the answer is the marked line
        raise RuntimeError(f"{cmd[-1][:40]!r} exited {proc.returncode}: {(out + err).strip()[-2500:]}")
    res: dict[str, Any] = json.loads(lines[-1].removeprefix("LMOS_PEER_RESULT "))
    res["peak_rss_mib"] = round(peak[0] / 2**20, 1)
    return res


def vllm_env(vllm_python: str, bind: str | None) -> dict[str, str]:
    env = dict(os.environ)
    preload = [p for p in glob.glob("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so*") if p.endswith(".4")]
    if not preload:
        log("note: TCMalloc not found (apt-get install libtcmalloc-minimal4); vLLM runs without it")
    prefix = Path(vllm_python).resolve().parent.parent
    iomp = glob.glob(str(prefix / "lib" / "libiomp5.so"))
    iomp += glob.glob(str(prefix / "lib" / "python3*" / "site-packages" / "*" / "lib" / "libiomp5.so"))
    preload += iomp[:1]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    env.pop("OMP_NUM_THREADS", None)
    if bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    env["VLLM_CPU_KVCACHE_SPACE"] = env.get("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--vllm-python", default=".venv-vllm/bin/python")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--lmos-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lmos_child:
        print("LMOS_PEER_RESULT " + json.dumps(lmos_child(json.loads(sys.stdin.read()))))
        return 0
    sizes = tuple(int(x) for x in args.sizes.split(","))
    systems = [s for s in args.systems.split(",") if s]
    cores = os.cpu_count() or 1
    rng = random.Random(1)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    matched: dict[str, dict[str, list[int]]] = {s: {str(n): [] for n in sizes}
                                                for s in systems if s != "lmos"}
    with tempfile.TemporaryDirectory(prefix="lmos-vllm-peer-") as tmp:
        model_dir = Path(tmp) / "model"
        save_model(model_dir)
        for r in range(args.rounds):
            job = {"model": str(model_dir), "sizes": list(sizes), "new": args.new_tokens,
                   "prompts": prompts_for(rng, 4096, sizes)}
            order = systems[r % len(systems):] + systems[: r % len(systems)]
            outs: dict[str, dict[str, Any]] = {}
            for system in order:
                if system == "lmos":
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--lmos-child"]
                    env = dict(os.environ)
                else:
                    cmd = [args.vllm_python, "-c", VLLM_CHILD]
                    bind = None if system == "vllm_default" else f"0-{cores - 1}"
                    env = vllm_env(args.vllm_python, bind)
                res = run_process(cmd, job, env, args.timeout)
                outs[system] = res
                runs[system].append(res)
                rates = ", ".join(f"{n}: {n * args.new_tokens / res['sizes'][str(n)]['seconds']:,.0f}"
                                  for n in sizes)
                log(f"round {r + 1}/{args.rounds} {system:>15}: tok/s {rates}; "
                    f"startup {res['startup_s']:.1f}s, peak {res['peak_rss_mib']:,.0f} MiB")
            if "lmos" in outs:
                for system in matched:
                    if system in outs:
                        for n in sizes:
                            a = outs["lmos"]["sizes"][str(n)]["tokens"]
                            b = outs[system]["sizes"][str(n)]["tokens"]
                            matched[system][str(n)].append(sum(x == y for x, y in zip(a, b, strict=True)))
    fig: dict[str, Any] = {"bench": "vllm_peer", "rounds": args.rounds, "cores": cores,
                           "new_tokens": args.new_tokens}
    best: dict[str, dict[int, float]] = {}
    for system, rs in runs.items():
        best[system] = {n: max(n * args.new_tokens / x["sizes"][str(n)]["seconds"] for x in rs)
                        for n in sizes}
        for n in sizes:
            fig[f"{system}_{n}_tok_s"] = round(best[system][n], 1)
        fig[f"{system}_startup_s"] = round(statistics.median(x["startup_s"] for x in rs), 2)
        fig[f"{system}_peak_rss_mib"] = max(x["peak_rss_mib"] for x in rs)
    if runs.get("lmos"):
        fig["lmos_tuning"] = runs["lmos"][-1].get("tuning")
    for system in matched:
        for n in sizes:
            if "lmos" in best and system in best:
                fig[f"ratio_lmos_vs_{system}_{n}"] = round(best["lmos"][n] / best[system][n], 3)
            fig[f"matching_{system}_{n}"] = f"{min(matched[system][str(n)], default=0)}/{n}"
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
