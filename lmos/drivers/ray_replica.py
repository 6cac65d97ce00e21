"""One model replica of a Ray cluster: lmos's transformers driver inside a Ray actor.

The kernel never talks to a replica call by call.  Its bookkeeping (add, append,
truncate, fork, free ...) is mirrored by :class:`lmos.drivers.ray.RayDriver` and
queued as *ops*; each step ships a replica its queued ops and its share of the
plan in ONE remote call (:meth:`Replica.run`), so a step costs one round trip
per replica whatever the number of sequences.

Two things make the mirror and the replica differ, and :meth:`Replica.run`
reconciles both: a prefix-cache hit at ``add`` computes tokens the mirror did
not know about, and a KV import that failed leaves fewer computed than it
expected.  So every item says how many of the sequence's tokens the kernel wants
left pending after it (``remaining``), the replica computes whatever gets it
there (within its own limits: an item that does not fit is deferred), and the
reply carries each touched sequence's real ``computed`` count, which the mirror
adopts.

This module is imported by the kernel process only for the class (Ray pickles
it by reference); torch and transformers are imported inside the actor.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from typing import Any

import msgspec

from lmos.drivers.base import DriverLimits, SamplingParams, StepItem, StepPlan
from lmos.errors import Errno, SyscallError

# Config keys that say where or how a model was loaded, not what it computes.
_VOLATILE_KEYS = frozenset({"_name_or_path", "name_or_path", "transformers_version", "torch_dtype", "dtype",
                            "_attn_implementation", "_attn_implementation_internal", "attn_implementation",
                            "_commit_hash", "architectures"})


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What every replica loads: a model directory present on every node, or (tests, benchmarks)
    a random-init model from a transformers config dict and a seed."""

    path: str = ""  # a model directory on each node ("" = use ``config``)
    config: dict[str, Any] | None = None  # transformers config dict (needs "model_type")
    seed: int = 0  # torch seed of a random-init model
    device: str = "auto"
    dtype: str = "auto"
    block_size: int = 16
    kv_memory: str = "0.5"
    max_seqs: int = 64
    max_tokens_per_step: int = 2048


class ReplicaInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a replica reports once loaded: its identity for the consistency check and its limits."""

    index: int
    node: str  # host name and Ray node id
    device: str
    name: str
    config_hash: str
    weights_hash: str
    limits: DriverLimits
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    default_sampling: SamplingParams
    block_bytes: int  # bytes of one KV block
    prefill_tok_s: float
    load_seconds: float


class StepReply(msgspec.Struct, kw_only=True):
    """A replica's answer to :meth:`Replica.run`."""

    tokens: dict[int, int]  # seq_id -> token sampled this step
    computed: dict[int, int]  # seq_id -> real computed count after the call (every touched sequence)
    deferred: list[int]  # planned sequences that did not fit this step (limits or free blocks)
    hits: list[tuple[int, int]]  # (prompt tokens, prefix-cache hit tokens) of each add
    kv_free: int
    prefill_tok_s: float
    seconds: float  # time inside the driver's step


