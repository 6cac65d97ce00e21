"""Recovery by replay on the built-in model: the crash test, and how long recovery takes.

Part 1, the crash test (``tests/crashkit.py`` with ``CRASHKIT_MODEL=builtin``): ``--procs`` processes of
mixed kinds (agents with tool calls, kv and file writes; parents with children) in a kernel subprocess
that is SIGKILLed ``--kills`` times at seeded random points, then run to the end, against an
uninterrupted run: processes identical or reported lost, acknowledged writes lost or applied twice.

Part 2, recovery time (in this process, one loaded model): for 8 and 32 processes whose journals hold
about 10 and 40 steps, with and without a checkpoint each turn, the processes make their steps and then
block; the committed database is copied (exactly what a kill -9 leaves) and a kernel booted on the
copy recovers them.  ``recover_s`` is the time from the start of that boot until every process is live
again (its journal replayed); ``boot_s`` the same boot with nothing to recover.

Figures: ``crash_*`` (kills, recoveries, identical, lost, writes, lost_writes, applied_twice),
``recover_s_{n}p_{L}steps[_ckpt]`` and ``replayed_steps_...``.  Progress on stderr; the last stdout line
is JSON.

    python benchmarks/recovery.py [--quick] [--kills K] [--procs N] [--scripted]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import lmos
from lmos.drivers.base import Driver
from lmos.syscalls.client import Sys
from lmos.syscalls.table import AppSpec

KIT = Path(__file__).resolve().parent.parent / "tests" / "crashkit.py"


def crash_test(procs: int, kills: int, seed: int, builtin: bool) -> dict[str, Any]:
    env = dict(os.environ, CRASHKIT_MODEL="builtin" if builtin else "")
    root = Path(tempfile.mkdtemp(prefix="lmos-recovery-"))

    def to_end(state: Path) -> dict[str, Any]:
        out = subprocess.run([sys.executable, str(KIT), str(state), str(procs)], capture_output=True,
                             text=True, env=env, timeout=3600)
        if out.returncode != 0:
            raise SystemExit(f"crashkit failed: {out.stderr[-2000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    try:
        t0 = time.perf_counter()
        want = to_end(root / "reference")
        print(f"crash test: uninterrupted run {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        rng = random.Random(seed)
        state = root / "crashed"
        recoveries = 0
        for n in range(kills):
            p = subprocess.Popen([sys.executable, str(KIT), str(state), str(procs)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, env=env)
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.startswith("ready"):
                recoveries += sum(1 for r in json.loads(line[6:]) if r["recovered"])
            time.sleep(rng.uniform(0.2, 3.0))
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            p.stdout.close()
            print(f"crash test: kill {n + 1}/{kills}", file=sys.stderr)
        got = to_end(state)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    identical = sum(1 for i, r in want["procs"].items() if got["procs"][i] == r)
    lost = sum(1 for i, r in want["procs"].items() if got["procs"][i] != r and got["procs"][i]["status"] != 0)
    done = {i for i, r in want["procs"].items() if got["procs"][i] == r}
    writes = lost_writes = twice = 0
    for name, text in want["files"].items():
        if name.split(".")[0] in done:
            for line in text.splitlines():
                n_got = got["files"].get(name, "").splitlines().count(line)
                writes, lost_writes, twice = writes + 1, lost_writes + (n_got == 0), twice + (n_got > 1)
    for key, value in want["kv"].items():
        if key[1:].split("-")[0] in done:
            writes, lost_writes = writes + 1, lost_writes + (got["kv"].get(key) != value)
    return {"crash_procs": procs, "crash_kills": kills, "crash_recoveries": recoveries,
            "crash_identical": identical, "crash_lost": lost, "crash_differs": procs - identical - lost,
            "crash_writes": writes, "crash_lost_writes": lost_writes, "crash_applied_twice": twice}


async def turns(sys: Sys, argv: list[str]) -> Any:
    steps, ckpt = int(argv[0]), argv[1] == "1"
    state = (await sys.call("restore")).state if ckpt else None
    state = state or {"turn": 0}
    while state["turn"] < steps // 2:  # two journal steps a turn (three with its checkpoint)
        r = await sys.llm_generate(f" turn {state['turn']}:", max_tokens=4, temperature=0)
        await sys.kv_set(f"t{sys.pid}", r.text)
        state = {"turn": state["turn"] + 1}
        if ckpt:
            await sys.call("checkpoint", state=state)
    await sys.sleep(3600)  # in flight when the kernel "dies": live again after recovery


def kernel(driver: Driver, state: Path) -> lmos.Kernel:
    k = lmos.Kernel(model=driver, state_dir=str(state), plugins=False)
    k.programs.register(AppSpec("bench.turns", turns, frozenset({"llm", "kv"})))
    return k


def copy_db(src: Path, dst: Path) -> None:
    dst.mkdir()
    a, b = sqlite3.connect(src / "lmos.db"), sqlite3.connect(dst / "lmos.db")
    a.backup(b)
    a.close()
    b.close()


async def recovery_time(driver: Driver, n: int, steps: int, ckpt: bool) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="lmos-recovery-"))
    try:
        async with kernel(driver, root / "a") as k:
            assert k.core is not None
            pids = [await k.spawn("bench.turns", [str(steps), "1" if ckpt else "0"]) for _ in range(n)]
            with anyio.fail_after(1800):
                while not all(k.core.procs[p].blocked_on == "sleep" for p in pids):
                    await anyio.sleep(0.02)
            await k.core.journal.flush()
            rows = k.core.journal.query(f"SELECT count(*) FROM sysjournal WHERE pid IN ({','.join('?' * n)})",
                                        pids)[0][0]
            copy_db(root / "a", root / "b")
        t0 = time.perf_counter()
        async with kernel(driver, root / "b") as k:
            assert k.sys is not None
            with anyio.fail_after(600):
                while k.sys.recovering:
                    await anyio.sleep(0.001)
            took = time.perf_counter() - t0
            back = sum(1 for r in k.recovered if r["recovered"])
        t0 = time.perf_counter()
        async with kernel(driver, root / "empty"):
            boot = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if back != n:
        raise SystemExit(f"{back} of {n} processes recovered")
    return {"recover_s": took, "boot_s": boot, "replayed_steps": rows / n}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "recovery", "model": "scripted" if args.scripted else "builtin"}
    out.update(crash_test(args.procs, args.kills, args.seed, not args.scripted))
    print(f"crash test: {out['crash_kills']} kills, {out['crash_recoveries']} recoveries; "
          f"{out['crash_identical']}/{args.procs} identical, {out['crash_lost']} lost, "
          f"{out['crash_differs']} differ; {out['crash_writes']} writes: {out['crash_lost_writes']} lost, "
          f"{out['crash_applied_twice']} applied twice", file=sys.stderr)
    if args.scripted:
        from lmos.drivers.scripted import ScriptedDriver

        driver: Any = ScriptedDriver("cycle")
    else:
        from lmos.config import load_config
        from lmos.system_boot import load_driver

        driver = await anyio.to_thread.run_sync(load_driver, None, load_config(state_dir=":memory:"))
    for n in (8,) if args.quick else (8, 32):
        for steps in (10,) if args.quick else (10, 40):
            for ckpt in (False, True):
                r = await recovery_time(driver, n, steps, ckpt)
                tag = f"{n}p_{steps}steps{'_ckpt' if ckpt else ''}"
                out[f"recover_s_{tag}"] = round(r["recover_s"], 3)
                out[f"boot_s_{tag}"] = round(r["boot_s"], 3)
                out[f"replayed_steps_{tag}"] = round(r["replayed_steps"], 1)
                print(f"recovery {tag}: {r['recover_s']:.3f}s (boot alone {r['boot_s']:.3f}s), "
                      f"{r['replayed_steps']:.1f} journal steps a process", file=sys.stderr)
    if not args.scripted:
        driver.close()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="8 processes, 10 steps only")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--procs", type=int, default=8, help="processes in the crash test")
    ap.add_argument("--seed", type=int, default=1129)
    ap.add_argument("--scripted", action="store_true", help="the scripted driver, not the built-in model")
    result = anyio.run(main, ap.parse_args())
    print(json.dumps(result))
