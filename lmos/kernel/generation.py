"""Generation: a process's ``llm_generate`` on its model's scheduler, under its token quotas.

A process's quota and every ancestor's that covers it (see
``Process.quota_chain``) bound each generation: the most it may take is held
from all of them before the request is queued, so siblings generating at once
cannot together spend more than their parent was given, and what was really
generated is charged to the ancestors when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import msgspec

from lmos.drivers.base import SamplingParams
from lmos.errors import Errno, SyscallError
from lmos.kernel.process import Process, State
from lmos.kernel.request import GenRequest
from lmos.kernel.scheduler import Scheduler

if TYPE_CHECKING:
    from lmos.kernel.kernel import KernelCore


async def generate(core: KernelCore, p: Process, token_ids: list[int], *, reset: bool,
                   sampling: SamplingParams, max_tokens: int, stop: tuple[str, ...] = (),
                   stop_token_ids: frozenset[int] = frozenset(),
                   context: list[int] | None = None) -> GenRequest:
    """Append ``token_ids`` to the process context and generate; wait for the end.

    With ``context`` (a paged process's window, see kernel/memory.py) the driver
    sequence is made equal to it instead, keeping the KV of the common prefix;
    ``token_ids`` is then only the new prompt, for accounting.
    """
    await core.checkpoint(p)
    sched = core.scheduler(p.model)
    if max_tokens < 1:
        raise SyscallError(Errno.EINVAL, "max_tokens must be >= 1")
    left = p.tokens_left()  # its own quota and every ancestor's that covers it
    if left is not None:
        if left <= 0:
            whose = "parent's token quota" if p.token_quota is None else f"token quota of {p.token_quota}"
            raise SyscallError(Errno.EDQUOT, f"{whose} used up")
        max_tokens = min(max_tokens, left)
    # Hold the most this generation may take from every quota that covers it, before any
    # await, so that siblings generating at once cannot together overrun an ancestor's quota.
    chain, before = p.quota_chain(), p.stats.generated_tokens
    for q in chain:
        q.tokens_reserved += max_tokens
    try:
        req = await _generate(core, p, sched, token_ids, reset=reset, sampling=sampling,
                              max_tokens=max_tokens, stop=stop, stop_token_ids=stop_token_ids,
                              context=context)
    finally:
        spent = p.stats.generated_tokens - before
        for q in chain:
            q.tokens_reserved -= max_tokens
            if q is not p:
                q.children_tokens += spent
    left = p.tokens_left()
    if req.finish_reason == "length" and left is not None and left <= 0:
        req.finish_reason = "quota"
    return req

async def generate_n(core: KernelCore, p: Process, token_ids: list[int], *, n: int, reset: bool,
                     sampling: SamplingParams, max_tokens: int, stop: tuple[str, ...] = (),
                     stop_token_ids: frozenset[int] = frozenset(),
                     on_fork: Callable[[list[int]], None] | None = None) -> list[GenRequest]:
    """``n`` choices from one prefill: the prompt is appended and computed once, then the
    driver sequence is forked ``n - 1`` times (the forks share its KV copy-on-write) and
    each branch continues on its own; branch ``i`` samples with ``seed + i`` when seeded.

    The process's own sequence carries choice 0 (its context afterwards is that choice's);
    the others run as kernel-internal sequences freed at the end.  The prefill samples one
    token that is thrown away (its logits are not kept), and every branch recomputes the
    prompt's last token, so choice ``i`` is exactly what a single generation with
    ``seed + i`` gives.

    ``on_fork`` is called with the choices' sequence ids (the process's own first) once the
    forks exist and before any of them runs, e.g. to stream their tokens (lmos.syscalls.llm).
    """
    if n == 1:
        return [await generate(core, p, token_ids, reset=reset, sampling=sampling, max_tokens=max_tokens,
                               stop=stop, stop_token_ids=stop_token_ids)]
    sched = core.scheduler(p.model)
    drv = sched.driver
    # prefill once (unseeded: the sampled token is discarded; the branches restart their streams)
    unseeded = msgspec.structs.replace(sampling, seed=None)
    pre = await generate(core, p, token_ids, reset=reset, sampling=unseeded, max_tokens=1)
    p.stats.generated_tokens -= len(pre.out)  # not a generated token of any choice
    chain = p.quota_chain()
    for q in chain:
        if q is not p:
            q.children_tokens -= len(pre.out)
    left = p.tokens_left()
    if left is not None:
        if left < n:
            raise SyscallError(Errno.EDQUOT, f"token quota too small for {n} choices")
        max_tokens = min(max_tokens, left // n)

    def branch(i: int) -> SamplingParams:
        seed = sampling.seed
        return sampling if seed is None else msgspec.structs.replace(sampling, seed=seed + i)

    kids: list[Process] = []
    results: list[GenRequest | None] = [None] * n
    for q in chain:
        q.tokens_reserved += n * max_tokens
    try:
        async with sched.lock:
            # back to the prompt, its last token pending again: a branch's first step computes it
            # and samples from its logits
            last = drv.length(p.pid) - len(pre.out) - 1
            tail = drv.tokens(p.pid)[last]
            drv.truncate(p.pid, last)
            drv.append(p.pid, [tail])
            for i in range(1, n):
                cid = core.journal.alloc_pid()
                drv.fork(p.pid, cid)
                kid = Process(pid=cid, ppid=p.pid, uid=p.uid, app=p.app, argv=[], model=p.model,
                              caps=frozenset(), priority=p.priority, weight=p.weight, has_seq=True)
                kid.set_state(State.RUNNING)
                kids.append(kid)
                sched.kv.track(cid)
                sched.kv.mark(cid, sched.kv.location(p.pid))  # where the parent's KV is (maybe swapped)
                drv.set_sampling(cid, branch(i))
            if on_fork is not None:
                on_fork([p.pid, *(k.pid for k in kids)])
        errors: list[SyscallError] = []

        async def run(i: int, proc: Process) -> None:
            try:
                results[i] = await _generate(core, proc, sched, [], reset=False, sampling=branch(i),
                                             max_tokens=max_tokens, stop=stop, stop_token_ids=stop_token_ids,
                                             context=None)
            except SyscallError as exc:  # raised as itself below, not inside an exception group
                errors.append(exc)
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for i, proc in enumerate([p, *kids]):
                tg.start_soon(run, i, proc)
        if errors:
            raise errors[0]
    finally:
        spent = sum(k.stats.generated_tokens for k in kids)
        p.stats.generated_tokens += spent
        for q in chain:
            q.tokens_reserved -= n * max_tokens
            if q is not p:
                q.children_tokens += spent
        with anyio.CancelScope(shield=True):  # the forks go even when the caller is cancelled
            async with sched.lock:
                for kid in kids:
                    sched.withdraw(kid)
                    drv.free(kid.pid)
                    sched.kv.forget(kid.pid)
        sched.kick()
    out = [r for r in results if r is not None]
    left = p.tokens_left()
    for r in out:
        if r.finish_reason == "length" and left is not None and left <= 0:
            r.finish_reason = "quota"
    return out


async def _generate(core: KernelCore, p: Process, sched: Scheduler, token_ids: list[int], *,
                    reset: bool, sampling: SamplingParams, max_tokens: int, stop: tuple[str, ...],
                    stop_token_ids: frozenset[int], context: list[int] | None) -> GenRequest:
    drv = sched.driver
    started = time.monotonic()
    counters = core.counters.model(p.model)
    if sched.queued >= core.config.max_queue:
        raise SyscallError(Errno.EAGAIN, f"model {p.model!r} run queue is full")
    async with sched.lock:
        if not p.has_seq:
            if not (token_ids if context is None else context):
                raise SyscallError(Errno.EINVAL, "empty prompt")
            first = token_ids if context is None else context
            drv.add(p.pid, first, sampling)
            counters.admitted(len(first), len(first) - drv.pending(p.pid))
            p.has_seq = True
            sched.kv.track(p.pid)
        else:
            if reset:
                drv.truncate(p.pid, 0)
            drv.set_sampling(p.pid, sampling)
            if context is not None:
                core.memory.sync(p.pid, drv, context)
            elif token_ids:
                drv.append(p.pid, token_ids)
            if drv.pending(p.pid) == 0:
                raise SyscallError(Errno.EINVAL, "empty prompt")
        room = drv.limits.max_model_len - drv.length(p.pid)
        prefill = drv.pending(p.pid)
    if room <= 0:
        raise SyscallError(Errno.E2BIG, f"context of {drv.limits.max_model_len} tokens is full")
    req = GenRequest(pid=p.pid, max_tokens=min(max_tokens, room), stop=stop,
                     stop_token_ids=stop_token_ids, tokenizer=drv.tokenizer,
                     prompt_tokens=len(token_ids))
    p.stats.prompt_tokens += len(token_ids)
    p.request = req
    sched.submit(p)
    interrupted = False
    try:
        with anyio.CancelScope() as scope:
            core._intr[p.pid] = scope
            await req.done.wait()
        interrupted = scope.cancelled_caught
    finally:
        counters.finished(req, started, prefill)
        core._intr.pop(p.pid, None)
        if p.request is req:  # cancelled or interrupted before completion
            sched.withdraw(p)
            p.request = None
            if p.state is State.READY:
                p.set_state(State.RUNNING)
    if interrupted:
        raise SyscallError(Errno.EINTR, "llm_generate interrupted by SIGINT")
    if req.error is not None:
        raise req.error
    return req
