"""Paged attention for transformers models, plugged in through ``AttentionInterface``.

Why an attention function and not a forked model: every transformers model
that dispatches attention through ``ALL_ATTENTION_FUNCTIONS`` (Llama, Qwen2,
Mistral and most newer ones) calls the registered function with the
post-RoPE query/key/value of the *new* tokens, the module (which knows its
``layer_idx``) and every extra keyword the caller passed to ``model(...)``.
So the driver runs the stock model with ``use_cache=False`` and one packed row
of tokens, passes a :class:`StepBatch` as the ``lmos_batch`` keyword, and this
function writes the new keys/values into the pool and attends over each
sequence's blocks.  The model never builds a mask for an unknown attention
implementation (transformers skips mask creation then), so the batch carries
its own per-sequence causal masks, built once per step and shared by every
layer.

Layout of a step: decodes (one token each) are packed first, prefill chunks
after.  Decodes attend as one batch with query length 1; the grouped-query
heads are folded into the query-length axis, so keys are never repeated per
head.  Prefill chunks are padded to a common length and attend as a second
batch (one chunk alone needs no padding).

The decode batch keeps a padded working copy of its KV across steps
(:class:`DecodeCache`).  In steady decoding, when the same sequences decode
again one position further, each layer writes just the new token into that
copy instead of gathering every sequence's whole context from the blocks
again, so a decode step costs O(batch) memory traffic for the KV, not
O(total context).  The pool stays the source of truth; the copy is rebuilt
by one gather whenever the decode batch changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from lmos.drivers.hf_probe import Probe
from lmos.drivers.kv_pool import KVPool
from lmos.errors import Errno, SyscallError

ATTN_NAME = "lmos_paged"
_registered = False


def register() -> str:
    """Register the attention function with transformers (idempotent)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_NAME, paged_attention)
        _registered = True
    return ATTN_NAME


@dataclass
class _Group:
    """One attention batch: gather indices and positions; masks per window size."""

    kv_slots: torch.Tensor  # [B * K] pool slots to gather, row-major over [B, K]
    batch: int
    kv_len: int
    q_pos: torch.Tensor  # [B, Q] absolute position of each query (padding: 0)
    valid: torch.Tensor | None  # [B, Q] bool for padded prefills, None when nothing is padded
    full: bool = False  # one query per row, every row at the last position: every key is visible
    masks: dict[int | None, torch.Tensor] = field(default_factory=dict)

    def mask(self, window: int | None) -> torch.Tensor | None:
        """[B, 1, Q, K] bool: key j visible to a query at position p iff p-window < j <= p.

        None when every key is visible to every query (a single sequence decoding, or decodes all
        at the same length, inside the window): SDPA then runs unmasked, as ``model.generate``'s
        own decode steps do, and the step builds no mask at all.
        """
        if self.full and (window is None or self.kv_len <= window):
            return None
        m = self.masks.get(window)
        if m is None:
            kpos = torch.arange(self.kv_len, device=self.q_pos.device)
            qp = self.q_pos[:, :, None]
            m = kpos[None, None, :] <= qp
            if window is not None:
                m = m & (kpos[None, None, :] > qp - window)
            m = m[:, None]
            self.masks[window] = m
        return m


