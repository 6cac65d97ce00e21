"""``HFDriver``: transformers causal LMs over a paged KV pool, batched continuously.

One :meth:`HFDriver.step` is one forward pass of the unmodified model over a
single packed row of tokens: every planned sequence's decode token and prefill
chunk, each with its own position ids.  Attention goes through the
``lmos_paged`` function registered with transformers' ``AttentionInterface``
(see :mod:`lmos.drivers.hf_attention`), which stores the new KV in the pool and
attends per sequence over its block table.  So sequences join and leave at
any step, long prompts are computed in chunks next to running decodes, and
any architecture that dispatches attention the standard way works unchanged.

Bookkeeping (block tables, prefix sharing, copy-on-write, swap decisions) is in
:mod:`lmos.drivers.paging` and :mod:`lmos.drivers.blocks`; the tensors in
:mod:`lmos.drivers.kv_pool`.
"""

from __future__ import annotations

import inspect
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from lmos.drivers import autotune, hf_attention, hf_load, sampling
from lmos.drivers.base import DriverLimits, KVCost, KVLocation, SamplingParams, StepPlan, Tokenizer
from lmos.drivers.blocks import BlockAllocator
from lmos.drivers.cpu_thread import StepThread, release_team
from lmos.drivers.hf_probe import probe_kv_shape
from lmos.drivers.kv_pool import KVPool, budget_bytes
from lmos.drivers.masks import AllowedFn, TokenMasks
from lmos.drivers.paging import PageTable, Seq
from lmos.errors import Errno, SyscallError

# CUDA steps all run on this one thread.  The kernel calls ``step`` from whatever worker thread
# its event loop lends, and a fresh event loop lends fresh threads; on an H100 a bf16 model ran
# its first ~64 steps on a new thread 7x slower (per-thread CUDA library state warming up), so a
# kernel whose worker threads change never reached speed.  One long-lived thread warms once.
_cuda_thread: ThreadPoolExecutor | None = None


def _on_cuda_thread() -> ThreadPoolExecutor:
    global _cuda_thread
    if _cuda_thread is None:
        _cuda_thread = ThreadPoolExecutor(1, thread_name_prefix="lmos-cuda-step")
    return _cuda_thread


