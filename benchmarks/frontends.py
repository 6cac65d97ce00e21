"""How fast a front end reaches a running kernel (issue 12: one kernel, many front ends).

Measured as a user would see it, wall-clock time of whole commands in fresh
processes (Python start-up, imports, attaching over the control socket, the
work, detaching):

* ``cold_start_s``: ``lmos run echo hi`` on a state directory with no kernel,
  so the kernel process starts and loads the model first;
* ``run_echo_median_s``: ``lmos run echo hi`` against a running kernel
  (``lmos up``), median of ``--n`` runs (goal: under 1.5 s);
* ``lmosh_ps_median_s``: ``lmosh -c ps`` against the same kernel, median of ``--n``.

The kernel is stopped at the end (``lmos down --force``, then SIGKILL if need
be) and the temporary state directory removed.  Progress goes to stderr; the
last line on stdout is one JSON object of figures.
Usage: ``python benchmarks/frontends.py [--n 10] [--model builtin|scripted|DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LMOS = "from lmos.cli import main; main()"
LMOSH = "from lmos.cli import shell_main; shell_main()"
GOAL_S = 1.5


def timed(entry: str, *args: str, state: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", entry, *args, "--state-dir", str(state)], capture_output=True,
                       text=True, env=env, timeout=600, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"frontends: {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return dt


def kernel_pid(state: Path) -> int | None:
    try:
        return int((state / "kernel.pid").read_text())
    except (OSError, ValueError):
        return None


def wait_gone(state: Path, timeout: float = 30) -> None:
    pid = kernel_pid(state)
    deadline = time.monotonic() + timeout
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="runs per warm measurement")
    ap.add_argument("--model", default="builtin", help="builtin, scripted or a model directory")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMOS_")}
    env["LMOS_MODEL"] = a.model
    with tempfile.TemporaryDirectory(prefix="lmos-frontends-") as tmp:
        state = Path(tmp) / "state"
        try:
            print(f"frontends: cold start (model {a.model})...", file=sys.stderr, flush=True)
            cold = timed(LMOS, "run", "echo", "hi", state=state, env=env)
            print(f"frontends: cold start {cold:.2f}s", file=sys.stderr, flush=True)
            wait_gone(state)  # the kernel ends once its only front end has gone
            timed(LMOS, "up", state=state, env=env)
            runs: dict[str, list[float]] = {"run_echo": [], "lmosh_ps": []}
            for i in range(a.n):
                runs["run_echo"].append(timed(LMOS, "run", "echo", "hi", state=state, env=env))
                runs["lmosh_ps"].append(timed(LMOSH, "-c", "ps", state=state, env=env))
                print(f"frontends: {i + 1}/{a.n}: run echo {runs['run_echo'][-1]:.3f}s, lmosh -c ps "
                      f"{runs['lmosh_ps'][-1]:.3f}s", file=sys.stderr, flush=True)
        finally:
            subprocess.run([sys.executable, "-c", LMOS, "down", "--force", "--state-dir", str(state)],
                           capture_output=True, env=env, timeout=120, check=False)
            wait_gone(state)
    echo, ps = statistics.median(runs["run_echo"]), statistics.median(runs["lmosh_ps"])
    print(json.dumps({"model": a.model, "n": a.n, "cold_start_s": round(cold, 3),
                      "run_echo_median_s": round(echo, 3), "lmosh_ps_median_s": round(ps, 3),
                      "run_echo_max_s": round(max(runs["run_echo"]), 3),
                      "lmosh_ps_max_s": round(max(runs["lmosh_ps"]), 3),
                      "goal_s": GOAL_S, "goal_met": echo < GOAL_S and ps < GOAL_S}))


if __name__ == "__main__":
    main()
