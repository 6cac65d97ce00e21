"""Per-token latency of one request alone: lmos against sequential ``model.generate`` (issue 16).

One process, the same random-init "small" Llama as ``throughput.py`` and the same prompt for every
peer of a round; the peers alternate within each round (their order rotated per round), so load
on a shared machine hits them alike:

* ``lmos``: the full kernel (``Kernel.complete``, scheduler tick, events), one request at a time;
* ``driver``: the paged driver alone under ``throughput_peers.run_driver``'s minimal loop;
* ``generate``: ``model.generate`` on the prompt (greedy): the target of issue 16;
* ``bare``: a greedy forward loop over a ``DynamicCache``: the floor of an eager forward.

Figures per peer: ms per generated token, by wall clock and by process CPU time (every thread of
the process; on a machine whose cores are shared CPU time is the steadier of the two), best and
median over rounds; ratios ``generate / peer`` (above 1: the peer is faster), best over best and
the median of the per-round ratios.  Every peer's tokens must equal ``generate``'s in every round;
a mismatch exits 1 and prints no figures.  ``PYTHONPATH=OLD_TREE`` runs an older lmos for
before/after figures.  The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

PEERS = ("lmos", "driver", "generate", "bare")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--prompt-tokens", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no OpenMP team anywhere)")
    args = ap.parse_args()

    import anyio
    import torch
    from throughput_peers import build_model, new_driver, run_bare, run_driver

    import lmos

    torch.set_num_threads(args.threads)
    model = build_model("small", torch.device("cpu"))
    driver = new_driver(model)
    new = args.new_tokens

    def prompt(i: int) -> list[int]:  # no two rounds share a KV block: nothing comes from the prefix cache
        return [3 + (i * 7919 + j * 31) % 4000 for j in range(args.prompt_tokens)]

    def generate(p: list[int]) -> list[int]:
        ids = torch.tensor([p])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                             pad_token_id=0)
        return list(out[0, len(p):].tolist())

    async def run() -> dict[str, list[tuple[float, float]]]:
        res: dict[str, list[tuple[float, float]]] = {p: [] for p in PEERS}
        async with lmos.Kernel(model=driver, state_dir=":memory:") as k:
            async def kernel(p: list[int]) -> list[int]:
                return list((await k.complete(p, max_tokens=new, temperature=0)).token_ids)

            sync: dict[str, Callable[[list[int], int], list[int]]] = {
                "driver": lambda p, i: run_driver(driver, [p], new, base_id=1_000_000 * (i + 1))[0],
                "generate": lambda p, i: generate(p),
                "bare": lambda p, i: run_bare(model, [p], new, torch.device("cpu"))[0],
            }
            for r in range(-1, args.rounds):  # round -1: warm-up, untimed
                p = prompt(r + 2)
                order = PEERS[r % len(PEERS):] + PEERS[: r % len(PEERS)]
                outs: dict[str, list[int]] = {}
                for peer in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    if peer == "lmos":
                        outs[peer] = await kernel(p)
                    else:
                        with torch.inference_mode():
                            outs[peer] = sync[peer](p, r + 1)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    if r >= 0:
                        res[peer].append((wall, cpu))
                bad = [peer for peer in PEERS if outs[peer] != outs["generate"]]
                if bad:
                    raise SystemExit(f"round {r}: tokens differ from model.generate's: {bad}")
                if r >= 0:
                    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                        f"{peer} {res[peer][-1][0] / new * 1e3:.3f}/{res[peer][-1][1] / new * 1e3:.3f}"
                        for peer in PEERS) + " ms/token (wall/cpu)", file=sys.stderr, flush=True)
        return res

    try:
        res = anyio.run(run)
    except SystemExit as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        print(json.dumps({"bench": "single_latency", "error": str(exc)}))
        return 1
    fig: dict[str, Any] = {"bench": "single_latency", "prompt_tokens": args.prompt_tokens, "new_tokens": new,
                           "rounds": args.rounds, "threads": torch.get_num_threads(),
                           "lmos": str(Path(lmos.__file__).parent)}
    for peer, runs in res.items():
        for i, kind in enumerate(("wall", "cpu")):
            vals = [x[i] / new * 1e3 for x in runs]
            fig[f"{peer}_ms_{kind}"] = round(min(vals), 3)
            fig[f"{peer}_ms_{kind}_median"] = round(statistics.median(vals), 3)
    for peer in ("lmos", "driver", "bare"):
        for i, kind in enumerate(("wall", "cpu")):
            g, q = [x[i] for x in res["generate"]], [x[i] for x in res[peer]]
            fig[f"ratio_generate_vs_{peer}_{kind}"] = round(min(g) / min(q), 3)
            fig[f"ratio_generate_vs_{peer}_{kind}_paired"] = round(
                statistics.median(a / b for a, b in zip(g, q, strict=True)), 3)
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
