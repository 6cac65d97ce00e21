"""The crash test: a kernel subprocess SIGKILLed at seeded random points, 20 times, then let finish.

32 processes of mixed kinds run in ``tests/crashkit.py`` (agents with tool calls, kv and file writes;
parents with children they wait for).  After the last restart every process must have completed with
output identical to an uninterrupted run, or be reported lost with a reason; no acknowledged file or
kv write may be lost, and none applied twice.  The figures are counted and printed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KIT = Path(__file__).resolve().parent / "crashkit.py"
N = 32
KILLS = 20


def run_to_end(state: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(KIT), str(state), str(N)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_sigkill_at_random_points(tmp_path: Path) -> None:
    t0 = time.monotonic()
    want = run_to_end(tmp_path / "reference")
    state = tmp_path / "crashed"
    rng = random.Random(20261129)
    recovered_total = kills = 0
    while kills < KILLS:
        p = subprocess.Popen([sys.executable, str(KIT), str(state), str(N)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("ready"), line
        recovered_total += sum(1 for r in json.loads(line[6:]) if r["recovered"])
        time.sleep(rng.uniform(0.02, 0.35))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        kills += 1
    got = run_to_end(state)
    identical = lost = 0
    problems = []
    for i, ref in want["procs"].items():
        mine = got["procs"][i]
        if mine == ref:
            identical += 1
        elif mine["status"] != 0 and mine["error"]:
            lost += 1  # reported lost, with its reason
        else:
            problems.append(f"process {i}: {mine} != {ref}")
    # every acknowledged write is there exactly once: file lines and kv values of the processes that finished
    done = {i for i, ref in want["procs"].items() if got["procs"][i] == ref}
    writes = lost_writes = twice = 0
    for name, text in want["files"].items():
        if name.split(".")[0] not in done:
            continue
        for line in text.splitlines():
            writes += 1
            n = got["files"].get(name, "").splitlines().count(line)
            lost_writes += n == 0
            twice += n > 1
    for key, value in want["kv"].items():
        if key[1:].split("-")[0] in done:
            writes += 1
            lost_writes += got["kv"].get(key) != value
    print(f"\ncrash test: {kills} kills, {recovered_total} process recoveries; {identical} of {N} processes "
          f"identical to the uninterrupted run, {lost} reported lost; {writes} acknowledged writes checked, "
          f"{lost_writes} lost, {twice} applied twice; {time.monotonic() - t0:.1f}s")
    assert not problems, problems
    assert lost_writes == 0 and twice == 0
    assert recovered_total > 0 and identical + lost == N
    assert identical >= N // 2  # recovery does its job: most processes come through a kill unchanged
