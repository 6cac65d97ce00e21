"""Turning conversations into token ids and loss labels, and batching them.

Only what the model must write is trained: each assistant turn's text (a tool
call or an answer) and its closing ``<|end|>``.  Everything else (system, user
and tool turns, the ``<|assistant|>`` marker itself) gets the label -100, so
the model learns to act, not to predict what users type.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lmos.chatformat import segments
from lmos.train.data import Conversation, bad_lines_error

IGNORE = -100


@dataclass
class Example:
    """One tokenized conversation (int32 arrays: a corpus of 10^5 conversations stays small)."""

    input_ids: Any
    labels: Any

    @classmethod
    def of(cls, ids: list[int], labels: list[int]) -> Example:
        import numpy as np

        return cls(np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32))


def encode(tokenizer: Any, conv: Conversation) -> Example:
    """Tokenize a conversation piece by piece so the mask follows the pieces exactly."""
    pieces = segments(conv.messages, conv.tools)
    encoded = tokenizer([text for text, _ in pieces], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    labels: list[int] = []
    for (_, trained), piece_ids in zip(pieces, encoded, strict=True):
        ids += piece_ids
        labels += piece_ids if trained else [IGNORE] * len(piece_ids)
    return Example.of(ids, labels)


def encode_all(
    tokenizer: Any, convs: Sequence[Conversation], max_length: int, source: str, workers: int = 1
) -> list[Example]:
    """Encode every conversation; conversations over ``max_length`` tokens are one error listing all.

    Truncating would silently cut the assistant turn that the example exists for.
    The distinct pieces of many conversations go to the (Rust, multi-threaded)
    tokenizer in one call and repeated pieces (markers, the system prompt) are
    looked up, which matters for corpora of hundreds of thousands of conversations.
    ``workers`` > 1 encodes big corpora in that many forked processes (rendering
    the pieces is Python, so one process would take minutes); the result is the same.
    """
    global _FORK_TOKENIZER
    if workers > 1 and len(convs) >= 2 * PARALLEL_CHUNK:
        import multiprocessing

        _FORK_TOKENIZER = tokenizer  # inherited by the forked workers, never pickled
        parts = [list(convs[i : i + PARALLEL_CHUNK]) for i in range(0, len(convs), PARALLEL_CHUNK)]
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                examples = [e for part in pool.imap(_encode_forked, parts) for e in part]
        finally:
            _FORK_TOKENIZER = None
    else:
        examples = _encode_part(tokenizer, convs)
    too_long = [
        (c.line, f"{len(e.input_ids)} tokens, over the limit of {max_length}")
        for c, e in zip(convs, examples, strict=True)
        if len(e.input_ids) > max_length
    ]
    if too_long:
        raise bad_lines_error(source, too_long)
    return examples


PARALLEL_CHUNK = 10_000
_FORK_TOKENIZER: Any = None


def _encode_forked(convs: list[Conversation]) -> list[Example]:
    import os

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process
    return _encode_part(_FORK_TOKENIZER, convs)


def _encode_part(tokenizer: Any, convs: Sequence[Conversation]) -> list[Example]:
    """The encoding of ``convs`` in one process (pieces cached, fresh ones batched to Rust)."""
    examples: list[Example] = []
    core = getattr(tokenizer, "backend_tokenizer", None)
    cache: dict[str, list[int]] = {}
    chunk = 8192
    for start in range(0, len(convs), chunk):
        part = [segments(c.messages, c.tools) for c in convs[start : start + chunk]]
        fresh = list({text for pieces in part for text, _ in pieces if text not in cache})
        if core is not None:  # the Rust tokenizer directly: far less per-string overhead
            fresh_ids = [e.ids for e in core.encode_batch(fresh, add_special_tokens=False)]
        else:
            fresh_ids = tokenizer(fresh, add_special_tokens=False)["input_ids"] if fresh else []
        cache.update(zip(fresh, fresh_ids, strict=True))
        for pieces in part:
            ids: list[int] = []
            labels: list[int] = []
            for text, trained in pieces:
                piece_ids = cache[text]
                ids += piece_ids
                labels += piece_ids if trained else [IGNORE] * len(piece_ids)
            examples.append(Example.of(ids, labels))
        if len(cache) > 200_000:
            cache.clear()
    return examples


def batches(
    examples: Sequence[Example], batch_size: int, seed: int, epoch: int, group: int = 50
) -> Iterator[list[int]]:
    """Index batches for one epoch: shuffled, then grouped by length to cut padding.

    Chunks of ``group * batch_size`` shuffled examples are sorted by length and
    cut into batches, and the batches are shuffled again; the order depends only
    on (seed, epoch), which keeps runs reproducible and resumable.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    out: list[list[int]] = []
    chunk = max(1, group * batch_size)
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(examples[i].input_ids))
        out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(out)
    yield from out


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch into tensors (input_ids, attention_mask, labels)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.from_numpy(e.input_ids)
        labels[row, :n] = torch.from_numpy(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