def config_hash(config: Any) -> str:
    """Hash of what a config computes (paths, versions and dtype left out)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    clean = {k: v for k, v in d.items() if k not in _VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_hash(model: Any) -> str:
    """Hash of every parameter and persistent buffer, as float32 bytes (so a bf16 checkpoint
    loaded in fp32 on a CPU node and in bf16 on a GPU node hashes the same)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            t = tensor.detach()
            if t.is_floating_point():
                t = t.float()
            t = t.cpu().contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def build_driver(spec: ModelSpec) -> Any:
    """The HF driver for ``spec`` (a model directory, or a random-init model from a config)."""
    from lmos.drivers.hf import HFDriver

    if spec.path:
        return HFDriver.from_pretrained(spec.path, device=spec.device, dtype=spec.dtype,
                                        block_size=spec.block_size, kv_memory=spec.kv_memory,
                                        max_seqs=spec.max_seqs, max_tokens_per_step=spec.max_tokens_per_step)
    if spec.config is None:
        raise SyscallError(Errno.EINVAL, "a replica model spec needs a path or a config")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmos.drivers import hf_load

    cfg = dict(spec.config)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise SyscallError(Errno.EINVAL, "a random-init model config needs a model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(spec.seed)
    dev = hf_load.resolve_device(spec.device)
    model = AutoModelForCausalLM.from_config(config).to(dev)
    return HFDriver(model, None, block_size=spec.block_size, kv_memory=spec.kv_memory, max_seqs=spec.max_seqs,
                    max_tokens_per_step=spec.max_tokens_per_step, name=f"random:{model_type}:{spec.seed}")


class Replica:
    """The body of a replica actor (``ray.remote`` is applied by :mod:`lmos.drivers.ray_cluster`)."""

    def __init__(self, spec: ModelSpec, index: int) -> None:
        start = time.perf_counter()
        self.index = index
        self.drv = build_driver(spec)
        self.load_seconds = time.perf_counter() - start

    def info(self) -> ReplicaInfo:
        drv = self.drv
        node = socket.gethostname()
        try:
            import ray

            node = f"{node}/{ray.get_runtime_context().get_node_id()[:8]}"
        except Exception:  # not inside Ray (unit tests build a Replica directly)
            pass
        return ReplicaInfo(
            index=self.index, node=node, device=str(drv.device), name=drv.name,
            config_hash=config_hash(drv.model.config), weights_hash=weights_hash(drv.model),
            limits=drv.limits, vocab_size=drv.vocab_size, eos_token_ids=tuple(drv.eos_token_ids),
            default_sampling=drv.default_sampling(), block_bytes=int(drv.pool.block_bytes),
            prefill_tok_s=float(drv.prefill_tok_s), load_seconds=self.load_seconds,
        )

    def tokenizer(self) -> Any:
        return self.drv.tokenizer

    def pid(self) -> int:
        return os.getpid()

    # ------------------------------------------------------------------ ops
    def _apply(self, op: tuple[Any, ...], hits: list[tuple[int, int]], touched: set[int]) -> None:
        drv, kind, seq = self.drv, op[0], op[1]
        touched.add(seq)
        if kind == "add":
            drv.add(seq, op[2], op[3])
            hits.append((len(op[2]), len(op[2]) - drv.pending(seq)))
        elif kind == "import":
            self._import(seq, op[2], op[3], op[4], op[5])
        elif kind == "append":
            drv.append(seq, op[2])
        elif kind == "truncate":
            drv.truncate(seq, op[2])
        elif kind == "fork":
            drv.fork(seq, op[2])
            touched.add(op[2])
        elif kind == "sampling":
            drv.set_sampling(seq, op[2])
        elif kind == "constrain":
            drv.constrain(seq, op[2])
            touched.discard(seq)
        elif kind == "free":
            drv.free(seq)
            touched.discard(seq)
        elif kind == "drop":
            drv.drop(seq)
        elif kind == "swap_out":
            drv.swap_out(seq)
        elif kind == "swap_in":
            drv.swap_in(seq)
        else:
            raise SyscallError(Errno.EINVAL, f"unknown replica op {kind!r}")

    def run(self, ops: list[tuple[Any, ...]], items: list[tuple[int, int, bool]]) -> StepReply:
        """Apply ``ops`` in order, then compute ``items`` = ``(seq_id, remaining, sample)``: bring
        each sequence to ``remaining`` pending tokens (sampling if that is 0 and ``sample``),
        within this replica's limits and free blocks; what does not fit is deferred."""
        drv = self.drv
        hits: list[tuple[int, int]] = []
        touched: set[int] = set()
        for op in ops:
            self._apply(op, hits, touched)
        lim = drv.limits
        plan: list[StepItem] = []
        deferred: list[int] = []
        free, budget = drv.kv_free(), lim.max_tokens
        for seq, remaining, sample in items:
            touched.add(seq)
            real = drv.pending(seq) - remaining
            if real <= 0:
                continue  # a prefix hit already computed what the kernel planned
            n = min(real, budget)
            need = drv.kv_needed(seq, n) if n > 0 else 0
            if n <= 0 or len(plan) >= lim.max_seqs or need > free:
                deferred.append(seq)
                continue
            free -= need
            budget -= n
            plan.append(StepItem(seq, n, sample and n == real and remaining == 0))
        tokens: dict[int, int] = {}
        start = time.perf_counter()
        if plan:
            for seq_id, tok in drv.step(StepPlan(items=plan)).items():
                if tok is not None:
                    tokens[seq_id] = tok
        seconds = time.perf_counter() - start
        computed = {seq: drv.length(seq) - drv.pending(seq) for seq in touched if seq in drv.table.seqs}
        return StepReply(tokens=tokens, computed=computed, deferred=deferred, hits=hits,
                         kv_free=drv.kv_free(), prefill_tok_s=float(drv.prefill_tok_s), seconds=seconds)

    def status(self) -> tuple[int, float]:
        return self.drv.kv_free(), float(self.drv.prefill_tok_s)

    # ------------------------------------------------------------ KV moves
    def export_kv(self, seq: int) -> tuple[int, Any]:
        """Copy ``seq``'s computed KV to one host tensor and forget the sequence here.

        Returns ``(computed, tensor)`` (``(0, None)`` when nothing is on the device).  The
        tensor is ``[layers, 2, blocks*block_size, kv_heads, head_dim]``, as a swap out makes it.
        """
        from lmos.drivers.base import KVLocation

        drv = self.drv
        s = drv.table.get(seq)
        computed = s.computed
        if s.location is not KVLocation.DEVICE or not s.blocks or computed == 0:
            drv.free(seq)
            return 0, None
        host = drv.pool.to_host(s.blocks)
        drv.pool.release_host(host)  # a transfer copy, not swap space this pool keeps
        drv.free(seq)
        return computed, host

    def _import(self, seq: int, tokens: list[int], sampling: SamplingParams, computed: int, ref: Any) -> None:
        """Admit ``seq`` with KV moved from another replica; on any failure (the source died, a
        shape mismatch, no free blocks) the sequence is admitted for recompute instead."""
        from lmos.drivers.base import KVLocation

        drv = self.drv
        drv.add(seq, tokens, sampling)
        s = drv.table.get(seq)
        if computed <= s.computed:
            return  # the prefix cache already holds at least as much
        try:
            import ray

            got = ray.get(ref[0], timeout=60) if ref else (0, None)
            moved, host = got
            bs = drv.table.block_size
            nblocks = -(-moved // bs)
            if host is None or moved != computed or nblocks > drv.kv_free() + len(s.blocks):
                return
            drv.table.alloc.release(s.blocks)
            s.blocks, s.hashes = [], []
            s.computed = moved
            s.location, s.host, s.host_blocks = KVLocation.HOST, host, nblocks
            drv.pool.swap_used += host.numel() * host.element_size()
            drv.swap_in(seq)
        except Exception:
            drv.free(seq)
            drv.add(seq, tokens, sampling)
