"""Kernel overhead on the scripted driver: process-tokens/s and scheduler µs per step.

For 1, 16, 256 and 1,024 concurrent processes, each generating a fixed number
of tokens, measure process-tokens per second and the scheduler's own time per
step, without and with one stream subscriber per process (``Kernel.stream``,
which must deliver every token: the run fails otherwise).  The two cases run
interleaved, ``--tries`` times each, best of the tries.

Figures, per case (``{n}p`` plain, ``{n}p_stream`` with subscribers):

- ``tok_s``: process-tokens per wall second; ``cpu_tok_s`` per CPU second of
  this process, which a loaded machine stretches far less than wall time;
- ``sched_us_per_step`` / ``sched_cpu_us_per_step``: the scheduler's own work
  per tick (planning, applying results, waking stream readers), wall and CPU;
  ``overhead_us_per_step``: tick time less the driver's step, as before;
- ``stream_ratio_{n}p`` (and ``stream_cpu_ratio_{n}p``): throughput with
  subscribers over throughput without; the target is >= 0.5 at 256 processes;
- ``sched_step_ratio_1024_256`` (and ``sched_cpu_step_ratio_1024_256``): the
  scheduler's time per step at 1,024 processes over 256; the target is <= 4;
- ``wakeups_per_token_{n}p_stream``: stream readers woken per token delivered.

The syscall journal (kernel/sysjournal.py, docs/durability.md) costs, with an
on-disk state directory, journal on against off, side by side (interleaved):

- ``journal_gen``: generation-heavy, 256 processes with one generation each (200 tokens, as
  in the plain 256-process case);
- ``journal_sys``: syscall-heavy, 256 processes each making 50 kv and tool
  calls (25 ``kv_set`` + 25 ``tool_call`` of calc);
- ``journal_{case}_on_per_s`` / ``_off_per_s``: processes (gen) or syscalls
  (sys) per wall second, best of the tries; ``journal_{case}_cost``: 1 - on/off
  (the target is <= 0.15); ``journal_{case}_costs``: each interleaved pair's own
  cost (their spread is the machine's noise); ``journal_{case}_cpu_cost``: the
  same per CPU second of this process (database threads included), which other
  jobs on the machine stretch far less than wall time;
- ``journal_{case}_commits``: transactions that carried journal rows in the
  fastest "on" run (``_own_commits``: of them, the committer's own; the others
  rode along with a ``kv_set``), and ``_rows_per_commit``: journaled syscalls
  (and in-flight rows of effects) per such transaction.

Progress goes to stderr; the last stdout line is JSON.

    python benchmarks/kernel_overhead.py [--quick] [--tries N] [--journal-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

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

        async def drain(events: AsyncIterator[Any]) -> None:
            nonlocal got
            async for ev in events:
                if ev.kind == "token":
                    got += 1

        t0, c0 = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            pids = []
            for _ in range(n):
                pid = await k.spawn(gen)
                pids.append(pid)
                if subscribe:  # subscribed at the call, before the process can generate
                    tg.start_soon(drain, k.stream(pid))
            for pid in pids:
                await k.wait(pid)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert k.core is not None
        st = k.core.schedulers["default"].stats()
        wakeups = k.core.events.wakeups
    total = n * tokens
    if subscribe and got != total:
        raise SystemExit(f"{n}p_stream: {got} token events delivered, expected {total}")
    return {"tok_s": total / wall, "cpu_tok_s": total / max(cpu, 1e-9), "overhead_us": st["overhead_us"],
            "sched_us": st["sched_us"], "sched_cpu_us": st["sched_cpu_us"], "steps": st["steps"],
            "wakeups_per_token": wakeups / total}


async def run_journal(case: str, journal: bool, n: int = 256, calls: int = 50) -> dict[str, float]:
    """One journal case on a fresh on-disk state directory: work per wall second, and commits."""
    d = tempfile.mkdtemp(prefix="lmos-bench-")
    try:
        drv = ScriptedDriver("cycle", max_seqs=n, max_tokens=max(8192, 2 * n))
        async with lmos.Kernel(model=drv, state_dir=d, journal=journal, max_queue=4 * n + 16,
                               plugins=False) as k:
            async def gen(sys: object, argv: list[str]) -> None:
                await sys.llm_generate("go", max_tokens=200)  # type: ignore[attr-defined]

            async def calls_main(sys: object, argv: list[str]) -> None:
                for i in range(calls // 2):
                    await sys.kv_set(f"k{argv[0]}", str(i))  # type: ignore[attr-defined]
                    await sys.tool_call("calc", {"expr": f"{i} * 2"})  # type: ignore[attr-defined]

            t0, c0 = time.perf_counter(), time.process_time()
            if case == "gen":
                pids = [await k.spawn(gen) for _ in range(n)]
            else:
                pids = [await k.spawn(calls_main, [str(i)], caps=["kv", "tool:calc"]) for i in range(n)]
            for pid in pids:
                w = await k.wait(pid)
                if w.exit_status != 0:
                    raise SystemExit(f"journal_{case}: pid {pid} failed: {w.error}")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert k.core is not None
            sj = k.core.sysjournal
            if journal and sj is None:
                raise SystemExit("journal=true gave no syscall journal")
            stats = {"commits": float(sj.commits), "own_commits": float(sj.own_commits),
                     "rows": float(sj.rows)} if sj is not None else {}
        work = n if case == "gen" else n * calls
        return {"per_s": work / wall, "cpu_per_s": work / max(cpu, 1e-9), **stats}
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def journal_cases(tries: int, out: dict[str, Any]) -> None:
    for case in ("gen", "sys"):
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(tries):
            for on in (False, True):  # interleaved: load drifts hit both alike
                runs[on].append(await run_journal(case, on))
        off, on_ = (max(r["per_s"] for r in runs[x]) for x in (False, True))
        cpu_off, cpu_on = (max(r["cpu_per_s"] for r in runs[x]) for x in (False, True))
        # the group commits of the fastest "on" run: how many rows (journaled syscalls) each carried
        fast = max(runs[True], key=lambda r: r["per_s"])
        unit = "processes" if case == "gen" else "syscalls"
        out[f"journal_{case}_off_per_s"] = round(off, 1)
        out[f"journal_{case}_on_per_s"] = round(on_, 1)
        out[f"journal_{case}_cost"] = round(1 - on_ / off, 3)
        out[f"journal_{case}_cpu_cost"] = round(1 - cpu_on / cpu_off, 3)
        pairs = [round(1 - a["per_s"] / b["per_s"], 3) for a, b in zip(runs[True], runs[False], strict=True)]
        out[f"journal_{case}_costs"] = pairs  # each interleaved pair's own cost: how noisy the machine was
        out[f"journal_{case}_commits"] = fast["commits"]
        out[f"journal_{case}_own_commits"] = fast["own_commits"]
        out[f"journal_{case}_rows_per_commit"] = round(fast["rows"] / max(fast["commits"], 1), 1)
        out[f"meets_journal_{case}"] = bool(1 - on_ / off <= 0.15)
        print(f"journal {case}: off {off:.0f} {unit}/s, on {on_:.0f} {unit}/s, cost "
              f"{100 * (1 - on_ / off):.1f}% (per CPU second {100 * (1 - cpu_on / cpu_off):.1f}%; pairs "
              f"{', '.join(f'{100 * c:.0f}%' for c in pairs)}); {fast['rows']:.0f} rows in "
              f"{fast['commits']:.0f} commits ({fast['own_commits']:.0f} of them the committer's own)",
              file=sys.stderr)


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Best of the tries: the highest throughputs, the lowest times."""
    out = {k: max(r[k] for r in runs) for k in ("tok_s", "cpu_tok_s")}
    out.update({k: min(r[k] for r in runs) for k in ("overhead_us", "sched_us", "sched_cpu_us")})
    out["steps"] = runs[0]["steps"]
    out["wakeups_per_token"] = max(r["wakeups_per_token"] for r in runs)
    return out