class HFDriver:
    """The :class:`lmos.drivers.base.Driver` for Hugging Face transformers models."""

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer | None = None,
        *,
        block_size: int = 16,
        kv_memory: str = "0.5",
        swap_memory: str | None = None,
        max_seqs: int = 0,
        max_tokens_per_step: int = 0,
        max_model_len: int | None = None,
        name: str | None = None,
        decode_cache: bool = True,
        step_thread: bool = True,
        threads: int = 0,
    ) -> None:
        if block_size < 1 or max_seqs < 0 or max_tokens_per_step < 0 or threads < 0:
            raise SyscallError(Errno.EINVAL, "block_size must be >= 1; max_seqs, max_tokens_per_step and "
                               "threads >= 0 (0: chosen at start)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or f"hf:{getattr(model.config, 'name_or_path', '') or type(model).__name__}"
        try:
            model.set_attn_implementation(hf_attention.register())
        except (ValueError, KeyError, AttributeError) as exc:
            raise SyscallError(Errno.EINVAL, f"model cannot use paged attention: {exc}") from None
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.vocab_size = int(cfg.vocab_size)
        window = max_model_len or getattr(cfg, "max_position_embeddings", None) or 4096
        shape = probe_kv_shape(model, self.dtype)
        token_bytes = shape.bytes_per_token()
        budget = budget_bytes(kv_memory, self.device)
        # limits left at 0 are sized from a short measured probe (lmos.drivers.autotune)
        self.tuning = autotune.tune(
            model, self.device, max_seqs=max_seqs, max_tokens_per_step=max_tokens_per_step,
            kv_tokens=budget // token_bytes, threads=threads,
            keep_arg="logits_to_keep" in inspect.signature(model.forward).parameters)
        max_seqs, max_tokens_per_step = self.tuning.max_seqs, self.tuning.max_tokens_per_step
        # never reserve more than every sequence filling the window twice over
        cap_tokens = 2 * max_seqs * window
        num_blocks = min(budget // (token_bytes * block_size), math.ceil(cap_tokens / block_size))
        if num_blocks < 1:
            raise SyscallError(Errno.ENOMEM, f"KV budget {kv_memory!r} holds no block of {block_size} tokens")
        pool_bytes = num_blocks * block_size * token_bytes
        self.tuning.num_blocks = num_blocks
        swap = budget_bytes(swap_memory, torch.device("cpu")) if swap_memory else pool_bytes
        self.pool = KVPool(shape, num_blocks, block_size, self.device, self.dtype, swap)
        self.table = PageTable(BlockAllocator(num_blocks, block_size), window)
        self.limits = DriverLimits(
            max_seqs=max_seqs,
            max_tokens=max_tokens_per_step,
            num_blocks=num_blocks,
            block_size=block_size,
            max_model_len=window,
        )
        # models that cannot slice before the LM head get full logits, indexed afterwards
        self._keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.eos_token_ids = hf_load.eos_ids(model)
        self._defaults = hf_load.default_sampling(model)
        self._rng = torch.Generator(device="cpu")
        self._rng.manual_seed(0)
        self.masks = TokenMasks()  # constrained decoding (see constrain)
        self._host_refs: dict[int, int] = {}  # id(host tensor) -> holders (forks share)
        self.prefill_tok_s = 20000.0 if self.device.type == "cuda" else 2000.0  # refined by real steps
        self.steps = 0
        # the kernel may call a short CPU step from its loop thread, saving a worker-thread hand-off
        # (see lmos.kernel.placement); the compute runs on the step thread either way
        self.inline_step = self.device.type == "cpu"
        self._closed = False
        # the decode working copy may take up to a quarter of the pool's size on top of it, and a small
        # pool (sized tightly for a known load) up to twice its size within 256 MiB: without the copy
        # every decode step gathers every sequence's whole context again (up to a third of a step,
        # docs/performance.md)
        copy_bytes = max(pool_bytes // 4, min(2 * pool_bytes, 256 << 20))
        self._decode_cache = hf_attention.DecodeCache(copy_bytes) if decode_cache else None
        # CPU steps all run on one driver-owned thread that gives its OpenMP team back when idle, and
        # the thread that built the model gives its own back now: see lmos.drivers.cpu_thread
        # (``step_thread=False``: steps run on the calling thread, as before issue 16; for benchmarks)
        self._stepper = StepThread("lmos-cpu-step") if self.device.type == "cpu" and step_thread else None
        if self._stepper is not None:
            release_team()

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        block_size: int = 16,
        kv_memory: str = "0.5",
        max_seqs: int = 0,
        max_tokens_per_step: int = 0,
        threads: int = 0,
    ) -> HFDriver:
        """Load a local checkpoint directory (never the network)."""
        dev = hf_load.resolve_device(device)
        model, tokenizer = hf_load.load(path, dev, hf_load.resolve_dtype(dtype, dev))
        return cls(
            model,
            tokenizer,
            block_size=block_size,
            kv_memory=kv_memory,
            max_seqs=max_seqs,
            max_tokens_per_step=max_tokens_per_step,
            threads=threads,
            name=f"hf:{path}",
        )

    # --------------------------------------------------------- bookkeeping
    def default_sampling(self) -> SamplingParams:
        return self._defaults

    def _check_tokens(self, token_ids: list[int]) -> None:
        if token_ids and (min(token_ids) < 0 or max(token_ids) >= self.vocab_size):
            raise SyscallError(Errno.EINVAL, f"token id outside the vocabulary [0, {self.vocab_size})")

    def add(self, seq_id: int, token_ids: list[int], sampling: SamplingParams) -> None:
        sampling_check(sampling)
        self._check_tokens(token_ids)
        seq = self.table.add(seq_id, token_ids, sampling)
        seq.generator = _generator(sampling)

    def set_sampling(self, seq_id: int, sampling_params: SamplingParams) -> None:
        seq = self.table.get(seq_id)
        sampling_check(sampling_params)
        if sampling_params.seed != seq.sampling.seed:  # a new seed restarts the stream; same seed continues
            seq.generator = _generator(sampling_params)
        seq.sampling = sampling_params

    def append(self, seq_id: int, token_ids: list[int]) -> None:
        self._check_tokens(token_ids)
        self.table.append(seq_id, token_ids)

    def truncate(self, seq_id: int, length: int) -> None:
        self.table.truncate(seq_id, length)

    def fork(self, seq_id: int, child_id: int) -> None:
        child = self.table.fork(seq_id, child_id)
        parent = self.table.get(seq_id)
        if child.host is not None:
            self._host_refs[id(child.host)] = self._host_refs.get(id(child.host), 1) + 1
        child.generator = None
        if parent.generator is not None:  # the child continues the parent's random stream
            child.generator = torch.Generator(device="cpu")
            child.generator.set_state(parent.generator.get_state())

    def tokens(self, seq_id: int) -> list[int]:
        return list(self.table.get(seq_id).tokens)

    def length(self, seq_id: int) -> int:
        return len(self.table.get(seq_id).tokens)

    def pending(self, seq_id: int) -> int:
        seq = self.table.get(seq_id)
        return len(seq.tokens) - seq.computed

    def kv_needed(self, seq_id: int, num_tokens: int) -> int:
        return self.table.kv_needed(seq_id, num_tokens)

    def kv_free(self) -> int:
        return self.table.alloc.num_free()

    def kv_cached(self) -> int:
        """Free blocks that still hold a cached prefix (optional driver method, read by /metrics)."""
        return self.table.alloc.num_cached()

    def constrain(self, seq_id: int, allowed: AllowedFn | None) -> None:
        """Sample ``seq_id`` only among the ids ``allowed(tokens)`` gives (see lmos.drivers.masks)."""
        self.masks.set(seq_id, allowed)

    def free(self, seq_id: int) -> None:
        seq = self.table.free(seq_id)
        if seq is not None:
            self._release_host(seq)

    def drop(self, seq_id: int) -> None:
        seq = self.table.get(seq_id)
        self._release_host(seq)
        self.table.drop(seq_id)

    def swap_out(self, seq_id: int) -> None:
        """Copy the sequence's blocks to host memory and free them.  No-op unless on the device."""
        seq = self.table.get(seq_id)
        if seq.location is not KVLocation.DEVICE:
            return
        host = self.pool.to_host(seq.blocks) if seq.blocks else None
        self.table.swap_out(seq_id)
        seq.host = host
        if host is not None:
            self._host_refs[id(host)] = 1

    def swap_in(self, seq_id: int) -> None:
        """Bring a swapped sequence's blocks back.  No-op unless swapped out."""
        seq = self.table.get(seq_id)
        if seq.location is not KVLocation.HOST:
            return
        host = seq.host
        copies = self.table.swap_in(seq_id)
        self.pool.zero_blocks(self.table.alloc.drain_fresh())
        if host is not None:
            self.pool.from_host(host, copies)
            seq.host = host
            self._release_host(seq)

    def _release_host(self, seq: Seq) -> None:
        host = seq.host
        seq.host = None
        if host is None:
            return
        left = self._host_refs.get(id(host), 1) - 1
        if left > 0:
            self._host_refs[id(host)] = left
        else:
            self._host_refs.pop(id(host), None)
            self.pool.release_host(host)

    def cost(self, seq_id: int) -> KVCost:
        seq = self.table.get(seq_id)
        held = seq.host_blocks if seq.location is KVLocation.HOST else len(seq.blocks)
        swap_bytes = held * self.pool.block_bytes
        return KVCost(
            location=seq.location,
            blocks=len(seq.blocks),
            exclusive_blocks=self.table.exclusive_blocks(seq),
            swap_bytes=swap_bytes,
            recompute_tokens=seq.computed,
            swap_seconds=2 * swap_bytes / self.pool.swap_bandwidth,
            recompute_seconds=seq.computed / self.prefill_tok_s,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for seq_id in list(self.table.seqs):
            self.free(seq_id)
        self.pool.keys.clear()
        self.pool.values.clear()
        if self._decode_cache is not None:
            self._decode_cache.clear()
        if self._stepper is not None:
            self._stepper.close()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- step
    def step(self, plan: StepPlan) -> dict[int, int | None]:
        if self._closed:
            raise SyscallError(Errno.EIO, "driver is closed")
        if self._stepper is not None:
            # one torch thread forms no OpenMP team: nothing to confine, so skip the hand-off
            if torch.get_num_threads() == 1:
                return self._stepper.run_here(lambda: self._step(plan))
            return self._stepper.run(lambda: self._step(plan))
        if self.device.type == "cpu":
            return self._step(plan)
        return _on_cuda_thread().submit(self._step, plan).result()

    def _step(self, plan: StepPlan) -> dict[int, int | None]:
        if self._closed:
            raise SyscallError(Errno.EIO, "driver is closed")
        plan.apply_moves(self)
        if not plan.items:
            return {}
        seqs = self._validate(plan)
        need = sum(self.table.kv_needed(item.seq_id, item.num_tokens) for item in plan.items)
        if need > self.kv_free():
            raise SyscallError(Errno.ENOMEM, f"step needs {need} KV blocks, {self.kv_free()} free")
        copies: list[tuple[int, int]] = []
        for item, seq in zip(plan.items, seqs, strict=True):
            copies += self.table.prepare(seq, item.num_tokens)
            seq.location = KVLocation.DEVICE
        start = time.perf_counter()
        with torch.inference_mode():
            self.pool.zero_blocks(self.table.alloc.drain_fresh())
            self.pool.copy_blocks(copies)
            tokens = self._forward(plan, seqs)
        elapsed = time.perf_counter() - start
        # only prefill-dominated steps say how fast a recompute would run (decodes are slower per token)
        computed = sum(item.num_tokens for item in plan.items)
        if computed >= 64 and 2 * len(plan.items) < computed and elapsed > 0:
            self.prefill_tok_s = 0.7 * self.prefill_tok_s + 0.3 * computed / elapsed
        self.steps += 1
        return tokens

    def _validate(self, plan: StepPlan) -> list[Seq]:
        if len(plan.items) > self.limits.max_seqs:
            raise SyscallError(Errno.EINVAL, f"{len(plan.items)} sequences > max_seqs {self.limits.max_seqs}")
        total = sum(item.num_tokens for item in plan.items)
        if total > self.limits.max_tokens:
            raise SyscallError(Errno.EINVAL, f"{total} tokens exceed max_tokens {self.limits.max_tokens}")
        seen: set[int] = set()
        seqs: list[Seq] = []
        for item in plan.items:
            seq = self.table.get(item.seq_id)
            if item.seq_id in seen:
                raise SyscallError(Errno.EINVAL, f"sequence {item.seq_id} planned twice")
            seen.add(item.seq_id)
            if seq.location is KVLocation.HOST:
                raise SyscallError(Errno.EINVAL, f"sequence {item.seq_id} is swapped out")
            pending = len(seq.tokens) - seq.computed
            if item.sample and item.num_tokens == pending and len(seq.tokens) >= self.limits.max_model_len:
                raise SyscallError(Errno.E2BIG, f"sequence {item.seq_id} fills the model window")
            if not 1 <= item.num_tokens <= pending:
                raise SyscallError(
                    Errno.EINVAL, f"sequence {item.seq_id}: {item.num_tokens} planned, {pending} pending"
                )
            seqs.append(seq)
        return seqs

    def _forward(self, plan: StepPlan, seqs: list[Seq]) -> dict[int, int | None]:
        """Pack decodes first, prefill chunks after; run the model once; sample."""
        # decodes first, in seq-id order so an unchanged decode batch is recognised whatever the plan order
        items = plan.items
        order = sorted(range(len(items)), key=lambda i: (items[i].num_tokens > 1, items[i].seq_id))
        dec_key: list[tuple[int, int]] = []
        ids: list[int] = []
        dec_tables: list[list[int]] = []
        dec_starts: list[int] = []
        pre_tables: list[list[int]] = []
        pre_starts: list[int] = []
        pre_counts: list[int] = []
        keep: list[int] = []  # packed index of the last token of each sampling item
        sampled: list[int] = []  # plan index of each sampling item, same order
        for i in order:
            item, seq = plan.items[i], seqs[i]
            c, n = seq.computed, item.num_tokens
            ids.extend(seq.tokens[c : c + n])
            if n == 1:
                dec_tables.append(seq.blocks)
                dec_starts.append(c)
                dec_key.append((item.seq_id, seq.kv_version))
            else:
                pre_tables.append(seq.blocks)
                pre_starts.append(c)
                pre_counts.append(n)
            if item.sample and c + n == len(seq.tokens):
                keep.append(len(ids) - 1)
                sampled.append(i)
        batch, input_ids, position_ids, keep_t = hf_attention.build_batch(
            self.pool, ids, keep, dec_tables, dec_starts, pre_tables, pre_starts, pre_counts,
            self._decode_cache, tuple(dec_key),
        )
        every = len(keep) == len(ids)  # every packed token is sampled (pure decode): no rows to pick
        extra: dict[str, Any] = {"logits_to_keep": 0 if every else keep_t} if self._keep_arg else {}
        try:
            out = self.model(
                input_ids=input_ids, position_ids=position_ids, use_cache=False, lmos_batch=batch, **extra
            )
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            if self._decode_cache is not None:  # it may have been left half-updated
                self._decode_cache.clear()
            raise SyscallError(Errno.EIO, f"forward pass failed: {str(exc).splitlines()[0]}") from exc
        result: dict[int, int | None] = {item.seq_id: None for item in plan.items}
        for item, seq in zip(plan.items, seqs, strict=True):
            self.table.commit(seq, item.num_tokens)
        if keep:
            logits = out.logits[0] if self._keep_arg or every else out.logits[0].index_select(0, keep_t)
            chosen = [seqs[i] for i in sampled]
            params = [s.sampling for s in chosen]
            if not self.masks.fns and sampling.plain_greedy(params):
                # fused greedy: one argmax in the model's dtype, no float32 copy of [B, vocab] logits
                # (exact: widening to float32 keeps the order and the ties, and argmax takes the first)
                new = logits.argmax(dim=-1).tolist()
            else:
                logits = logits.float()
                if self.masks.fns:
                    ids = [plan.items[i].seq_id for i in sampled]
                    self.masks.apply(logits, ids, [s.tokens for s in chosen])
                new = sampling.sample(
                    logits,
                    params,
                    [s.generator for s in chosen],
                    [s.tokens if s.sampling.repetition_penalty != 1.0 else () for s in chosen],
                    self._rng,
                )
            for i, seq, token in zip(sampled, chosen, new, strict=True):
                seq.tokens.append(token)
                result[plan.items[i].seq_id] = token
        return result


def sampling_check(params: SamplingParams) -> None:
    """Module-level so methods whose ``sampling`` argument shadows the module can call it."""
    sampling.check_params(params)


def _generator(params: SamplingParams) -> torch.Generator | None:
    return sampling.make_generator(params)
