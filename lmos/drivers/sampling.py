"""Next-token sampling for a batch of sequences with per-sequence settings.

Everything is vectorised over the batch: one sort, one softmax, one cumulative
sum, one search.  The only per-sequence Python work is drawing one uniform
number from each seeded sequence's own ``torch.Generator``; sampling is then an
inverse-CDF lookup with that number.  This is what makes a seeded sequence
reproducible whatever else shares the batch: its draw depends only on its own
generator, never on how many other rows consumed random numbers before it
(which a single batched ``torch.multinomial`` call would not guarantee).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmos.drivers.base import SamplingParams
from lmos.errors import Errno, SyscallError


def check_params(p: SamplingParams) -> None:
    """Reject settings that have no meaning (raised at admission, not mid-step)."""
    if p.temperature < 0 or not p.temperature == p.temperature:
        raise SyscallError(Errno.EINVAL, f"temperature must be >= 0, got {p.temperature}")
    if not 0 < p.top_p <= 1:
        raise SyscallError(Errno.EINVAL, f"top_p must be in (0, 1], got {p.top_p}")
    if p.top_k < 0:
        raise SyscallError(Errno.EINVAL, f"top_k must be >= 0, got {p.top_k}")
    if p.repetition_penalty <= 0:
        raise SyscallError(Errno.EINVAL, f"repetition_penalty must be > 0, got {p.repetition_penalty}")


def plain_greedy(params: Sequence[SamplingParams]) -> bool:
    """Every row greedy without a repetition penalty: the next token is one argmax, nothing else."""
    return all(p.temperature == 0 and p.repetition_penalty == 1.0 for p in params)


def make_generator(p: SamplingParams) -> torch.Generator | None:
    if p.seed is None:
        return None
    g = torch.Generator(device="cpu")
    g.manual_seed(p.seed)
    return g


def apply_repetition_penalty(
    logits: torch.Tensor, rows: Sequence[int], penalties: Sequence[float], histories: Sequence[Sequence[int]]
) -> None:
    """In place: a seen token's logit is divided by the penalty (multiplied if negative)."""
    for row, penalty, seen in zip(rows, penalties, histories, strict=True):
        if not seen:
            continue
        idx = torch.tensor(sorted(set(seen)), dtype=torch.long, device=logits.device)
        vals = logits[row].index_select(0, idx)
        vals = torch.where(vals < 0, vals * penalty, vals / penalty)
        logits[row].index_copy_(0, idx, vals)


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    histories: Sequence[Sequence[int]],
    default_generator: torch.Generator,
) -> list[int]:
    """Choose one token per row of ``logits`` ``[B, V]`` (float32)."""
    pen_rows = [i for i, p in enumerate(params) if p.repetition_penalty != 1.0]
    if pen_rows:
        penalties = [params[i].repetition_penalty for i in pen_rows]
        apply_repetition_penalty(logits, pen_rows, penalties, [histories[i] for i in pen_rows])
    greedy = [p.temperature == 0 for p in params]
    if all(greedy):
        return logits.argmax(dim=-1).tolist()
    out = logits.argmax(dim=-1)
    rows = [i for i, g in enumerate(greedy) if not g]
    sub = logits[rows] if len(rows) < len(params) else logits
    device = logits.device
    temps = torch.tensor([params[i].temperature for i in rows], dtype=sub.dtype, device=device)
    sub = sub / temps[:, None]
    sorted_logits, sorted_idx = sub.sort(dim=-1, descending=True)
    ranks = torch.arange(sub.shape[-1], device=device)
    top_k = torch.tensor([params[i].top_k or sub.shape[-1] for i in rows], device=device)
    sorted_logits = sorted_logits.masked_fill(ranks[None, :] >= top_k[:, None], float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    top_p = torch.tensor([params[i].top_p for i in rows], dtype=probs.dtype, device=device)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each token
    probs = probs.masked_fill(before >= top_p[:, None], 0.0)  # the top token always survives
    cdf = probs.cumsum(dim=-1)
    # one uniform per row: from the row's own generator when seeded
    unseeded = [j for j, i in enumerate(rows) if generators[i] is None]
    u = torch.empty(len(rows), dtype=torch.float64)
    if unseeded:
        u[unseeded] = torch.rand(len(unseeded), generator=default_generator, dtype=torch.float64)
    for j, i in enumerate(rows):
        gen = generators[i]
        if gen is not None:
            u[j] = torch.rand((), generator=gen, dtype=torch.float64)
    target = (u.to(device=device, dtype=cdf.dtype) * cdf[:, -1]).unsqueeze(1)
    pick = torch.searchsorted(cdf, target, right=True)
    # rounding can push u * total onto the zero-probability tail: clamp to the last kept token
    kept = (probs > 0).sum(dim=-1, keepdim=True) - 1
    pick = torch.minimum(pick, kept)
    chosen = sorted_idx.gather(1, pick).squeeze(1)
    out[rows] = chosen
    return out.tolist()