class DecodeCache:
    """Per-layer padded KV ``[rows, Hkv, cap, D]`` of the last decode batch, reused while it stays the same.

    The buffers themselves outlive batch changes: a new batch that fits
    (no more rows, no longer context) is gathered into the same memory, so a
    scheduler that reshuffles its decode batch every step pays a gather, not
    an allocation.
    """

    def __init__(self, max_bytes: int = 1 << 62) -> None:
        self.max_bytes = max_bytes  # the copy duplicates active KV: beyond this, decodes gather instead
        self.key: tuple[tuple[int, int], ...] = ()  # (seq_id, kv_version) per row
        self.lens: list[int] = []  # KV length of each row after the last step
        self.rows = 0
        self.cap = 0
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        # views of row 0, [Hkv, cap, D] to write and [1, Hkv, cap, D] to read: a single decode's fast path
        self._k0: list[torch.Tensor] = []
        self._v0: list[torch.Tensor] = []
        self._k1: list[torch.Tensor] = []
        self._v1: list[torch.Tensor] = []
        self.hits = 0
        self.rebuilds = 0

    def plan(self, key: tuple[tuple[int, int], ...], starts: Sequence[int], pool: KVPool) -> bool | None:
        """Prepare for a decode batch: True to rebuild the copy by a gather, False to reuse it,
        None when a copy this large would exceed ``max_bytes`` (the step gathers without one)."""
        kv_len = max(starts) + 1
        hit = key == self.key and list(starts) == self.lens and kv_len <= self.cap
        if not hit:
            if len(starts) > self.rows or kv_len > self.cap:
                shape = pool.shape
                rows = max(len(starts), self.rows)
                cap = -(-(kv_len + 32) // 64) * 64  # headroom: steady decoding grows a token a step
                if rows * cap * shape.bytes_per_token() > self.max_bytes:
                    self.clear()
                    return None
                self.rows, self.cap = rows, cap
                dims = (self.rows, shape.kv_heads, self.cap, shape.head_dim)
                # zeros: slots past a row's length are masked but must hold finite values
                self._k = [torch.zeros(dims, device=pool.device, dtype=pool.dtype) for _ in pool.keys]
                self._v = [torch.zeros(dims, device=pool.device, dtype=pool.dtype) for _ in pool.keys]
                self._k0, self._v0 = [t[0] for t in self._k], [t[0] for t in self._v]
                self._k1, self._v1 = [t[:1] for t in self._k], [t[:1] for t in self._v]
            self.key = key
        self.hits += hit
        self.rebuilds += not hit
        self.lens = [s + 1 for s in starts]
        return not hit

    def buffers(self, layer: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._k[layer][:rows], self._v[layer][:rows]

    def row0(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row 0's key and value as ``[Hkv, cap, D]`` and as ``[1, Hkv, cap, D]``, views made once
        per allocation (each view op costs a microsecond or two, per layer, per token)."""
        return self._k0[layer], self._v0[layer], self._k1[layer], self._v1[layer]

    def clear(self) -> None:
        """Drop the copy (its memory too); the next decode batch rebuilds it."""
        self.key, self.lens, self.rows, self.cap = (), [], 0, 0
        self._k, self._v, self._k0, self._v0, self._k1, self._v1 = [], [], [], [], [], []


@dataclass
class StepBatch:
    """Everything the attention function needs for one forward pass."""

    pool: KVPool
    slots: torch.Tensor  # [T] pool slot of each new token
    n_dec: int  # the first n_dec tokens are decodes
    dec: _Group | None
    pre: _Group | None
    cache: DecodeCache | None = None  # the decode batch's working copy
    rebuild: bool = True  # gather the decode batch's KV into the copy (else write the new token only)
    rows: torch.Tensor | None = None  # arange(n_dec) on the device
    dec_pos: Sequence[int] = ()  # host position of each decode token (a single decode writes by slicing)


def _group(
    tables: Sequence[list[int]],
    starts: Sequence[int],
    counts: Sequence[int],
    block_size: int,
    gather: bool = True,
    dec_pos: torch.Tensor | None = None,
) -> _Group:
    """Host gather indices and positions for sequences computing ``counts`` tokens from ``starts``."""
    b = len(tables)
    kv_len = max(s + n for s, n in zip(starts, counts, strict=True))
    kv_slots = torch.empty(0, dtype=torch.long)
    if gather:
        width = max(len(t) for t in tables)
        bt = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.long)
        kpos = torch.arange(kv_len)
        cols = (kpos // block_size).clamp_(max=width - 1).expand(b, -1)
        # padding beyond a sequence's blocks reads pool block 0 (finite, then masked)
        kv_slots = (torch.gather(bt, 1, cols) * block_size + kpos % block_size).reshape(-1)
    q = max(counts)
    valid = None
    if q == 1:  # decodes: one query each, at its start (``dec_pos``: those starts, already a tensor)
        q_pos = (torch.tensor(starts, dtype=torch.long) if dec_pos is None else dec_pos)[:, None]
    else:
        st = torch.tensor(starts, dtype=torch.long)
        ar = torch.arange(q)
        q_pos = st[:, None] + ar[None, :]
    if q > 1 and any(n != q for n in counts):
        valid = ar[None, :] < torch.tensor(counts, dtype=torch.long)[:, None]
        q_pos = torch.where(valid, q_pos, torch.zeros_like(q_pos))
    full = q == 1 and min(starts) + 1 == kv_len
    return _Group(kv_slots, b, kv_len, q_pos, valid, full)


def _upload(parts: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Move small host index tensors to ``device`` in ONE copy (each copy costs a round trip on CUDA)."""
    if device.type == "cpu":
        return parts
    flat = torch.cat([p.reshape(-1).long() for p in parts]).pin_memory().to(device, non_blocking=True)
    out = []
    for piece, p in zip(flat.split([p.numel() for p in parts]), parts, strict=True):
        out.append(piece.view(p.shape) if p.dtype == torch.long else piece.view(p.shape).to(p.dtype))
    return out


def build_batch(
    pool: KVPool,
    input_ids: list[int],
    keep: list[int],
    dec_tables: Sequence[list[int]],
    dec_starts: Sequence[int],
    pre_tables: Sequence[list[int]],
    pre_starts: Sequence[int],
    pre_counts: Sequence[int],
    cache: DecodeCache | None = None,
    dec_key: tuple[tuple[int, int], ...] = (),
) -> tuple[StepBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step's :class:`StepBatch`, input ids ``[1, T]``, position ids ``[1, T]`` and logit rows to keep."""
    bs = pool.block_size
    positions: list[int] = list(dec_starts)
    slots: list[int] = [t[p // bs] * bs + p % bs for t, p in zip(dec_tables, dec_starts, strict=True)]
    every = len(keep) == len(input_ids)  # every token sampled: keep is 0..T-1
    if pre_tables:
        pre_slot_parts: list[torch.Tensor] = []
        for table, start, n in zip(pre_tables, pre_starts, pre_counts, strict=True):
            positions.extend(range(start, start + n))
            pos = torch.arange(start, start + n)
            bt = torch.tensor(table, dtype=torch.long)
            pre_slot_parts.append(bt[pos // bs] * bs + pos % bs)
        slot_t = torch.cat([torch.tensor(slots, dtype=torch.long), *pre_slot_parts])
        meta = [torch.tensor(input_ids, dtype=torch.long), torch.tensor(positions, dtype=torch.long),
                torch.tensor(keep or [0], dtype=torch.long), slot_t]
    else:  # decodes only: ids, positions, slots (and keep) are one small host tensor, viewed per row
        rows = torch.tensor([input_ids, positions, slots] + ([keep] if every else []), dtype=torch.long)
        meta = [rows[0], rows[1], rows[3] if every else torch.tensor(keep or [0], dtype=torch.long), rows[2]]
    rebuild = cache.plan(dec_key, dec_starts, pool) if cache is not None and dec_tables else None
    if rebuild is None:
        cache = None
    dec = None
    if dec_tables:
        dec = _group(dec_tables, dec_starts, [1] * len(dec_starts), bs, gather=rebuild is not False,
                     dec_pos=None if pre_tables else meta[1])
    pre = _group(pre_tables, pre_starts, pre_counts, bs) if pre_tables else None
    parts = meta
    groups = [g for g in (dec, pre) if g is not None]
    for g in groups:
        parts += [g.kv_slots, g.q_pos] + ([g.valid] if g.valid is not None else [])
    moved = iter(_upload(parts, pool.device))
    ids_t, pos_t, keep_t, slot_d = next(moved), next(moved), next(moved), next(moved)
    for g in groups:
        g.kv_slots, g.q_pos = next(moved), next(moved)
        if g.valid is not None:
            g.valid = next(moved)
    batch = StepBatch(pool, slot_d, len(dec_starts), dec, pre)
    if cache is not None and dec is not None:
        batch.cache, batch.rebuild, batch.dec_pos = cache, bool(rebuild), dec_starts
        if len(dec_starts) > 1:
            batch.rows = torch.arange(len(dec_starts), device=pool.device)
    return batch, ids_t[None, :], pos_t[None, :], keep_t


def paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Write the new tokens' KV into the pool, then attend per sequence over its blocks.

    ``query`` is ``[1, H, T, D]`` and ``key``/``value`` are ``[1, Hkv, T, D]``
    for the T packed new tokens; returns ``[1, T, H, D]`` as transformers
    expects of an attention function.
    """
    batch = kwargs.get("lmos_batch")
    if batch is None:
        raise SyscallError(Errno.EINVAL, "lmos_paged attention called outside an lmos driver step")
    if isinstance(batch, Probe):
        return batch.record(module, query, key, value)
    # logit soft-capping (Gemma 2) and attention sinks (gpt-oss) change the softmax itself
    softcap: float | None = kwargs.get("softcap")
    sinks: torch.Tensor | None = kwargs.get("s_aux")
    layer = int(module.layer_idx)  # type: ignore[arg-type]
    kc, vc = batch.pool.keys[layer], batch.pool.values[layer]
    single = query.shape[2] == 1  # one token in the step: a decode alone (fewer view ops per layer)
    if single:
        k_new, v_new = key[:, :, 0], value[:, :, 0]  # [T=1, Hkv, D]
    else:
        k_new, v_new = key[0].transpose(0, 1), value[0].transpose(0, 1)  # [T, Hkv, D]
    kc.index_copy_(0, batch.slots, k_new)
    vc.index_copy_(0, batch.slots, v_new)
    _, heads, _, dim = query.shape
    kv_heads = kc.shape[1]
    rep = heads // kv_heads
    q_all = query[0]  # [H, T, D]
    outs: list[torch.Tensor] = []

    g = batch.dec
    if g is not None:
        n = batch.n_dec
        cache = batch.cache
        if cache is None or batch.rebuild:
            k = kc.index_select(0, g.kv_slots).view(n, g.kv_len, kv_heads, dim).transpose(1, 2)
            v = vc.index_select(0, g.kv_slots).view(n, g.kv_len, kv_heads, dim).transpose(1, 2)
            if cache is not None:
                kw, vw = cache.buffers(layer, n)
                kw[:, :, : g.kv_len] = k
                vw[:, :, : g.kv_len] = v
        else:  # steady decoding: only the new token goes into the working copy
            if n == 1:  # one sequence: plain views of row 0, no index tensors (per-token latency)
                p = batch.dec_pos[0]
                k0, v0, k1, v1 = cache.row0(layer)
                k0.select(1, p).copy_(k_new[0])
                v0.select(1, p).copy_(v_new[0])
                k, v = k1.narrow(2, 0, g.kv_len), v1.narrow(2, 0, g.kv_len)
            else:
                kw, vw = cache.buffers(layer, n)
                pos = g.q_pos[:, 0]
                kw[batch.rows, :, pos] = k_new[:n]
                vw[batch.rows, :, pos] = v_new[:n]
                k, v = kw[:, :, : g.kv_len], vw[:, :, : g.kv_len]
        # fold the query heads sharing a KV head into the query axis: [B, Hkv, rep, D]
        if single:
            q = query.reshape(1, kv_heads, rep, dim)
        else:
            q = q_all[:, :n].transpose(0, 1).reshape(n, kv_heads, rep, dim)
        sink = None if sinks is None else sinks.view(1, kv_heads, rep, 1)
        o = _attend(q, k, v, g.mask(sliding_window), scaling, softcap, sink)
        if single:
            return o.reshape(1, 1, heads, -1), None
        outs.append(o.reshape(n, heads, -1))

    g = batch.pre
    if g is not None:
        k = kc.index_select(0, g.kv_slots).view(g.batch, g.kv_len, kv_heads, dim).transpose(1, 2)
        v = vc.index_select(0, g.kv_slots).view(g.batch, g.kv_len, kv_heads, dim).transpose(1, 2)
        if rep > 1:
            k = k[:, :, None].expand(-1, -1, rep, -1, -1).reshape(g.batch, heads, g.kv_len, dim)
            v = v[:, :, None].expand(-1, -1, rep, -1, -1).reshape(g.batch, heads, g.kv_len, dim)
        q_pre = q_all[:, batch.n_dec :]  # [H, Tp, D]
        if g.valid is None:  # equal chunk lengths: a plain reshape, no padding
            q = q_pre.view(heads, g.batch, -1, dim).transpose(0, 1)
        else:
            q = q_pre.new_zeros(heads, g.batch, g.q_pos.shape[1], dim)
            q[:, g.valid] = q_pre
            q = q.transpose(0, 1)
        sink = None if sinks is None else sinks.view(1, heads, 1, 1)
        o = _attend(q, k, v, g.mask(sliding_window), scaling, softcap, sink)
        o = o.transpose(1, 2)  # [B, Q, H, D]
        outs.append(o.reshape(-1, heads, o.shape[-1]) if g.valid is None else o[g.valid])

    out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    return out.unsqueeze(0), None


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None,
    softcap: float | None,
    sinks: torch.Tensor | None,
) -> torch.Tensor:
    """Masked attention: SDPA when it can, else the same softmax written out.

    Soft-capped logits (``tanh(s / cap) * cap``) and attention sinks (one extra
    learned logit per head that takes probability mass and contributes no
    value) are outside what SDPA computes, so those models get the explicit
    form, matching the models' own eager attention.
    """
    if softcap is None and sinks is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is None:
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    else:
        sink = sinks.to(scores.dtype).expand(*scores.shape[:-1], 1)
        both = torch.cat([scores, sink], dim=-1)
        probs = torch.softmax(both - both.amax(dim=-1, keepdim=True), dim=-1, dtype=torch.float32)[..., :-1]
    return torch.matmul(probs.to(v.dtype), v)
