"""Kernel overhead on the scripted driver: process-tokens/s and scheduler µs per step.

For 1, 16, 256 and 1,024 concurrent processes, each generating a fixed number
of tokens, measure process-tokens per second and the scheduler's own time per
step (tick time minus the driver's step time), without and with one stream
subscriber per process.  Progress goes to stderr; the last stdout line is JSON.

    python benchmarks/kernel_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anyio

import lmos
from lmos.drivers.scripted import ScriptedDriver

SIZES = (1, 16, 256, 1024)


async def run_one(n: int, tokens: int, subscribe: bool) -> dict[str, float]:
    drv = ScriptedDriver("cycle", max_seqs=max(n, 1), max_tokens=max(8192, 2 * n))
    async with lmos.Kernel(model=drv, state_dir=":memory:", max_queue=4 * n + 16) as k:
        async def gen(sys: object, argv: list[str]) -> None:
            await sys.llm_generate("go", max_tokens=tokens)  # type: ignore[attr-defined]

        got = 0

        async def drain(pid: int) -> None:
            nonlocal got
            async for ev in k.stream(pid):
                if ev.kind == "token":
                    got += 1

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            pids = [await k.spawn(gen) for _ in range(n)]
            if subscribe:
                for pid in pids:
                    tg.start_soon(drain, pid)
            for pid in pids:
                await k.wait(pid)
        wall = time.perf_counter() - t0
        assert k.core is not None
        st = k.core.schedulers["default"].stats()
        if subscribe:
            assert got >= n * (tokens - 1), (got, n * tokens)
    total = n * tokens
    return {"tok_s": total / wall, "overhead_us": st["overhead_us"], "steps": st["steps"], "wall_s": wall}


async def main(quick: bool) -> dict[str, object]:
    out: dict[str, object] = {"bench": "kernel_overhead"}
    for n in SIZES:
        tokens = max(20, (4000 if quick else 20000) // n) if n < 256 else (50 if quick else 200)
        for subscribe in (False, True):
            r = await run_one(n, tokens, subscribe)
            tag = f"{n}p{'_stream' if subscribe else ''}"
            print(f"{tag:>12}: {r['tok_s']:>10.0f} process-tokens/s, scheduler overhead "
                  f"{r['overhead_us']:.0f} µs/step over {r['steps']:.0f} steps", file=sys.stderr)
            out[f"tok_s_{tag}"] = round(r["tok_s"], 1)
            out[f"overhead_us_per_step_{tag}"] = round(r["overhead_us"], 1)
    out["target_tok_s_256p"] = 200000
    out["meets_target_256p"] = bool(float(out["tok_s_256p"]) >= 200000)  # type: ignore[arg-type]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer tokens per process")
    args = ap.parse_args()
    result = anyio.run(main, args.quick)
    print(json.dumps(result))
