"""The ``llm_generate`` syscall: think, as a process, on the shared model.

The prompt (text or token ids) is appended to the calling process's context
(its driver sequence), or replaces it with ``reset``.  Sampling fields left as
``None`` take the model's defaults (its generation config), the same way
``model.generate`` does.  The call returns when the request completes: on the
model's end-of-sequence token, a stop string, ``max_tokens`` or the quota.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmos.drivers.base import SamplingParams
from lmos.errors import Errno, SyscallError
from lmos.syscalls.mem import paged_generate
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import GenerateReply, LlmGenerate

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx


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
    if req.prompt is not None and req.token_ids is not None:
        raise SyscallError(Errno.EINVAL, "give prompt or token_ids, not both")
    if req.prompt:
        if drv.tokenizer is None:
            raise SyscallError(Errno.EINVAL, f"model {p.model!r} has no tokenizer: pass token_ids")
        ids = drv.tokenizer.encode(req.prompt)
    else:
        ids = list(req.token_ids or [])
    vocab = getattr(drv, "vocab_size", None)
    if vocab is not None and any(t >= vocab for t in ids):
        raise SyscallError(Errno.EINVAL, f"token id out of range for a vocabulary of {vocab}")
    stop_ids = frozenset(drv.eos_token_ids if req.stop_token_ids is None else req.stop_token_ids)
    sampling = merge_sampling(drv.default_sampling(), req)
    if req.page:
        if req.reset:
            raise SyscallError(Errno.EINVAL, "reset does not apply to a paged context")
        r = await paged_generate(ctx, ids, req.role, req.pin, sampling, req.max_tokens, tuple(req.stop),
                                 stop_ids)
    else:
        r = await ctx.kernel.generate(p, ids, reset=req.reset, sampling=sampling, max_tokens=req.max_tokens,
                                      stop=tuple(req.stop), stop_token_ids=stop_ids)
    return GenerateReply(text=r.text(), token_ids=list(r.out), finish_reason=r.finish_reason or "length",
                         stop=r.stop_hit, prompt_tokens=len(ids), completion_tokens=len(r.out),
                         context_tokens=drv.length(p.pid) if p.has_seq else 0)
