"""Quality of the built-in model on fresh, held-out tool-use conversations.

Generates 200 conversations with a seed the model was not trained on, from the
held-out slice of values (none of them occurs in the training corpus), and
replays them end to end with greedy decoding: the model writes every assistant
turn, its calls run on the real tool functions (calc's ``evaluate`` and
``format_result``, a dict for the key-value store, a clock), and each turn is
scored (see :mod:`lmos.train.evaluate`):

* ``tool_call_acc``: a valid call to the right tool with exactly the right arguments;
* ``answer_acc``: the final answer contains the tool's result;
* ``no_tool_acc``: small talk and repeat requests answered without a tool.

A second, smaller set (``--broad``, default 100) comes from the ``broad`` corpus
profile: open-vocabulary values and keys and phrasings the base corpus lacks.
Its figures (``broad_*``) measure how far the model generalises beyond its
training distribution; the targets above concern the main set.

Progress goes to stderr; the last line on stdout is one JSON object of figures.
Usage: ``python benchmarks/builtin_model.py [--n 200] [--broad 100] [--seed 20261122] [--model DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

PER_TOOL = ("calc_", "clock_", "kv_get_", "kv_set_")  # per-tool figures: reported for the main set only


def load(model_dir: Path) -> tuple[Any, Any]:
    """The model (fp32, CPU, eval mode) and its tokenizer, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    return model, tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="held-out conversations")
    parser.add_argument("--broad", type=int, default=100, help="held-out conversations of the broad profile")
    parser.add_argument("--seed", type=int, default=20261122, help="corpus seed (training used 1234)")
    parser.add_argument(
        "--model", type=Path, default=None, help="model directory (default: the built-in one)"
    )
    parser.add_argument("--batch", type=int, default=32, help="episodes decoded together")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()

    import torch

    from lmos.models import builtin_model_path
    from lmos.train.corpus import generate
    from lmos.train.evaluate import hf_generate_fn, run_episodes, summarize

    torch.set_num_threads(args.threads)
    model_dir = args.model or builtin_model_path()
    model, tokenizer = load(model_dir)
    generate_fn = hf_generate_fn(model, tokenizer)
    calls = 0

    def counted(prompts: list[list[dict[str, Any]]]) -> list[str]:
        nonlocal calls
        calls += len(prompts)
        return generate_fn(prompts)

    def run(label: str, convs: list[Any]) -> dict[str, Any]:
        done = 0

        def progress(k: int) -> None:
            nonlocal done
            done += k
            if done % 20 == 0 or done == len(convs):
                print(
                    f"[builtin_model] {label}: {done}/{len(convs)} conversations", file=sys.stderr, flush=True
                )

        return summarize(run_episodes(convs, counted, batch_size=args.batch, progress=progress))

    figures: dict[str, Any] = {"bench": "builtin_model", "model": str(model_dir), "seed": args.seed}
    start = time.perf_counter()
    figures.update(run("main", generate(args.n, seed=args.seed, split="heldout")))
    main_seconds = time.perf_counter() - start
    main_calls = calls
    if args.broad > 0:
        broad = run("broad", generate(args.broad, seed=args.seed, split="heldout", profile="broad"))
        figures.update({f"broad_{k}": v for k, v in broad.items() if not k.startswith(PER_TOOL)})
    figures.update(
        {
            "params": sum(p.numel() for p in model.parameters()),
            "generations": main_calls,
            "seconds": round(main_seconds, 1),
            "ms_per_generation": round(1000 * main_seconds / max(1, main_calls), 1),
        }
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
