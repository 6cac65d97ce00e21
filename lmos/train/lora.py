"""LoRA fine-tuning with peft: wrap, then merge for a standard model directory.

With LoRA only small low-rank adapter matrices train; the base weights stay
frozen, so fine-tuning needs little memory and the adapter alone can be kept.
lmos's driver loads plain transformers directories, so after training the
adapter is also merged into a copy of the base model and saved in full.
"""

from __future__ import annotations

import copy
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.train.config import LoraSection


def apply_lora(model: Any, cfg: LoraSection) -> Any:
    """Wrap ``model`` with LoRA adapters on the configured modules (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.target_modules if t in present]
    if not targets:
        raise SyscallError(
            Errno.EINVAL, f"none of the LoRA target modules {cfg.target_modules} exist in the model"
        )
    lora_cfg = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lora_cfg)


def is_adapter_param(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter."""
    return "lora_" in name


def merged_copy(model: Any) -> Any:
    """A plain transformers model with the adapters folded in; ``model`` itself is left as is."""
    return copy.deepcopy(model).merge_and_unload()
