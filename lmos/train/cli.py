"""Command-line front end of the training flow: ``lmos train`` and ``lmos corpus``.

``app`` is a ``typer.Typer`` that the main ``lmos`` CLI mounts.  Failures the
user can fix (bad data, a missing file, a bad config) print one ``error:``
line on stderr and exit with status 1, never a traceback.

Rebuild the built-in model (v2: a few minutes on one GPU; on a 2-core CPU in
stages of ``--until-step`` that ``--resume`` continues, see the config's
comments), then copy the model files (not ``checkpoints/``) into
``lmos/models/builtin``::

    lmos train --config lmos/train/configs/builtin_v2.toml --out runs/builtin-v2 --device cuda
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lmos.errors import SyscallError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train and fine-tune lmos models.")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Directory for the trained model (and checkpoints)."),
    config: Path | None = typer.Option(None, "--config", help="Training config (TOML); defaults if omitted."),
    data: Path | None = typer.Option(None, "--data", help="JSONL chat data; default: the synthetic corpus."),
    from_dir: Path | None = typer.Option(None, "--from", help="Fine-tune this model directory."),
    lora: bool = typer.Option(False, "--lora", help="Fine-tune LoRA adapters only (needs --from)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimizer steps (overrides the config)."),
    minutes: float | None = typer.Option(
        None, "--minutes", min=0.01, help="Train for this wall time (wins over --steps)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for init, split and batch order."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    until_step: int = typer.Option(
        0, "--until-step", min=0, help="End this stage at that step (checkpointed); --resume continues."
    ),
    stop_after: float = typer.Option(
        0.0, "--stop-after-minutes", min=0.0, help="Wall-clock guard: end early (schedule keeps the steps)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or log lines."),
) -> None:
    """Train a model from scratch, or fine-tune one (fully or with LoRA)."""
    from lmos.train.config import load_config

    try:
        cfg = load_config(config)
        if lora and from_dir is None:
            raise _fail("--lora fine-tunes an existing model: give --from DIR")
        if steps is not None:
            cfg.train.steps, cfg.train.minutes = steps, 0.0
        if minutes is not None:
            cfg.train.minutes = minutes
        if seed is not None:
            cfg.train.seed = seed
        from lmos.train.trainer import TrainJob
        from lmos.train.trainer import train as run_training

        def log(message: str) -> None:
            if not quiet:
                typer.echo(message, err=True)

        result = run_training(
            TrainJob(
                config=cfg,
                out=out,
                data=data,
                from_dir=from_dir,
                lora=lora,
                device=device,
                resume=resume,
                until_step=until_step,
                stop_after_minutes=stop_after,
                show_progress=not quiet,
                log=log,
            )
        )
    except SyscallError as exc:
        raise _fail(exc.message) from None
    except (OSError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    typer.echo(f"saved {result.out} ({result.steps} steps, {result.seconds:.0f}s)")


@app.command()
def corpus(
    n: int = typer.Option(1000, "--n", "-n", min=1, help="How many conversations."),
    out: Path = typer.Option(Path("-"), "--out", help="JSONL file to write ('-' = stdout)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same corpus."),
    split: str = typer.Option(
        "train", "--split", help="train, or heldout (no phrasing family, key, prompt or value of train)."
    ),
    profile: str = typer.Option("base", "--profile", help="base, broad or v2 (declared tools, apps)."),
) -> None:
    """Write synthetic tool-use conversations as JSONL."""
    from lmos.train.corpus import generate

    if split not in ("train", "heldout"):
        raise _fail(f"unknown split {split!r} (use train or heldout)")
    if profile not in ("base", "broad", "v2"):
        raise _fail(f"unknown profile {profile!r} (use base, broad or v2)")
    convs = generate(n, seed, split, profile, workers=None)
    try:
        if str(out) == "-":
            for conv in convs:
                sys.stdout.write(conv.to_json() + "\n")
        else:
            from lmos.train.data import write_jsonl

            write_jsonl(out, convs)
            typer.echo(f"wrote {n} conversations to {out}", err=True)
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}") from None
