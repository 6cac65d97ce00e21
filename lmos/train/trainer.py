"""The training loop behind ``lmos train``.

One function, :func:`train`, runs a whole job: data and split, tokenizer,
model (fresh, full fine-tune or LoRA), accelerate for the device, a warmup +
cosine schedule, eval loss and task metrics on the eval split, checkpoints and
resume, a rich progress bar, and finally a standard transformers model
directory (``config.json``, ``generation_config.json``, ``model.safetensors``,
tokenizer files, plus ``train.toml`` and ``metrics.json`` recording the run).

Determinism: the model init, the batch order and dropout all derive from the
seed, so two runs with the same config and ``--steps`` give identical weights
on the same hardware.  ``--minutes`` ends on wall time, so it trades that for a
fixed budget (the learning-rate schedule then follows elapsed time).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.train import checkpoint
from lmos.train.build import (
    build_model,
    build_tokenizer,
    count_params,
    load_conversations,
    special_ids,
    split,
)
from lmos.train.config import TrainConfig, dump_config
from lmos.train.encode import Example, batches, collate, encode_all


@dataclass
class TrainJob:
    """What to train, from what, and where the result goes."""

    config: TrainConfig
    out: Path
    data: Path | None = None
    from_dir: Path | None = None
    lora: bool = False
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    resume: bool = False
    until_step: int = 0  # > 0: end this stage at that step (checkpoint saved); --resume continues
    stop_after_minutes: float = 0.0  # > 0: a wall-clock guard; the schedule still follows the steps
    show_progress: bool = True
    log: Callable[[str], None] = field(default=lambda msg: None)


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float
    params: int
    metrics: dict[str, Any]
    model: Any = None  # the trained model as it was at the end (a peft model under LoRA)


def _accelerator(job: TrainJob) -> Any:
    import torch
    from accelerate import Accelerator

    dev = job.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise SyscallError(Errno.EINVAL, f"--device {dev}: no CUDA device on this machine")
    if dev not in ("auto", "cpu") and not dev.startswith("cuda"):
        raise SyscallError(Errno.EINVAL, f"unknown device {dev!r} (use auto, cpu, cuda or cuda:N)")
    if dev.startswith("cuda:"):
        torch.cuda.set_device(int(dev.split(":", 1)[1]))
    cpu = dev == "cpu" or (dev == "auto" and not torch.cuda.is_available())
    precision = "no" if cpu else job.config.train.precision
    return Accelerator(cpu=cpu, mixed_precision=precision)


def _lr_factor(frac: float, step: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` by ``frac`` = 1."""
    if step < warmup:
        return (step + 1) / warmup
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _optimizer(model: Any, lr: float, weight_decay: float, fused: bool) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused or None)


def eval_loss(model: Any, examples: list[Example], pad_id: int, device: Any, batch_size: int) -> float:
    """Mean loss per trained token over the eval examples."""
    import torch

    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id)
            n = int((batch["labels"][:, 1:] != -100).sum())
            out = model(**{k: v.to(device) for k, v in batch.items()})
            total += float(out.loss) * n
            count += n
    model.train(was_training)
    return total / max(1, count)


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]train[/]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


class _StageStop:
    """Ends a run early: at a stage's last step (``--until-step``) or on a wall-clock guard."""

    def __init__(self, until_step: int, guard_seconds: float, start: float) -> None:
        self.until, self.guard, self.start = until_step, guard_seconds, start
        self.why = ""

    def reached(self, step: int) -> bool:
        if self.until > 0 and step >= self.until:
            self.why = f"stage end at step {self.until}"
        elif self.guard > 0 and time.monotonic() - self.start >= self.guard:
            self.why = f"wall-clock guard of {self.guard / 60:g} minutes"
        return bool(self.why)


