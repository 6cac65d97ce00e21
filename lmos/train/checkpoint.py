"""Checkpoints: periodic snapshots of a run that ``--resume`` continues from.

A checkpoint is a folder ``OUT/checkpoints/step-NNNNNNN`` holding accelerate's
saved state (model, optimizer, RNG states), the tokenizer (a resumed run must
use the exact same ids) and ``state.json`` (step, epoch, position in the epoch,
elapsed seconds).  Only the newest few are kept.  The folder is written under a
temporary name and renamed, so a run killed mid-save never leaves a checkpoint
that looks complete but is not.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PREFIX = "step-"


@dataclass
class RunState:
    """Where the training loop is; enough to continue bit for bit."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0


def checkpoint_root(out: Path) -> Path:
    return out / "checkpoints"


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint of a run, if any."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())
    return done[-1] if done else None


def save(accelerator: Any, tokenizer: Any, out: Path, state: RunState, keep: int) -> Path:
    """Write a checkpoint for ``state`` and prune old ones beyond ``keep``."""
    root = checkpoint_root(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:07d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp / "tokenizer"), save_jinja_files=False)
    (tmp / "state.json").write_text(json.dumps(asdict(state)))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    done = sorted(p for p in root.iterdir() if p.name.startswith(PREFIX))
    for old in done[: max(0, len(done) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(accelerator: Any, path: Path) -> RunState:
    """Restore accelerate's state from a checkpoint and return the loop position."""
    accelerator.load_state(str(path))
    return RunState(**json.loads((path / "state.json").read_text()))
