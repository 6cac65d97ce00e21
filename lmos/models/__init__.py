"""Model files shipped inside the lmos package.

``builtin/`` holds the default model: a small Llama-architecture decoder and
its BPE tokenizer, trained from scratch by ``lmos train`` on the synthetic
tool-use corpus (its exact config is ``builtin/train.toml``).  Shipping it in
the package lets a fresh install run apps offline, with no download and no GPU.
"""

from __future__ import annotations

from pathlib import Path


def builtin_model_path() -> Path:
    """The directory of the built-in model (a standard transformers model directory)."""
    return Path(__file__).resolve().parent / "builtin"