def train(job: TrainJob) -> TrainResult:
    """Run one training job end to end and write the model directory."""
    import torch

    cfg, tc = job.config, job.config.train
    if tc.steps <= 0 and tc.minutes <= 0:
        raise SyscallError(Errno.EINVAL, "nothing to do: set steps > 0 or minutes > 0")
    out = job.out
    resume_from = checkpoint.latest(out) if job.resume else None
    if job.resume and resume_from is None:
        raise SyscallError(Errno.ENOENT, f"--resume: no checkpoint under {checkpoint.checkpoint_root(out)}")

    torch.manual_seed(tc.seed)
    convs, source = load_conversations(cfg, job.data)
    train_convs, eval_convs = split(convs, cfg.data.eval_size, tc.seed)
    job.log(f"data: {len(train_convs)} train / {len(eval_convs)} eval conversations from {source}")
    if resume_from is not None:
        from lmos.train.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(resume_from / "tokenizer")
    else:
        tokenizer = build_tokenizer(cfg, train_convs, job.from_dir)
    out.mkdir(parents=True, exist_ok=True)  # only once the data and the base model are known good
    workers = cfg.data.workers or os.cpu_count() or 1
    # a file's over-long conversation is an error naming its line; the synthetic corpus drops its few
    limit = cfg.data.max_length if job.data is not None else 1 << 30
    train_ex = encode_all(tokenizer, train_convs, limit, source, workers)
    eval_ex = encode_all(tokenizer, eval_convs, limit, source)
    if job.data is None:
        before = len(train_ex) + len(eval_ex)
        train_ex = [e for e in train_ex if len(e.input_ids) <= cfg.data.max_length]
        fits = [len(e.input_ids) <= cfg.data.max_length for e in eval_ex]
        kept = [(c, e) for c, e, ok in zip(eval_convs, eval_ex, fits, strict=True) if ok]
        eval_convs, eval_ex = [c for c, _ in kept], [e for _, e in kept]
        if before > len(train_ex) + len(eval_ex):
            job.log(f"data: dropped {before - len(train_ex) - len(eval_ex)} synthetic conversations over "
                    f"{cfg.data.max_length} tokens")
    pad_id = special_ids(tokenizer)["pad"]

    model = build_model(cfg, tokenizer, job.from_dir, tc.seed)
    if job.lora:
        from lmos.train.lora import apply_lora

        model = apply_lora(model, cfg.lora)
    params = count_params(model)
    job.log(f"model: {params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, lora={job.lora}")

    accelerator = _accelerator(job)
    optimizer = _optimizer(model, tc.lr, tc.weight_decay, fused=accelerator.device.type == "cuda")
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    state = checkpoint.load(accelerator, resume_from) if resume_from is not None else checkpoint.RunState()
    if resume_from is not None:
        job.log(f"resumed from {resume_from} at step {state.step}")

    budget = tc.minutes * 60.0
    history: list[dict[str, Any]] = []
    model.train()
    started = time.monotonic() - state.elapsed
    loop_start = time.monotonic()
    tokens_seen = 0
    order: list[list[int]] = []

    def schedule() -> float:
        return (time.monotonic() - started) / budget if budget > 0 else state.step / tc.steps

    guard = job.stop_after_minutes * 60.0
    stop = _StageStop(job.until_step, guard, loop_start)

    def fraction() -> float:
        return 1.0 if stop.reached(state.step) else schedule()

    with _progress(job.show_progress) as bar:
        task = bar.add_task("train", total=1000, step=state.step, loss="-", rate="")
        while fraction() < 1.0:
            order = list(batches(train_ex, tc.batch_size, tc.seed, state.epoch))
            while state.batch_in_epoch < len(order) and fraction() < 1.0:
                factor = _lr_factor(schedule(), state.step, tc.warmup_steps, tc.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = tc.lr * factor
                batch = collate([train_ex[i] for i in order[state.batch_in_epoch]], pad_id)
                with accelerator.autocast():
                    loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                accelerator.backward(loss)
                if tc.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.batch_in_epoch += 1
                tokens_seen += int(batch["attention_mask"].sum())
                elapsed = time.monotonic() - started
                if state.step % 10 == 0 or state.step == 1:
                    rate = f"{tokens_seen / max(1e-9, time.monotonic() - loop_start):.0f} tok/s"
                    bar.update(
                        task,
                        completed=min(1000, int(fraction() * 1000)),
                        step=state.step,
                        loss=f"{loss.item():.4f}",
                        rate=rate,
                    )
                if tc.eval_every > 0 and state.step % tc.eval_every == 0:
                    el = eval_loss(model, eval_ex, pad_id, device, tc.batch_size)
                    history.append(
                        {
                            "step": state.step,
                            "train_loss": loss.item(),
                            "eval_loss": el,
                            "seconds": round(elapsed, 1),
                        }
                    )
                    job.log(
                        f"step {state.step}: train loss {loss.item():.4f}, eval loss {el:.4f}, "
                        f"{elapsed:.0f}s, {tokens_seen / max(1e-9, time.monotonic() - loop_start):.0f} tok/s"
                    )
                if tc.checkpoint_every > 0 and state.step % tc.checkpoint_every == 0:
                    state.elapsed = elapsed
                    checkpoint.save(accelerator, tokenizer, out, state, tc.keep_checkpoints)
            if state.batch_in_epoch >= len(order):
                state.epoch += 1
                state.batch_in_epoch = 0
        bar.update(task, completed=1000, step=state.step)
    seconds = time.monotonic() - started
    if stop.why and tc.checkpoint_every > 0:
        state.elapsed = seconds
        checkpoint.save(accelerator, tokenizer, out, state, tc.keep_checkpoints)
        job.log(f"stage ends at step {state.step} ({stop.why}); continue with --resume")

    model = accelerator.unwrap_model(model)
    metrics: dict[str, Any] = {
        "steps": state.step,
        "train_seconds": round(seconds, 1),
        "params": params,
        "epochs": round(state.epoch + state.batch_in_epoch / max(1, len(order)), 2),
        "eval_loss": eval_loss(model, eval_ex, pad_id, device, tc.batch_size),
    }
    if stop.why:
        metrics["stopped"] = stop.why
    if tc.eval_generate > 0 and eval_convs and not (stop.why and job.until_step):
        from lmos.train.evaluate import task_metrics

        metrics.update(task_metrics(model, tokenizer, eval_convs[: tc.eval_generate]))
    metrics["history"] = history
    job.log("final: " + json.dumps({k: v for k, v in metrics.items() if k != "history"}))
    _export(job, model, tokenizer, metrics)
    return TrainResult(
        out=out, steps=state.step, seconds=seconds, params=params, metrics=metrics, model=model
    )


def _export(job: TrainJob, model: Any, tokenizer: Any, metrics: dict[str, Any]) -> None:
    """Write the standard model directory (LoRA: the adapter too, and the merged model)."""
    import torch

    out = job.out
    to_save = model
    if job.lora:
        from lmos.train.lora import merged_copy

        model.save_pretrained(str(out / "adapter"))
        to_save = merged_copy(model)
    dtype = getattr(torch, job.config.train.save_dtype)
    to_save = to_save.to("cpu")
    if dtype != torch.float32:
        import copy

        to_save = copy.deepcopy(to_save).to(dtype)
    to_save.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out), save_jinja_files=False)
    (out / "train.toml").write_text(dump_config(job.config))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
