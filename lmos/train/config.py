"""The training configuration: one TOML file, checked strictly.

Unknown keys are an error (a misspelt ``learning_rate`` that silently does
nothing wastes a training run).  Command-line options override single fields;
the effective configuration is written next to the trained model as
``train.toml`` so every model directory records how it was made.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from lmos.errors import Errno, SyscallError


class ModelSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Shape of a Llama-architecture decoder trained from scratch."""

    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    vocab_size: int = 1024  # size of the BPE trained alongside the model


class DataSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where conversations come from when ``--data`` is not given, and the eval split."""

    synthetic: int = 20000  # conversations drawn from the seeded corpus generator
    corpus: Literal["base", "broad", "v2"] = "base"  # profile: lmos.train.corpus / corpus_broad / corpus_v2
    corpus_seed: int = 1234
    workers: int = 0  # processes generating the v2 corpus (0 = all CPUs; the corpus is the same for any)
    eval_size: int = 256  # conversations held back for eval loss and task metrics
    max_length: int = 512  # longer tokenized conversations are an error, not truncated


class TrainSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Optimisation, schedule and bookkeeping."""

    steps: int = 1000
    minutes: float = 0.0  # > 0: stop on wall time instead (the schedule follows time)
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_generate: int = 64  # eval conversations run end to end for task metrics (0 = skip)
    precision: Literal["no", "bf16", "fp16"] = "no"  # autocast on accelerators; CPU always fp32
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float16"


class LoraSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """LoRA adapter settings (used with ``--lora``)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = msgspec.field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class TrainConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration of one training run."""

    model: ModelSection = msgspec.field(default_factory=ModelSection)
    data: DataSection = msgspec.field(default_factory=DataSection)
    train: TrainSection = msgspec.field(default_factory=TrainSection)
    lora: LoraSection = msgspec.field(default_factory=LoraSection)


def load_config(path: str | Path | None) -> TrainConfig:
    """Read a TOML config (None gives the defaults); bad files raise ``SyscallError(EINVAL)``."""
    if path is None:
        return TrainConfig()
    p = Path(path)
    if not p.is_file():
        raise SyscallError(Errno.ENOENT, f"no such config file: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
        return msgspec.convert(raw, TrainConfig)
    except tomllib.TOMLDecodeError as exc:
        raise SyscallError(Errno.EINVAL, f"{p}: invalid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise SyscallError(Errno.EINVAL, f"{p}: {exc}") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def dump_config(cfg: TrainConfig) -> str:
    """The config as TOML text (flat sections of scalars and lists, as this schema has)."""
    lines: list[str] = []
    for section, values in msgspec.to_builtins(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)
