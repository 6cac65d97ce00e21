"""Per-sequence allowed tokens: the driver hook behind constrained decoding (JSON mode).

A driver that offers it has ``constrain(seq_id, allowed)``: before each token
``seq_id`` samples, the driver calls ``allowed(tokens)`` with the sequence's
tokens so far and samples only among the ids it returns (``None``: any
token).  ``constrain(seq_id, None)`` lifts the limit.  The registration is
keyed by sequence id, not stored in the sequence, so it may be made before
the sequence exists (the kernel adds it at the first generation) and it is
the caller's to lift; forks do not inherit it (the caller registers theirs).
The callable runs on the driver's step thread; it must not block.

``allowed`` should return the same object for the same set (a cached tuple):
the mask built from it is kept, so a constrained sequence costs one dict
lookup and one vector add per token.  The callables themselves live above the
drivers (:mod:`lmos.syscalls.jsonmode`).  torch is imported only when a mask is
applied, so drivers without torch (the scripted one) can share the type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

AllowedFn = Callable[[list[int]], Sequence[int] | None]
MAX_MASKS = 512  # distinct allowed sets kept as device vectors


class TokenMasks:
    """The ``constrain`` registrations of one driver, and the masks built from them."""

    def __init__(self) -> None:
        self.fns: dict[int, AllowedFn] = {}
        self._bias: dict[int, tuple[Sequence[int], torch.Tensor]] = {}

    def set(self, seq_id: int, allowed: AllowedFn | None) -> None:
        if allowed is None:
            self.fns.pop(seq_id, None)
        else:
            self.fns[seq_id] = allowed

    def allowed(self, seq_id: int, tokens: list[int]) -> Sequence[int] | None:
        fn = self.fns.get(seq_id)
        return None if fn is None else fn(tokens)

    def apply(self, logits: torch.Tensor, seq_ids: Sequence[int], histories: Sequence[list[int]]) -> None:
        """In place: each constrained row of ``logits`` ``[B, V]`` gets -inf outside its allowed ids."""
        import torch

        for row, (sid, tokens) in enumerate(zip(seq_ids, histories, strict=True)):
            ids = self.allowed(sid, tokens)
            if ids is None:
                continue
            hit = self._bias.get(id(ids))
            if hit is None or hit[0] is not ids:
                if len(self._bias) >= MAX_MASKS:
                    self._bias.clear()
                dev = logits.device
                bias = torch.full((logits.shape[-1],), float("-inf"), dtype=logits.dtype, device=dev)
                bias[torch.tensor(list(ids), dtype=torch.long, device=dev)] = 0.0
                hit = self._bias[id(ids)] = (ids, bias)
            logits[row] += hit[1]
