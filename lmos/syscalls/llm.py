"""The ``llm_generate`` syscall: think, as a process, on the shared model.

The prompt (text, segments of framing and data, or token ids) is appended to
the calling process's context (its driver sequence), or replaces it with
``reset``.  Sampling fields left as ``None`` take the model's defaults (its
generation config), the same way ``model.generate`` does.  The call returns
when the request completes: on the model's end-of-sequence token, a stop
string, ``max_tokens`` or the quota.

With ``n > 1`` the prompt is prefilled once and ``n`` choices continue from forks
of that context (copy-on-write KV); the reply's ``choices`` holds them all, its
top-level fields describe choice 0 (the process's context afterwards), and
``completion_tokens`` counts every choice's tokens.  A streamed process (one
with subscribers) streams every choice: once the forks exist its subscribers
get a ``fork`` event whose ``data["pids"]`` lists the choices' sequence ids in
choice order (the process's own pid first), then the token events of all
choices interleaved, each carrying its choice's id as ``pid``.  Token events
before the ``fork`` event belong to the shared prefill and are no choice's.

``json_object`` makes the reply one JSON object by constrained decoding
(:mod:`lmos.syscalls.jsonmode`; each fork of ``n`` follows its own).  It needs
a driver with the ``constrain`` hook (:mod:`lmos.drivers.masks`): EINVAL
otherwise, never an unenforced promise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from lmos.drivers.base import Driver, SamplingParams, encode_segments
from lmos.drivers.masks import TokenMasks
from lmos.errors import Errno, SyscallError
from lmos.kernel.tokenize import check_length, off_loop
from lmos.syscalls.jsonmode import JsonObjectConstraint, TokenTable
from lmos.syscalls.mem import paged_generate
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import MAX_PROMPT_CHARS, GenerateChoice, GenerateReply, LlmGenerate

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx


def prompt_ids(drv: Driver, model: str, req: LlmGenerate) -> list[int]:
    """The token ids of the request's ``prompt``, ``segments`` or ``token_ids`` (at most one).

    ``prompt`` is the caller's own text and may contain control tokens on purpose;
    ``segments`` mark which parts are data (see :mod:`lmos.chatformat`), and a
    control-token string in a data part stays plain text.
    """
    given = [f for f in ("prompt", "segments", "token_ids") if getattr(req, f) is not None]
    if len(given) > 1:
        both = " and ".join(given)
        raise SyscallError(Errno.EINVAL, f"give one of prompt, segments and token_ids, not {both}")
    if req.prompt or req.segments:
        if drv.tokenizer is None:
            raise SyscallError(Errno.EINVAL, f"model {model!r} has no tokenizer: pass token_ids")
        if req.prompt:
            return drv.tokenizer.encode(req.prompt)
        segments = req.segments or []
        size = sum(len(text) for text, _ in segments)
        if size > MAX_PROMPT_CHARS:
            raise SyscallError(Errno.E2BIG, f"prompt of {size} characters; the limit is {MAX_PROMPT_CHARS}")
        return encode_segments(drv.tokenizer, segments)
    return list(req.token_ids or [])


def merge_sampling(base: SamplingParams, req: LlmGenerate) -> SamplingParams:
    return SamplingParams(
        temperature=base.temperature if req.temperature is None else req.temperature,
        top_p=base.top_p if req.top_p is None else req.top_p,
        top_k=base.top_k if req.top_k is None else req.top_k,
        repetition_penalty=(base.repetition_penalty if req.repetition_penalty is None
                            else req.repetition_penalty),
        seed=base.seed if req.seed is None else req.seed,
    )


@syscall(20, "llm_generate", LlmGenerate, GenerateReply, cap="llm", blocking=True)
async def sys_llm_generate(ctx: Ctx, req: LlmGenerate) -> GenerateReply:
    """Append a prompt to the process context and generate until a stop condition."""
    p = ctx.proc
    sched = ctx.kernel.scheduler(p.model)
    drv = sched.driver
    chars = len(req.prompt or "") + sum(len(text) for text, _ in req.segments or ())
    if chars:  # refuse what cannot fit before tokenizing, then tokenize off the event loop
        check_length(drv.tokenizer, chars, drv.limits.max_model_len)
    ids = await off_loop(chars, lambda: prompt_ids(drv, p.model, req))
    vocab = getattr(drv, "vocab_size", None)
    if vocab is not None and any(t >= vocab for t in ids):
        raise SyscallError(Errno.EINVAL, f"token id out of range for a vocabulary of {vocab}")
    stop_ids = frozenset(drv.eos_token_ids if req.stop_token_ids is None else req.stop_token_ids)
    sampling = merge_sampling(drv.default_sampling(), req)
    constrain = None
    if req.json_object:
        constrain = getattr(drv, "constrain", None)
        if constrain is None or req.page:
            why = "a paged context" if req.page else f"model {p.model!r} (its driver has no constrain hook)"
            raise SyscallError(Errno.EINVAL, f"JSON mode is not available for {why}")
        size = vocab or getattr(drv.tokenizer, "vocab_size", None)
        if not size:
            raise SyscallError(Errno.EINVAL, f"JSON mode needs the vocabulary size of model {p.model!r}")
        table = await anyio.to_thread.run_sync(TokenTable.of, drv.tokenizer, int(size))  # (once per model)
        constrain(p.pid, JsonObjectConstraint(table, stop_ids))
    try:
        if req.n > 1:
            return await _generate_n(ctx, req, ids, sampling, stop_ids)
        if req.page:
            if req.reset:
                raise SyscallError(Errno.EINVAL, "reset does not apply to a paged context")
            r = await paged_generate(ctx, ids, req.role, req.pin, sampling, req.max_tokens, tuple(req.stop),
                                     stop_ids)
        else:
            r = await ctx.kernel.generate(p, ids, reset=req.reset, sampling=sampling,
                                          max_tokens=req.max_tokens, stop=tuple(req.stop),
                                          stop_token_ids=stop_ids)
    finally:
        if constrain is not None:
            constrain(p.pid, None)
    return GenerateReply(text=r.text(), token_ids=list(r.out), finish_reason=r.finish_reason or "length",
                         stop=r.stop_hit, prompt_tokens=len(ids), completion_tokens=len(r.out),
                         context_tokens=drv.length(p.pid) if p.has_seq else 0)


async def _generate_n(ctx: Ctx, req: LlmGenerate, ids: list[int], sampling: SamplingParams,
                      stop_ids: frozenset[int]) -> GenerateReply:
    """``n`` choices, forks of one context (see the module docstring: streaming, JSON mode)."""
    p = ctx.proc
    if req.page:
        raise SyscallError(Errno.EINVAL, "n > 1 does not apply to a paged context")
    drv = ctx.kernel.scheduler(p.model).driver
    bus = ctx.kernel.events
    relayed: list[int] = []
    masks = getattr(drv, "masks", None)
    parent = masks.fns.get(p.pid) if req.json_object and isinstance(masks, TokenMasks) else None
    constrained: list[int] = []

    def forked(pids: list[int]) -> None:
        if isinstance(parent, JsonObjectConstraint):  # each fork follows its own JSON
            for kid in pids[1:]:
                drv.constrain(kid, parent.fork())  # type: ignore[attr-defined]
                constrained.append(kid)
        subs = bus.subs.get(p.pid)  # stream every choice to the process's subscribers
        if subs:
            for kid in pids[1:]:
                bus.subs[kid] = subs  # the same list: the scheduler's token events reach them
                relayed.append(kid)
            bus.publish(p.pid, kind="fork", data={"pids": pids})

    try:
        rs = await ctx.kernel.generate_n(p, ids, n=req.n, reset=req.reset, sampling=sampling,
                                         max_tokens=req.max_tokens, stop=tuple(req.stop),
                                         stop_token_ids=stop_ids,
                                         on_fork=forked if bus.has(p.pid) or parent is not None else None)
    finally:
        for kid in relayed:  # (a fork's pid is never handed out again)
            bus.subs.pop(kid, None)
        for kid in constrained:
            drv.constrain(kid, None)  # type: ignore[attr-defined]
    choices = [GenerateChoice(text=r.text(), token_ids=list(r.out),
                              finish_reason=r.finish_reason or "length", stop=r.stop_hit) for r in rs]
    c0 = choices[0]
    return GenerateReply(text=c0.text, token_ids=c0.token_ids, finish_reason=c0.finish_reason, stop=c0.stop,
                         prompt_tokens=len(ids), completion_tokens=sum(len(r.out) for r in rs),
                         context_tokens=drv.length(p.pid) if p.has_seq else 0, choices=choices)
