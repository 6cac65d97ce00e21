"""Generation throughput: lmos against transformers peers, each in its own fresh process.

One random-init Llama (the same seeded weights in every process), greedy, no eos:

* ``lmos``: the full kernel, one process per request through ``Kernel.complete``;
* ``lmos_driver``: the paged driver alone under a minimal scheduler loop;
* ``bare``: the ceiling: a batched forward loop over a ``DynamicCache``, no scheduling;
* ``padded``: one left-padded static batch through ``model.generate``;
* ``sequential``: ``model.generate`` on one prompt after another (also the reference);
* ``generate_batch`` (opt-in, ``--generate-batch``): transformers' own continuous batching.

What makes the comparison fair (each point answers a way an earlier version was not):

* **Fresh processes.**  Every peer runs in a new process in every round (``throughput_peers.py``),
  with the same thread count and one untimed warm-up run: an open kernel slows every other torch
  call in its process, and warm state must not follow a peer from round to round.
* **Interleaved, same tries.**  Each round runs every peer once, the reference first and the rest
  in an order rotated per round; every peer gets ``--rounds`` tries.  Figures: best and median
  tok/s per peer; ``ratio_A_vs_B`` is best over best (load on a shared machine only ever slows a
  run, so the best is the least disturbed), ``ratio_A_vs_B_paired`` the median of the per-round
  ratios (adjacent runs: it cancels slow drift, but not a burst that hits one run of a pair).
* **Modes.**  ``--mode cold`` (default): new prompts every round, warm-up prompts disjoint from
  the timed ones, no shared prefix anywhere; the lmos peers' prefix-cache hits are reported and
  must be zero.  ``--mode shared``: every prompt starts with the same ``--system-tokens`` system
  prompt, which the warm-up requests have computed, as a server with a fixed system prompt has
  done; here the prefix cache legitimately helps lmos, and the transformers peers (no prefix
  cache) recompute it.  The two modes answer different questions: never quote one as the other.
* **Correctness is enforced.**  Every peer's tokens must equal ``model.generate``'s (the
  sequential peer, per prompt) in every round.  A mismatch exits 1 and prints no throughput.

Plus memory figures (KV blocks for sequences sharing a system prompt against the ideal, internal
fragmentation) from one more process.  Progress goes to stderr; the last line on stdout is one
JSON object.  ``--corrupt PEER`` perturbs one token of that peer's output, to test the check.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PEERS = ("lmos", "lmos_driver", "bare", "padded")  # besides the sequential reference
LMOS_PEERS = ["lmos", "lmos_driver"]  # --base adds "lmos@base", "lmos_driver@base"
BASE_SUFFIX = "@base"  # a peer run on the lmos source tree given by --base (before/after figures)
VOCAB = {"tiny": 256, "small": 4096, "large": 32000}
BLOCK = 16  # the lmos peers' KV block size: the prefix cache's unit
CHILD = Path(__file__).with_name("throughput_peers.py")


class BenchError(Exception):
    """The run cannot report figures; ``code`` is the exit status."""

    def __init__(self, code: int, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code, self.detail = code, detail


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def draw(rng: random.Random, n: int, vocab: int, prefix: list[int]) -> list[list[int]]:
    """``n`` prompts of 32..92 own tokens after ``prefix``."""
    lengths = [32 + (60 * i) // max(n - 1, 1) for i in range(n)]
    return [prefix + [rng.randrange(3, vocab) for _ in range(length)] for length in lengths]


def workload(args: argparse.Namespace) -> tuple[list[int], list[tuple[list[list[int]], list[list[int]]]]]:
    """The system prompt (empty when cold) and, per round, (warm-up prompts, timed prompts).

    Every own part (the tokens after the system prompt) is new: no two of them, across rounds and
    warm-ups, share their first KV block, so nothing but the system prompt can come from a prefix
    cache.  Checked here rather than trusted to chance.
    """
    vocab = VOCAB[args.size]
    rng = random.Random(1)
    system = [rng.randrange(3, vocab) for _ in range(args.system_tokens)] if args.mode == "shared" else []
    rounds = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(args.rounds):
        warm, timed = draw(rng, args.prompts, vocab, system), draw(rng, args.prompts, vocab, system)
        for p in warm + timed:
            head = tuple(p[len(system): len(system) + BLOCK])
            if head in seen:
                raise BenchError(2, "two prompts share a first block; draw again with another seed")
            seen.add(head)
        rounds.append((warm, timed))
    return system, rounds


def run_child(job: dict[str, Any], threads: int, timeout: float, base: str = "") -> dict[str, Any]:
    """One peer in a new interpreter; its JSON answer.  Raises on a crash or a timeout.

    A peer named ``NAME@base`` runs ``NAME`` with the lmos package of the tree ``base`` first on
    the path (an older checkout: before/after figures in one interleaved run)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if job["peer"].endswith(BASE_SUFFIX):
        job = {**job, "peer": job["peer"].removesuffix(BASE_SUFFIX)}
        env["PYTHONPATH"] = base + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(CHILD)], input=json.dumps(job), capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"peer {job['peer']} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


