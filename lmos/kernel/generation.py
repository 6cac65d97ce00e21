"""Generation: a process's ``llm_generate`` on its model's scheduler, under its token quotas.

A process's quota and every ancestor's that covers it (see
``Process.quota_chain``) bound each generation: the most it may take is held
from all of them before the request is queued, so siblings generating at once
cannot together spend more than their parent was given, and what was really
generated is charged to the ancestors when it ends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

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