async def main(quick: bool, tries: int, journal_only: bool = False) -> dict[str, object]:
    out: dict[str, Any] = {"bench": "kernel_overhead", "tries": tries}
    await journal_cases(tries, out)
    if journal_only:
        return out
    for n in SIZES:
        tokens = max(20, (4000 if quick else 20000) // n) if n < 256 else (50 if quick else 200)
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(tries):
            for subscribe in (False, True):  # interleaved: load drifts hit both alike
                runs[subscribe].append(await run_one(n, tokens, subscribe))
        for subscribe in (False, True):
            r = best(runs[subscribe])
            tag = f"{n}p{'_stream' if subscribe else ''}"
            print(f"{tag:>12}: {r['tok_s']:>10.0f} process-tokens/s ({r['cpu_tok_s']:.0f} per CPU s), "
                  f"scheduler {r['sched_us']:.0f} µs/step ({r['sched_cpu_us']:.0f} CPU), overhead "
                  f"{r['overhead_us']:.0f} µs/step over {r['steps']:.0f} steps", file=sys.stderr)
            out[f"tok_s_{tag}"] = round(r["tok_s"], 1)
            out[f"cpu_tok_s_{tag}"] = round(r["cpu_tok_s"], 1)
            out[f"overhead_us_per_step_{tag}"] = round(r["overhead_us"], 1)
            out[f"sched_us_per_step_{tag}"] = round(r["sched_us"], 1)
            out[f"sched_cpu_us_per_step_{tag}"] = round(r["sched_cpu_us"], 1)
            if subscribe:
                out[f"wakeups_per_token_{tag}"] = round(r["wakeups_per_token"], 3)
        out[f"stream_ratio_{n}p"] = round(out[f"tok_s_{n}p_stream"] / out[f"tok_s_{n}p"], 3)
        out[f"stream_cpu_ratio_{n}p"] = round(out[f"cpu_tok_s_{n}p_stream"] / out[f"cpu_tok_s_{n}p"], 3)
    for key in ("sched_us_per_step", "sched_cpu_us_per_step"):
        ratio = out[f"{key}_1024p"] / max(out[f"{key}_256p"], 1e-9)
        out[f"{key.replace('_us_per_step', '')}_step_ratio_1024_256"] = round(ratio, 2)
    out["target_tok_s_256p"] = 200000
    out["meets_target_256p"] = bool(out["tok_s_256p"] >= 200000)
    out["meets_stream_ratio_256p"] = bool(out["stream_ratio_256p"] >= 0.5)
    out["meets_step_scaling"] = bool(out["sched_step_ratio_1024_256"] <= 4)
    print(f"stream/plain at 256p: {out['stream_ratio_256p']:.2f} wall, "
          f"{out['stream_cpu_ratio_256p']:.2f} CPU; scheduler step 1024p/256p: "
          f"{out['sched_step_ratio_1024_256']:.2f} wall, "
          f"{out['sched_cpu_step_ratio_1024_256']:.2f} CPU", file=sys.stderr)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer tokens per process")
    ap.add_argument("--tries", type=int, default=5, help="interleaved runs of each case (best is kept)")
    ap.add_argument("--journal-only", action="store_true", help="only the syscall journal cases")
    args = ap.parse_args()
    result = anyio.run(main, args.quick, max(1, args.tries), args.journal_only)
    print(json.dumps(result))
