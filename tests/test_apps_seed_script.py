"""``examples/seed-apps.sh``: the files each seed app needs are created from lmosh, and each app runs.

On the scripted driver (every answer is "neutral"), so this checks the plumbing the README transcript
relies on, not the model: the missing-file hint, multi-line here-documents, every app's result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "seed-apps.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_seed_apps_script_on_the_scripted_driver(tmp_path: Path) -> None:
    env = {**os.environ, "LMOS_BIN": str(Path(sys.executable).parent), "LMOS_MODEL": "scripted:neutral"}
    env.pop("LMOS_STATE_DIR", None)
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "state")], capture_output=True, text=True,
                       env=env, timeout=240, check=False)
    out = r.stdout
    assert r.returncode == 0, r.stderr + out
    # the app explains the missing FAQ in one line naming the lmosh command, before the FAQ exists
    hint = "no FAQ at /support/faq.md \u2014 create it: write /support/faq.md <<EOF"
    assert f"lmosh: support: ENOENT: {hint}" in out
    # the multi-line files arrived whole
    assert "Do you ship abroad?\nWe ship to 30 countries." in out
    refunds = out.split("lmosh> run support how long do refunds take?", 1)[1].split("lmosh> ", 1)[0]
    assert "handoff" not in refunds, refunds  # answered by the model: the hand-off flag is off, not shown
    for app_result in ("Regional bank shares plunge after surprise loss", "alerts: (none)",
                       "Trail tent", "Pasta maker", 'plan: ["neutral"]'):
        assert app_result in out, out
    assert out.count("lmosh> run ") == 8
    # the question nothing in the FAQ mentions is handed to a human without asking the model
    gift = out.split("lmosh> run support do you sell gift vouchers?", 1)[1].split("lmosh> ", 1)[0]
    assert "handoff: true" in gift and "passing your question to a human" in gift, gift
    # the kernel the script started is stopped again
    lmos = str(Path(sys.executable).parent / "lmos")
    status = subprocess.run([lmos, "status", "--state-dir", str(tmp_path / "state")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert status.returncode != 0
