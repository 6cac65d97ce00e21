"""Learn how a model calls attention before its KV pool is sized.

Why a probe instead of reading the config: configs name their shapes
differently (``n_head``, ``num_kv_heads``, ``multi_query``, a ``head_dim``
that some models ignore), and a model that does not route attention through
transformers' ``AttentionInterface`` at all, or that mixes attention with
layers keeping other state (linear attention, state-space mixers), would run
"fine" under the paged driver and produce wrong text.  So the driver runs the
model over two one-token sequences packed in one row, with a :class:`Probe` as
the ``lmos_batch``: the registered attention function records what each layer
hands it (the pool is shaped from those real tensors), and the second token's
logits must equal those of the same token run alone, or something outside
attention mixes the packed sequences.  Anything the paged cache cannot serve
is refused at load time with ``EINVAL``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lmos.drivers.kv_pool import KVShape
from lmos.errors import Errno, SyscallError


@dataclass
class Probe:
    """Stands in for a step batch; collects (layer, heads, kv_heads, key dim, value dim) per call."""

    calls: list[tuple[int | None, int, int, int, int]] = field(default_factory=list)

    def record(
        self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        layer = getattr(module, "layer_idx", None)
        self.calls.append((None if layer is None else int(layer), query.shape[1], key.shape[1],
                           key.shape[-1], value.shape[-1]))
        # every probe token is a sequence of its own: it attends to itself only, so its output is its
        # value (per query head); a model whose result still depends on the other tokens mixes them
        # somewhere else
        rep = max(1, query.shape[1] // max(1, key.shape[1]))
        out = value.repeat_interleave(rep, dim=1).to(query.dtype)
        return out.transpose(1, 2), None


def probe_kv_shape(model: Any, dtype: torch.dtype) -> KVShape:
    """Run ``model`` on two tiny packed rows and derive the KV pool shape; EINVAL if it cannot be paged."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layers = getattr(cfg, "num_hidden_layers", None)
    param = next(model.parameters())
    probe = Probe()
    dev = param.device
    try:
        with torch.inference_mode():
            # two one-token sequences packed in one row, then the second alone
            ids = torch.tensor([[1, 2]], device=dev)
            packed = model(input_ids=ids, position_ids=torch.zeros_like(ids), use_cache=False,
                           lmos_batch=probe).logits[0, 1].float()
            calls = list(probe.calls)
            one = ids[:, 1:]
            alone = model(input_ids=one, position_ids=torch.zeros_like(one), use_cache=False,
                          lmos_batch=probe).logits[0, 0].float()
            probe.calls = calls
    except SyscallError as exc:  # the attention function ran without the batch: kwargs were not forwarded
        raise SyscallError(Errno.EINVAL, "model does not pass extra arguments to its attention function, "
                           f"so lmos cannot page its KV ({exc.message})") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SyscallError(Errno.EINVAL, f"model failed the load-time probe: {first}") from None
    name = type(model).__name__
    if not probe.calls:
        raise SyscallError(Errno.EINVAL, f"{name} does not call attention through transformers' "
                           "AttentionInterface, so lmos cannot page its KV")
    ids_seen = [c[0] for c in probe.calls]
    if layers is not None and len(ids_seen) != layers:
        raise SyscallError(Errno.EINVAL, f"{name}: {len(ids_seen)} of {layers} layers use attention; the "
                           "others keep state (linear attention, state-space) that a paged KV cache "
                           "cannot hold")
    if sorted(i if i is not None else -1 for i in ids_seen) != list(range(len(ids_seen))):
        raise SyscallError(Errno.EINVAL, f"{name}: attention layers do not carry distinct layer_idx 0..n-1")
    tol = (1e-3 if param.dtype == torch.float32 else 3e-2) * float(alone.abs().max()) + 1e-4
    if float((packed - alone).abs().max()) > tol:
        raise SyscallError(Errno.EINVAL, f"{name}: tokens of different sequences packed in one row affect "
                           "each other outside attention (a recurrent or convolutional mixer?), so lmos "
                           "cannot batch it")
    shapes = {c[1:] for c in probe.calls}
    if len(shapes) != 1:
        raise SyscallError(Errno.EINVAL, f"{name}: layers differ in attention shape {sorted(shapes)}")
    heads, kv_heads, k_dim, v_dim = shapes.pop()
    if k_dim != v_dim or heads % kv_heads:
        raise SyscallError(Errno.EINVAL, f"{name}: unsupported attention shape (heads {heads}, KV heads "
                           f"{kv_heads}, key dim {k_dim}, value dim {v_dim})")
    item = torch.empty((), dtype=dtype).element_size()
    return KVShape(len(ids_seen), kv_heads, k_dim, item)