def check(peer: str, got: list[list[int]], ref: list[list[int]], rnd: int) -> None:
    bad = [i for i, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b]
    if bad:
        i = bad[0]
        at = next((j for j, (x, y) in enumerate(zip(got[i], ref[i], strict=False)) if x != y),
                  min(len(got[i]), len(ref[i])))
        raise BenchError(1, f"{peer} differs from model.generate in round {rnd + 1}: {len(bad)} of "
                         f"{len(ref)} sequences (first: prompt {i}, token {at})",
                         mismatch_peer=peer, mismatch_sequences=len(bad), mismatch_round=rnd + 1)


def run_rounds(args: argparse.Namespace,
               peers: list[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    system, rounds = workload(args)
    base = {"size": args.size, "device": args.device, "threads": args.threads, "new": args.new_tokens}
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in ["sequential", *peers]}
    info: dict[str, Any] = {}
    for r, (warm, timed) in enumerate(rounds):
        k = r % len(peers)
        order = ["sequential", *peers[k:], *peers[:k]]  # the reference first: the others are checked
        for peer in order:
            # the sequential reference runs prompts one by one: two warm it as well as sixteen would
            job = {**base, "peer": peer, "prompts": timed, "warm": warm if peer != "sequential" else warm[:2],
                   "corrupt": peer == args.corrupt}
            try:
                res = run_child(job, args.threads, args.generate_batch_limit if peer == "generate_batch"
                                else args.timeout, args.base)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                if peer != "generate_batch":
                    raise BenchError(2, f"{type(exc).__name__}: {exc}"[:2000]) from None
                info["generate_batch_error"] = f"{type(exc).__name__}: {exc}"[:300]  # opt-in, known slow
                log(f"  generate_batch dropped: {info['generate_batch_error']}")
                peers.remove(peer)
                runs.pop(peer)
                continue
            if peer != "sequential":  # the reference ran first in this round
                check(peer, res["tokens"], runs["sequential"][-1]["tokens"], r)
            if args.mode == "cold" and res["prefix_hit_tokens"]:
                raise BenchError(2, f"{peer}: {res['prefix_hit_tokens']} prompt tokens of cold prompts came "
                                 "from the prefix cache: the workload is not cold")
            runs[peer].append(res)
            tok_s = len(timed) * args.new_tokens / res["seconds"]
            hits = f", prefix-cache hits {res['prefix_hit_tokens'] / res['prompt_tokens']:.0%}" \
                if peer in LMOS_PEERS else ""
            log(f"round {r + 1}/{len(rounds)} {peer:>14}: {tok_s:9,.0f} tok/s ({res['seconds']:.2f}s{hits})")
            info.update(params_m=res["params_m"], dtype=res["dtype"])
            if info.setdefault("threads", res["threads"]) != res["threads"]:
                raise BenchError(2, f"{peer} ran with {res['threads']} threads, others with "
                                 f"{info['threads']}")
    info["system_tokens"] = len(system)
    return runs, info


def figures(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    tokens = args.prompts * args.new_tokens
    fig: dict[str, Any] = {}
    rates = {p: [tokens / r["seconds"] for r in rs] for p, rs in runs.items()}
    for p, rs in runs.items():
        fig[f"{p}_tok_s"] = round(max(rates[p]), 1)
        fig[f"{p}_tok_s_median"] = round(statistics.median(rates[p]), 1)
        fig[f"{p}_peak_rss_mib"] = max(r["peak_rss_mib"] for r in rs)
        if p in LMOS_PEERS:
            hit = sum(r["prefix_hit_tokens"] for r in rs) / sum(r["prompt_tokens"] for r in rs)
            fig[f"{p}_prefix_hit_rate"] = round(hit, 4)
    for a in LMOS_PEERS:
        for b in ("bare", "padded", "sequential", "generate_batch", "lmos_driver", a + BASE_SUFFIX):
            if a != b and a in rates and b in rates:
                fig[f"ratio_{a}_vs_{b}"] = round(max(rates[a]) / max(rates[b]), 3)
                paired = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
                fig[f"ratio_{a}_vs_{b}_paired"] = round(statistics.median(paired), 3)
    fig["sequences_checked"] = len(runs["sequential"]) * args.prompts * (len(runs) - 1)
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mode", choices=("cold", "shared"), default="cold",
                    help="cold: no shared prefix anywhere; shared: a common, already computed system prompt")
    ap.add_argument("--system-tokens", type=int, default=256, help="system prompt length (--mode shared)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--size", choices=sorted(VOCAB), default="small")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="tries per peer (one fresh process each)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads in every peer (0: torch's default)")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="comma-separated, besides the sequential reference")
    ap.add_argument("--generate-batch", action="store_true", help="add transformers' generate_batch peer")
    ap.add_argument("--generate-batch-limit", type=float, default=120.0,
                    help="seconds before a generate_batch run is given up (the peer is then dropped)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds any other peer's process may take")
    ap.add_argument("--skip-memory", action="store_true", help="no KV memory figures")
    ap.add_argument("--quick", action="store_true", help="8 new tokens, one round, small memory figures")
    ap.add_argument("--base", default="",
                    help="an older lmos source tree: adds its lmos peers as NAME@base (before/after)")
    ap.add_argument("--corrupt", default="", help="perturb one output token of this peer (tests the check)")
    args = ap.parse_args()
    if args.quick:
        args.new_tokens, args.rounds = 8, 1
    if args.mode == "shared" and (args.system_tokens < BLOCK or args.system_tokens % BLOCK):
        ap.error(f"--system-tokens must be a positive multiple of {BLOCK} (whole KV blocks)")
    peers = [p for p in args.peers.split(",") if p and p != "sequential"]
    if args.base:
        peers += [p + BASE_SUFFIX for p in peers if p in LMOS_PEERS]
        LMOS_PEERS.extend([p + BASE_SUFFIX for p in LMOS_PEERS])
    unknown = {p.removesuffix(BASE_SUFFIX) for p in peers} - set(PEERS)
    if unknown:
        ap.error(f"unknown peers {sorted(unknown)} (known: {', '.join(PEERS)})")
    if args.generate_batch:
        peers.append("generate_batch")
    if not peers:
        ap.error("no peer to compare with the sequential reference")
    if args.corrupt and args.corrupt not in ["sequential", *peers]:
        ap.error(f"--corrupt {args.corrupt}: not a peer of this run")
    log(f"throughput ({args.mode}): {args.size} model on {args.device}, {args.prompts} prompts x "
        f"{args.new_tokens} tokens, {args.rounds} round(s) of {len(peers) + 1} fresh processes")
    t0 = time.perf_counter()
    try:
        runs, info = run_rounds(args, peers)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        print(json.dumps({"bench": "throughput", "mode": args.mode, "error": str(exc), **exc.detail}))
        return exc.code
    fig: dict[str, Any] = {"bench": "throughput", "mode": args.mode, "device": args.device, "size": args.size,
                           "params_m": info["params_m"], "dtype": info["dtype"], "prompts": args.prompts,
                           "new_tokens": args.new_tokens, "rounds": args.rounds, "threads": info["threads"],
                           "system_tokens": info["system_tokens"]}
    fig.update(figures(args, runs))
    if "generate_batch_error" in info:
        fig["generate_batch_error"] = info["generate_batch_error"]
    if not args.skip_memory:
        log("memory figures ...")
        job = {"peer": "memory", "size": args.size, "device": args.device, "threads": args.threads,
               "quick": args.quick}
        try:
            mem = run_child(job, args.threads, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"FAILED: memory figures: {exc}")
            return 2
        fig.update({k: v for k, v in mem.items() if k != "peak_rss_mib"})
    fig["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
