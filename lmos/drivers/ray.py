"""``RayDriver``: one step-level driver over model replicas that are Ray actors.

The kernel stays one process and sees one :class:`lmos.drivers.base.Driver`:
its scheduler plans steps over every sequence as if they shared one pool, and
this driver fans each step out to the replicas that hold the sequences, in
parallel, and gathers the tokens.  Each replica is lmos's transformers driver
(:mod:`lmos.drivers.hf`) inside a Ray actor on its node
(:mod:`lmos.drivers.ray_replica`); starting them is :mod:`lmos.drivers.ray_cluster`.

Why a mirror.  The kernel calls the bookkeeping methods (``pending``,
``kv_needed``, ``append`` ...) on its event loop, per process per tick; a remote
call each would cost a millisecond apiece.  So the driver keeps each sequence's
tokens and computed count here, answers from that, and queues the changes as
ops that travel with the replica's next step: one round trip per replica per
step.  Replies carry each touched sequence's real computed count, which the
mirror adopts (a prefix-cache hit computes more than the kernel planned).

Placement, migration and failures (see :mod:`lmos.drivers.ray_placement`):
a new sequence goes to the least loaded replica, or to the one holding its
prefix; after a step the busiest replica hands sequences to the idlest when
they are imbalanced, moving KV blocks or recomputing whichever is estimated
faster; and when a replica dies (its actor raises, or a step outlives
``step_timeout``) its sequences are re-added on the survivors from the
mirror's tokens, to be recomputed there.  Nothing the kernel saw is lost and
generation continues where it stopped: token-exact with greedy sampling.  (A
seeded sampler restarts its random stream on the new replica.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from lmos.drivers.base import DriverLimits, KVCost, KVLocation, SamplingParams, StepPlan
from lmos.drivers.masks import AllowedFn, TokenMasks
from lmos.drivers.ray_placement import Placement, PlacementMode, choose_move, imbalance
from lmos.drivers.ray_replica import ReplicaInfo, StepReply
from lmos.errors import Errno, SyscallError

log = logging.getLogger("lmos.ray")


@dataclass(slots=True)
class _Seq:
    tokens: list[int]
    sampling: SamplingParams
    replica: int
    computed: int = 0
    location: KVLocation = KVLocation.DEVICE
    host_blocks: int = 0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class RayDriver:
    """The :class:`lmos.drivers.base.Driver` spanning Ray replica actors."""

    def __init__(self, handles: list[Any], infos: list[ReplicaInfo], *, tokenizer: Any = None,
                 placement: PlacementMode = "affinity", step_timeout: float = 120.0,
                 migrate: bool = True, migrate_threshold: int = 3, bandwidth: float = 1e9,
                 on_close: Callable[[], None] | None = None) -> None:
        first = infos[0]
        self.handles = handles
        self.infos = infos
        self.name = f"ray:{first.name}x{len(handles)}"
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(first.eos_token_ids)
        self.vocab_size = first.vocab_size
        self._defaults = first.default_sampling
        lim = [i.limits for i in infos]
        self.limits = DriverLimits(max_seqs=sum(x.max_seqs for x in lim),
                                   max_tokens=sum(x.max_tokens for x in lim),
                                   num_blocks=sum(x.num_blocks for x in lim),
                                   block_size=first.limits.block_size,
                                   max_model_len=min(x.max_model_len for x in lim))
        self.block_bytes = first.block_bytes
        self.placement = Placement(len(handles), first.limits.block_size, placement)
        self.step_timeout = step_timeout
        self.migrate = migrate
        self.migrate_threshold = migrate_threshold
        self.bandwidth = bandwidth  # bytes/s between nodes, for the move-or-recompute estimate
        self.masks = TokenMasks()  # constrain registrations, re-sent when a sequence changes replica
        self.seqs: dict[int, _Seq] = {}
        self._ops: list[list[tuple[Any, ...]]] = [[] for _ in handles]
        self._free = [i.limits.num_blocks for i in infos]
        self._prefill = [i.prefill_tok_s for i in infos]
        self._deferred: dict[int, int] = {}  # seq -> consecutive steps its replica deferred it
        self._on_close = on_close
        self._closed = False
        self.steps = 0

    # --------------------------------------------------------- bookkeeping
    def default_sampling(self) -> SamplingParams:
        return self._defaults

    def _get(self, seq_id: int) -> _Seq:
        seq = self.seqs.get(seq_id)
        if seq is None:
            raise SyscallError(Errno.ENOENT, f"no sequence {seq_id}")
        return seq

    def _check_tokens(self, token_ids: list[int]) -> None:
        if token_ids and (min(token_ids) < 0 or max(token_ids) >= self.vocab_size):
            raise SyscallError(Errno.EINVAL, f"token id outside the vocabulary [0, {self.vocab_size})")

    def _check_len(self, n: int) -> None:
        if n > self.limits.max_model_len:
            raise SyscallError(Errno.E2BIG, f"{n} tokens exceed the model window of "
                               f"{self.limits.max_model_len}")

    def add(self, seq_id: int, token_ids: list[int], sampling: SamplingParams) -> None:
        from lmos.drivers import sampling as _sampling

        if seq_id in self.seqs:
            raise SyscallError(Errno.EEXIST, f"sequence {seq_id} exists")
        _sampling.check_params(sampling)
        self._check_tokens(token_ids)
        self._check_len(len(token_ids))
        try:
            r = self.placement.choose(token_ids)
        except ValueError:
            raise SyscallError(Errno.EIO, "every replica of the cluster has died") from None
        self.seqs[seq_id] = _Seq(list(token_ids), sampling, r)
        self.placement.placed(r, token_ids)
        self._admit(seq_id, r)

    def _admit(self, seq_id: int, r: int) -> None:
        """Queue the add of the mirror's sequence on replica ``r`` (a new one, or one resumed or
        migrated there to be recomputed)."""
        seq = self.seqs[seq_id]
        self._ops[r].append(("add", seq_id, list(seq.tokens), seq.sampling))
        fn = self.masks.fns.get(seq_id)
        if fn is not None:
            self._ops[r].append(("constrain", seq_id, fn))

    def set_sampling(self, seq_id: int, sampling: SamplingParams) -> None:
        from lmos.drivers import sampling as _sampling

        seq = self._get(seq_id)
        _sampling.check_params(sampling)
        seq.sampling = sampling
        self._ops[seq.replica].append(("sampling", seq_id, sampling))

    def append(self, seq_id: int, token_ids: list[int]) -> None:
        seq = self._get(seq_id)
        self._check_tokens(token_ids)
        self._check_len(len(seq.tokens) + len(token_ids))
        seq.tokens.extend(token_ids)
        self._ops[seq.replica].append(("append", seq_id, list(token_ids)))

    def truncate(self, seq_id: int, length: int) -> None:
        seq = self._get(seq_id)
        if not 0 <= length <= len(seq.tokens):
            raise SyscallError(Errno.EINVAL, f"cannot truncate {len(seq.tokens)} tokens to {length}")
        del seq.tokens[length:]
        seq.computed = min(seq.computed, max(length - 1, 0))  # as the paging table does
        if seq.location is KVLocation.HOST:
            seq.host_blocks = min(seq.host_blocks, _ceil_div(seq.computed, self.limits.block_size))
        self._ops[seq.replica].append(("truncate", seq_id, length))

    def fork(self, seq_id: int, child_id: int) -> None:
        parent = self._get(seq_id)
        if child_id in self.seqs:
            raise SyscallError(Errno.EEXIST, f"sequence {child_id} exists")
        self.seqs[child_id] = _Seq(list(parent.tokens), parent.sampling, parent.replica, parent.computed,
                                   parent.location, parent.host_blocks)
        self.placement.loads[parent.replica] += 1
        self._ops[parent.replica].append(("fork", seq_id, child_id))

    def tokens(self, seq_id: int) -> list[int]:
        return list(self._get(seq_id).tokens)

    def length(self, seq_id: int) -> int:
        return len(self._get(seq_id).tokens)

    def pending(self, seq_id: int) -> int:
        seq = self._get(seq_id)
        return len(seq.tokens) - seq.computed

    def _held(self, seq: _Seq) -> int:
        if seq.location is KVLocation.HOST:
            return seq.host_blocks
        if seq.location is KVLocation.DEVICE:
            return _ceil_div(seq.computed, self.limits.block_size)
        return 0

    def kv_needed(self, seq_id: int, num_tokens: int) -> int:
        seq = self._get(seq_id)
        held = self._held(seq)
        need = max(_ceil_div(seq.computed + num_tokens, self.limits.block_size) - held, 0)
        return need + held if seq.location is KVLocation.HOST else need

    def kv_free(self) -> int:
        return sum(self._free[i] for i in self.placement.live())

    def constrain(self, seq_id: int, allowed: AllowedFn | None) -> None:
        """Constrained decoding (JSON mode): the callable is pickled to the sequence's replica."""
        self.masks.set(seq_id, allowed)
        seq = self.seqs.get(seq_id)
        if seq is not None:
            self._ops[seq.replica].append(("constrain", seq_id, allowed))

    def free(self, seq_id: int) -> None:
        seq = self.seqs.pop(seq_id, None)
        self._deferred.pop(seq_id, None)
        if seq is None:
            return
        self.placement.removed(seq.replica)
        if self.placement.alive[seq.replica]:
            self._ops[seq.replica].append(("free", seq_id))

    def drop(self, seq_id: int) -> None:
        seq = self._get(seq_id)
        seq.computed, seq.location, seq.host_blocks = 0, KVLocation.NONE, 0
        self._ops[seq.replica].append(("drop", seq_id))

    def swap_out(self, seq_id: int) -> None:
        seq = self._get(seq_id)
        if seq.location is not KVLocation.DEVICE:
            return
        seq.location, seq.host_blocks = KVLocation.HOST, _ceil_div(seq.computed, self.limits.block_size)
        self._ops[seq.replica].append(("swap_out", seq_id))

    def swap_in(self, seq_id: int) -> None:
        seq = self._get(seq_id)
        if seq.location is not KVLocation.HOST:
            return
        seq.location, seq.host_blocks = KVLocation.DEVICE, 0
        self._ops[seq.replica].append(("swap_in", seq_id))

    def cost(self, seq_id: int) -> KVCost:
        seq = self._get(seq_id)
        held = self._held(seq)
        swap_bytes = held * self.block_bytes
        blocks = held if seq.location is KVLocation.DEVICE else 0
        return KVCost(location=seq.location, blocks=blocks, exclusive_blocks=blocks, swap_bytes=swap_bytes,
                      recompute_tokens=seq.computed, swap_seconds=2 * swap_bytes / 4e9,
                      recompute_seconds=seq.computed / max(self._prefill[seq.replica], 1.0))

    @property
    def stats(self) -> dict[str, Any]:
        """Placement, migration and failure counters (also for benchmarks and tests)."""
        s = self.placement.stats
        return {**msgspec.structs.asdict(s), "prefix_hit_rate": s.hit_rate, "replicas": len(self.handles),
                "live": len(self.placement.live()), "loads": list(self.placement.loads)}

    # ---------------------------------------------------------------- step
    def step(self, plan: StepPlan) -> dict[int, int | None]:
        import ray

        if self._closed:
            raise SyscallError(Errno.EIO, "driver is closed")
        plan.apply_moves(self)
        items: list[list[tuple[int, int, bool]]] = [[] for _ in self.handles]
        for item in plan.items:
            seq = self._get(item.seq_id)
            remaining = len(seq.tokens) - seq.computed - item.num_tokens
            items[seq.replica].append((item.seq_id, remaining, item.sample))
        calls: dict[int, Any] = {}
        for r in self.placement.live():
            if self._ops[r] or items[r]:
                calls[r] = self.handles[r].run.remote(self._ops[r], items[r])
                self._ops[r] = []
        results: dict[int, int | None] = {item.seq_id: None for item in plan.items}
        active: dict[int, int] = {}
        error: SyscallError | None = None
        if calls:
            ray.wait(list(calls.values()), num_returns=len(calls), timeout=self.step_timeout)
        for r, ref in calls.items():
            try:
                reply: StepReply = ray.get(ref, timeout=0.001)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError,
                    ray.exceptions.ObjectLostError) as exc:
                self._replica_died(r, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                error = cause if isinstance(cause, SyscallError) else SyscallError(
                    Errno.EIO, f"replica {r} step failed: {str(exc).splitlines()[0]}")
                continue
            self._absorb(r, reply, results)
            active[r] = len(items[r])
        self.steps += 1
        if error is not None:
            raise error
        if self.migrate:
            self._rebalance(active)
        return results

    def _absorb(self, r: int, reply: StepReply, results: dict[int, int | None]) -> None:
        self.placement.record_hits(reply.hits)
        self._free[r] = reply.kv_free
        self._prefill[r] = reply.prefill_tok_s
        for seq_id, computed in reply.computed.items():
            seq = self.seqs.get(seq_id)
            if seq is not None and seq.replica == r:
                seq.computed = computed
        for seq_id, tok in reply.tokens.items():
            seq = self.seqs.get(seq_id)
            if seq is not None and seq.replica == r:
                seq.tokens.append(tok)
                results[seq_id] = tok
        for seq_id in list(self._deferred):
            if seq_id not in reply.deferred and self.seqs.get(seq_id, None) is not None \
                    and self.seqs[seq_id].replica == r:
                self._deferred.pop(seq_id, None)
        for seq_id in reply.deferred:
            self._deferred[seq_id] = self._deferred.get(seq_id, 0) + 1

    # ------------------------------------------------------------ failures
    def _replica_died(self, r: int, exc: BaseException) -> None:
        """Resume every sequence of replica ``r`` on the others, from the mirror's tokens."""
        import ray

        log.warning("replica %d died (%s); resuming its sequences elsewhere", r, str(exc).splitlines()[0])
        self.placement.died(r)
        self._ops[r] = []
        self._free[r] = 0
        with contextlib.suppress(Exception):
            ray.kill(self.handles[r])  # a replica that only timed out must not come back half-way
        if not self.placement.live():
            raise SyscallError(Errno.EIO, "every replica of the cluster has died")
        for seq_id, seq in self.seqs.items():
            if seq.replica != r:
                continue
            dst = self.placement.choose(seq.tokens)
            seq.replica, seq.computed, seq.location, seq.host_blocks = dst, 0, KVLocation.DEVICE, 0
            self.placement.placed(dst, seq.tokens)
            self.placement.stats.placed -= 1
            self.placement.stats.resumed += 1
            self.placement.stats.recomputed += 1
            self._admit(seq_id, dst)

    # ----------------------------------------------------------- migration
    def _rebalance(self, active: dict[int, int]) -> None:
        """Move sequences from the busiest replica to the idlest when they are imbalanced, and
        sequences their replica keeps deferring (no free blocks) to one with room."""
        live = self.placement.live()
        moves: list[tuple[int, int]] = []
        got = imbalance(active, live, self.migrate_threshold)
        if got is not None:
            src, dst, count = got
            cands = sorted((s.computed, sid) for sid, s in self.seqs.items()
                           if s.replica == src and s.location is KVLocation.DEVICE)
            moves += [(sid, dst) for _, sid in cands[:count]]
        for sid, times in list(self._deferred.items()):
            seq = self.seqs.get(sid)
            if seq is None or times < 2 or len(live) < 2:
                continue
            dst = max((i for i in live if i != seq.replica), key=lambda i: self._free[i])
            if self._free[dst] >= _ceil_div(len(seq.tokens) + 1, self.limits.block_size) + 1:
                moves.append((sid, dst))
                self._deferred.pop(sid, None)
        for sid, dst in moves:
            self._migrate(sid, dst)

    def _migrate(self, seq_id: int, dst: int) -> None:
        seq = self.seqs[seq_id]
        src = seq.replica
        if src == dst or seq.location is not KVLocation.DEVICE:
            return
        blocks = _ceil_div(seq.computed, self.limits.block_size)
        kind, _ = choose_move(seq.computed, blocks * self.block_bytes, self._prefill[dst], self.bandwidth)
        stats = self.placement.stats
        stats.migrations += 1
        self.placement.removed(src)
        self.placement.loads[dst] += 1
        self.placement.remember(dst, seq.tokens)
        seq.replica = dst
        if kind == "move":
            ref = self.handles[src].export_kv.remote(seq_id)  # runs before src's next step
            self._ops[dst].append(("import", seq_id, list(seq.tokens), seq.sampling, seq.computed, [ref]))
            fn = self.masks.fns.get(seq_id)
            if fn is not None:
                self._ops[dst].append(("constrain", seq_id, fn))
            stats.moved_kv += 1
        else:
            self._ops[src].append(("free", seq_id))
            seq.computed = 0
            self._admit(seq_id, dst)
            stats.recomputed += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        import ray

        for h in self.handles:
            with contextlib.suppress(Exception):
                ray.kill(h)
        if self._on_close is not None:
            self._on_close()
