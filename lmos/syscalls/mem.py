"""Context memory syscalls (40-49): page in, recall, core memory, stats, settings.

The kernel pages (kernel/memory.py); this layer checks arguments and shapes
replies.  A process starts using context memory with ``llm_generate(page=True)``
or ``mem_append``; processes that never do keep the plain append-only context.
Once paged, the page table owns the context: a later plain ``llm_generate``
appends to the driver sequence only, and the next paged turn syncs it away.
Everything here needs the ``mem`` capability, except reading another process's
``mem_stat``, which needs the same uid (or root), as ``trace`` does.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta

from lmos.drivers.base import SamplingParams, encode_segments
from lmos.errors import Errno, SyscallError
from lmos.kernel.memconfig import Geometry, MemSettings
from lmos.kernel.memory import ContextMemory
from lmos.kernel.pages import split_tokens
from lmos.kernel.request import GenRequest
from lmos.kernel.tokenize import check_length, off_loop
from lmos.syscalls.access import check_observe
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Empty, Pid, Req, Resp

if TYPE_CHECKING:
    from lmos.kernel.process import Process
    from lmos.syscalls.table import Ctx

PageId = Annotated[int, Meta(ge=1, le=2**62)]
FieldName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class MemStat(Req):
    pid: Pid | None = None  # None = the caller
    pages: bool = False  # include the page table


class PageInfo(Resp):
    id: int
    role: str
    title: str
    tokens: int
    state: str
    pinned: bool
    last_use: int


class MemStatReply(Resp):
    pid: int
    paged: bool  # has the process used context memory?
    window: int = 0
    reserve: int = 0
    high_watermark: int = 0
    low_watermark: int = 0
    window_tokens: int = 0
    resident_pages: int = 0
    resident_tokens: int = 0
    swapped_pages: int = 0
    swapped_tokens: int = 0
    pinned_pages: int = 0
    stub_tokens: int = 0
    core_tokens: int = 0
    turns: int = 0
    evictions: int = 0
    pages_evicted: int = 0
    page_ins: int = 0
    recalls: int = 0
    prefill_tokens: int = 0
    reprefill_tokens: int = 0
    kv_location: str = "none"
    kv_blocks: int = 0
    kv_swap_bytes: int = 0  # bytes of this process's KV held on the host (swapped KV)
    kv_recompute_tokens: int = 0
    held_tokens: int = 0  # with pages: token ids context memory holds in RAM (resident pages, stubs, core)
    held_bytes: int = 0  # with pages: bytes it holds in RAM, counted deeply (swapped pages: store only)
    page_table: list[PageInfo] = msgspec.field(default_factory=list)


class MemPageIn(Req):
    page_ids: Annotated[list[PageId], Meta(min_length=1, max_length=1024)]


class PageInReply(Resp):
    paged_in: list[int]
    window_tokens: int


class MemRecall(Req):
    query: Annotated[str, Meta(min_length=1, max_length=1 << 16)]
    k: Annotated[int, Meta(ge=1, le=100)] = 3
    page_in: bool = True  # False: rank and return the text without touching the window


class RecallHit(Resp):
    id: int
    score: float
    role: str
    title: str
    text: str


class RecallReply(Resp):
    hits: list[RecallHit]
    paged_in: list[int]


class MemRead(Req):
    name: FieldName | None = None  # None = every field


class MemReadReply(Resp):
    fields: dict[str, str]


class MemWrite(Req):
    name: FieldName
    value: Annotated[str, Meta(max_length=1 << 14)] | None  # None deletes the field


class MemCtl(Req):
    window: Annotated[int, Meta(ge=0, le=1 << 24)] | None = None
    reserve: Annotated[int, Meta(ge=0, le=1 << 24)] | None = None
    low_watermark: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    page_tokens: Annotated[int, Meta(ge=0, le=1 << 20)] | None = None
    policy: Annotated[str, Meta(min_length=1, max_length=32)] | None = None
    auto_recall: bool | None = None
    recall_k: Annotated[int, Meta(ge=1, le=100)] | None = None
    recall_min_score: Annotated[float, Meta(ge=0.0, le=1e6)] | None = None
    recall_margin: Annotated[float, Meta(ge=0.0, le=1e6)] | None = None
    prefix_reuse: bool | None = None


class MemCtlReply(Resp):
    window: int
    reserve: int
    low_watermark: float
    page_tokens: int
    policy: str
    auto_recall: bool
    recall_k: int
    recall_min_score: float
    recall_margin: float
    prefix_reuse: bool


class MemAppend(Req):
    text: Annotated[str, Meta(min_length=1, max_length=1 << 24)]
    role: Annotated[str, Meta(min_length=1, max_length=32)] = "user"
    pin: bool = False
    data: bool = False  # the text came from elsewhere (a tool result, a file): no special tokens in it


class MemAppendReply(Resp):
    pages: list[int]
    window_tokens: int


def memory(ctx: Ctx, p: Process | None = None) -> ContextMemory:
    p = p or ctx.proc
    return ctx.kernel.memory.get(p.pid, ctx.kernel.scheduler(p.model).driver, p.uid)


async def paged_generate(ctx: Ctx, ids: list[int], role: str, pin: bool, sampling: SamplingParams,
                         max_tokens: int, stop: tuple[str, ...], stop_ids: frozenset[int]) -> GenRequest:
    """llm_generate(page=True): prompt -> pages, sync the driver from the window, reply -> pages."""
    p = ctx.proc
    m = memory(ctx)
    window = await m.begin_turn(ids, role, pin)
    room = m.limit - len(window)
    if room <= 0:
        raise SyscallError(Errno.E2BIG, f"context window of {m.limit} tokens is full")
    if not p.has_seq:
        m.stats.prefill_tokens += len(window)
    r = await ctx.kernel.generate(p, ids, reset=False, sampling=sampling, max_tokens=min(max_tokens, room),
                                  stop=stop, stop_token_ids=stop_ids, context=window)
    await m.end_turn(list(r.out))
    return r


@syscall(40, "mem_stat", MemStat, MemStatReply)
async def sys_mem_stat(ctx: Ctx, req: MemStat) -> MemStatReply:
    """Context memory and KV figures of a process (the shell's ``mem`` and ``top``)."""
    p = ctx.kernel.get(ctx.proc.pid if req.pid is None else req.pid)
    check_observe(ctx.kernel, ctx.proc, p, "mem_stat")  # as ps: own tree, or own uid with proc
    out = MemStatReply(pid=p.pid, paged=False)
    sched = ctx.kernel.schedulers.get(p.model)
    if sched is not None and p.has_seq:
        c = sched.driver.cost(p.pid)
        out.kv_location, out.kv_blocks = c.location.value, c.blocks
        out.kv_swap_bytes = c.swap_bytes if c.location.value == "host" else 0
        out.kv_recompute_tokens = c.recompute_tokens
    m = ctx.kernel.memory.peek(p.pid)
    if m is None:
        return out
    out.paged = True
    out.window, out.reserve, out.high_watermark, out.low_watermark = m.limit, m.reserve, m.high, m.low
    for k, v in m.summary().items():
        setattr(out, k, v)
    st = m.stats
    out.turns, out.evictions, out.pages_evicted = st.turns, st.evictions, st.pages_evicted
    out.page_ins, out.recalls = st.page_ins, st.recalls
    out.prefill_tokens, out.reprefill_tokens = st.prefill_tokens, st.reprefill_tokens
    if req.pages:  # (counting RAM walks every object: not for top's once-a-second refresh)
        out.held_tokens, out.held_bytes = m.held()
        out.page_table = [PageInfo(id=i, role=role, title=title, tokens=n, state=state, pinned=pinned,
                                   last_use=last_use)
                          for i, role, title, n, state, pinned, last_use in await m.page_table()]
    return out


@syscall(41, "mem_page_in", MemPageIn, PageInReply, cap="mem")
async def sys_mem_page_in(ctx: Ctx, req: MemPageIn) -> PageInReply:
    """Bring swapped pages back into the window, at its end (the cached prefix stays valid)."""
    m = memory(ctx)
    done = await m.page_in(req.page_ids)
    return PageInReply(paged_in=done, window_tokens=m.window_len())


@syscall(42, "mem_recall", MemRecall, RecallReply, cap="mem")
async def sys_mem_recall(ctx: Ctx, req: MemRecall) -> RecallReply:
    """Rank the swapped pages against ``query`` (BM25); page the best ``k`` in unless told not to."""
    m = memory(ctx)
    hits = await m.rank(req.query, req.k)
    done = await m.page_in([pg.id for pg, _ in hits]) if req.page_in and hits else []
    return RecallReply(hits=[RecallHit(id=pg.id, score=round(s, 4), role=pg.role, title=pg.title,
                                       text=pg.text) for pg, s in hits], paged_in=done)


@syscall(43, "mem_read", MemRead, MemReadReply, cap="mem")
async def sys_mem_read(ctx: Ctx, req: MemRead) -> MemReadReply:
    """Read the core memory (named fields, pinned in the window): one field or all."""
    core = memory(ctx).core
    if req.name is None:
        return MemReadReply(fields=dict(sorted(core.items())))
    if req.name not in core:
        raise SyscallError(Errno.ENOENT, f"no core memory field {req.name!r}")
    return MemReadReply(fields={req.name: core[req.name]})


@syscall(44, "mem_write", MemWrite, Empty, cap="mem")
async def sys_mem_write(ctx: Ctx, req: MemWrite) -> Empty:
    """Set (or, with value None, delete) a core memory field; durable when it returns."""
    await memory(ctx).write_core(req.name, req.value)
    return Empty()


@syscall(45, "mem_ctl", MemCtl, MemCtlReply, cap="mem")
async def sys_mem_ctl(ctx: Ctx, req: MemCtl) -> MemCtlReply:
    """Read or change the caller's paging settings (window, watermarks, policy, auto recall)."""
    m = memory(ctx)
    changes = {f: getattr(req, f) for f in req.__struct_fields__}
    m.configure(**changes)
    return MemCtlReply(**m.settings.as_dict())


@syscall(46, "mem_append", MemAppend, MemAppendReply, cap="mem")
async def sys_mem_append(ctx: Ctx, req: MemAppend) -> MemAppendReply:
    """Add text to the paged context without generating (a system prompt, a tool result).

    With ``data`` the text is tokenized as plain text: a special-token string in
    a tool result or a file stays characters and cannot forge a turn.
    """
    m = memory(ctx)
    check_length(m.tok, len(req.text), m.limit, "text")  # new pages must fit the window: refuse early
    ids = await off_loop(len(req.text), lambda: encode_segments(m.tok, [(req.text, True)]) if req.data
                         else m.tok.encode(req.text))
    pages = await m.append(ids, req.role, req.pin)
    return MemAppendReply(pages=[pg.id for pg in pages], window_tokens=m.window_len())


# -- pinned pages given at spawn (syscalls/proc.py) ------------------------------------------------
SPAWN_PIN_ROLE = "system"


async def spawn_pins(ctx: Ctx, model: str | None, texts: list[str]) -> list[list[int]]:
    """The token ids of the pinned pages a spawn gives its child, checked against the child's model:
    ENOSPC at once, before any process exists, when they cannot fit its window with the
    generation reserve left free (the same rule as a pinned page added later, which they would
    otherwise fail at the first turn, after the program has started and maybe spent tokens)."""
    kernel = ctx.kernel
    name = kernel.resolve_model(model)
    drv = kernel.scheduler(name).driver
    tok = drv.tokenizer
    if tok is None:
        raise SyscallError(Errno.EINVAL, f"pinned pages need a model with a tokenizer ({name} has none)")
    g = Geometry()
    g.settings, g.model_len = MemSettings(), drv.limits.max_model_len
    out: list[list[int]] = []
    for text in texts:
        check_length(tok, len(text), g.limit, "pinned page")
        out.append(await off_loop(len(text), partial(tok.encode, text)))
    need = sum(len(ids) for ids in out)
    if need > g.high:
        raise SyscallError(Errno.ENOSPC, f"pinned pages of {need} tokens do not fit model {name}: its "
                           f"window is {g.limit} tokens, {g.reserve} of them kept for generating")
    # cut into pages here, as ContextMemory would, so that their number is known at spawn
    return [page for ids in out for page in split_tokens(tok, ids, g.page_tokens)]


async def add_spawn_pins(ctx: Ctx, child: Process, pages: list[list[int]]) -> None:
    """Make ``pages`` (from :func:`spawn_pins`) the first pages of ``child``'s context, durably,
    before it runs.

    Called right after ``KernelCore.spawn`` returned, with no await in between: the lock is
    taken before the child's first step can run, so its first paged syscall waits for them.
    Their number went into the process's record at spawn (``limits.spawn_pages``): recovery
    keeps these pages although no journaled step of the child made them."""
    kernel = ctx.kernel
    m = kernel.memory.get(child.pid, kernel.scheduler(child.model).driver, child.uid)
    m.lock.acquire_nowait()
    try:
        for ids in pages:  # (each at most a page long: added as one page)
            await m.append_held(ids, SPAWN_PIN_ROLE, True)
    finally:
        m.lock.release()
