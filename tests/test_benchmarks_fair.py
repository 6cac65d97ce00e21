"""benchmarks/throughput.py compares fairly: cold prompts, fresh processes, tokens checked.

The runs use a 2-layer random-init Llama (``--size tiny``), 2 prompts x 4 tokens and one round:
the harness is under test here, not the speed.  Each peer is a new interpreter (torch and
transformers imported afresh), so these take a few seconds per peer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "throughput.py"
TINY = ["--size", "tiny", "--prompts", "2", "--new-tokens", "4", "--rounds", "1", "--skip-memory"]


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("throughput_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(*extra: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, *extra], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr  # one JSON line, progress on stderr only
    return proc.returncode, json.loads(lines[0]), proc.stderr


def test_cold_prompts_share_no_block_and_shared_mode_shares_exactly_the_system_prompt() -> None:
    tb = bench_module()
    cold = argparse.Namespace(size="tiny", mode="cold", system_tokens=32, rounds=3, prompts=8)
    system, rounds = tb.workload(cold)
    assert system == []
    heads = [tuple(p[: tb.BLOCK]) for warm, timed in rounds for p in warm + timed]
    assert len(heads) == 3 * 2 * 8 and len(set(heads)) == len(heads)
    timed_1 = {tuple(p) for p in rounds[0][1]}
    assert not timed_1 & {tuple(p) for p in rounds[1][1]}  # new prompts every round

    shared = argparse.Namespace(size="tiny", mode="shared", system_tokens=32, rounds=2, prompts=4)
    system, rounds = tb.workload(shared)
    assert len(system) == 32
    for warm, timed in rounds:
        assert all(p[:32] == system for p in warm + timed)
    own = [tuple(p[32 : 32 + tb.BLOCK]) for warm, timed in rounds for p in warm + timed]
    assert len(set(own)) == len(own)


# Between them the two runs start every peer (the kernel, the driver, the bare loop, the padded
# batch and the sequential reference), each in a process of its own, ~5 s of CPU apiece.
def test_peers_match_generate_in_fresh_processes_and_report_figures() -> None:
    rc, fig, err = run("--peers", "lmos,bare")
    assert rc == 0, err
    assert fig["bench"] == "throughput" and fig["mode"] == "cold" and fig["rounds"] == 1
    for peer in ("lmos", "bare", "sequential"):
        assert isinstance(fig[f"{peer}_tok_s"], float) and fig[f"{peer}_tok_s"] > 0
        assert fig[f"{peer}_tok_s_median"] == fig[f"{peer}_tok_s"]  # one round: best is the median
    assert "padded_tok_s" not in fig
    # cold prompts: nothing came from the prefix cache, and that is reported for the lmos peer
    assert fig["lmos_prefix_hit_rate"] == 0 and "bare_prefix_hit_rate" not in fig
    assert fig["sequences_checked"] == 2 * 2  # 2 prompts for each of 2 peers, against generate
    for ratio in ("ratio_lmos_vs_bare", "ratio_lmos_vs_sequential"):
        assert isinstance(fig[ratio], float) and fig[ratio] > 0
    assert "round 1/1           lmos:" in err and "prefix-cache hits 0%" in err  # progress on stderr


def test_one_wrong_token_fails_the_run_and_prints_no_throughput() -> None:
    rc, fig, err = run("--peers", "lmos_driver,padded", "--corrupt", "padded")
    assert rc == 1, err
    assert "round 1/1    lmos_driver:" in err  # checked and passed before the corrupted peer ran
    assert fig["mismatch_peer"] == "padded" and fig["mismatch_sequences"] == 1
    assert not [k for k in fig if "tok_s" in k or k.startswith("ratio")]
    assert "padded differs from model.generate in round 1" in err
