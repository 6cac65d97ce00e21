"""Process I/O syscalls: ``write`` (a process's stdout) and ``events`` (watch one).

``events`` is a long poll: the first call subscribes the caller to the target
process and every call returns what has happened since (tokens as they are
generated, output, state changes, exit), waiting up to ``timeout`` for the
first event.  Everything queued comes back in one reply (up to ``max``), so a
watcher makes a call per batch of tokens, not per token.  It is how the shell
shows a foreground job's tokens, and any app with the same rights could do the
same.  Apps, models: what is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import anyio
from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.kernel.events import Event, Subscription
from lmos.syscalls.access import check_observe
from lmos.syscalls.confirm import taint
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Empty, Pid, Req, Resp, Seconds

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx, Syscalls


class Write(Req):
    text: Annotated[str, Meta(max_length=1 << 20)]


class Events(Req):
    pid: Pid
    timeout: Seconds | None = None  # None: wait until something happens
    max: Annotated[int, Meta(ge=1, le=100_000)] = 4096


class EventInfo(Resp):
    kind: str
    pid: int
    ts: float
    token_id: int | None = None
    text: str = ""
    state: str = ""
    exit_status: int | None = None
    data: object = None


class EventsReply(Resp):
    events: list[EventInfo]
    ended: bool  # the target exited; the subscription is gone


class AppList(Req):
    pass


class AppInfo(Resp):
    name: str
    description: str
    caps: list[str]
    model: str | None
    version: str = ""
    hash: str = ""  # sha256 of the app's files (apps from a folder)
    origin: str = "builtin"  # builtin | installed


class AppListReply(Resp):
    apps: list[AppInfo]


class ModelList(Req):
    pass


class ModelInfo(Resp):
    name: str
    driver: str
    max_seqs: int
    max_tokens: int
    num_blocks: int
    free_blocks: int
    block_size: int
    max_model_len: int
    runnable: int
    steps: int
    tokens: int
    tuning: str = ""  # the limits the driver chose at start, and whether auto or configured


class ModelListReply(Resp):
    models: list[ModelInfo]


def subscribe(sys: Syscalls, watcher: int, target: int) -> None:
    """Subscribe ``watcher`` to ``target``'s events (idempotent)."""
    key = (watcher, target)
    if key not in sys.subs:
        # a uid's subscribers share one byte budget; init's (the host's) do not
        w = sys.kernel.procs.get(watcher)
        owner = w.uid if w is not None and w is not sys.kernel.init else None
        sys.subs[key] = sys.kernel.events.subscribe(target, owner)
        sys.kernel.watch(target)


def _info(ev: Event) -> EventInfo:
    return EventInfo(kind=ev.kind, pid=ev.pid, ts=ev.ts, token_id=ev.token_id, text=ev.text, state=ev.state,
                     exit_status=ev.exit_status, data=ev.data)


@syscall(9, "write", Write, Empty)
async def sys_write(ctx: Ctx, req: Write) -> Empty:
    """Write text to the process's output (seen by whoever watches it with ``events``)."""
    ctx.kernel.events.publish(ctx.proc.pid, kind="output", text=req.text)
    return Empty()


@syscall(10, "events", Events, EventsReply, blocking=True)
async def sys_events(ctx: Ctx, req: Events) -> EventsReply:
    """Events of process ``pid`` since the last call (tokens, output, state, exit); long-polls.

    The caller may watch itself and its descendants; with ``proc``, any process of its uid.
    """
    target = ctx.kernel.procs.get(req.pid)
    key = (ctx.proc.pid, req.pid)
    sub: Subscription | None = ctx.sys.subs.get(key)
    if sub is None:
        if target is None:
            raise SyscallError(Errno.ESRCH, f"no such process {req.pid}")
        check_observe(ctx.kernel, ctx.proc, target, "events")
        if target.ended:
            if target.tainted or target.uid != ctx.proc.uid:
                taint(ctx.proc)
            return EventsReply(events=[EventInfo(kind="exit", pid=req.pid, ts=0.0, state=target.state.value,
                                                 exit_status=target.exit_status, data=target.result)],
                               ended=True)
        subscribe(ctx.sys, ctx.proc.pid, req.pid)
        sub = ctx.sys.subs[key]
    # One batch: everything queued since the last call, waiting (blocked) only for the first.
    batch = sub.drain(req.max)
    if not batch and not sub.ended:
        async with ctx.kernel.blocking(ctx.proc, "events"):
            with anyio.move_on_after(req.timeout if req.timeout is not None else float("inf")):
                await sub.wait()
        batch = sub.drain(req.max)
    out = [_info(ev) for ev in batch]
    ended = sub.ended and not sub.queue
    if any(e.kind in ("exit", "overflow") for e in out):
        ended = True
    if out and target is not None and (target.tainted or target.uid != ctx.proc.uid):
        taint(ctx.proc)  # the output of a tainted process (or another user's) is untrusted data
    if ended:
        ctx.sys.subs.pop(key, None)
        sub.close()
    return EventsReply(events=out, ended=ended)


@syscall(11, "app_list", AppList, AppListReply)
async def sys_app_list(ctx: Ctx, req: AppList) -> AppListReply:
    """Installed apps with their descriptions, granted capabilities, version, hash and origin."""
    apps = [AppInfo(name=a.name, description=a.description, caps=sorted(a.caps), model=a.model,
                    version=str(a.extra.get("version", "")), hash=str(a.extra.get("hash", "")),
                    origin=str(a.extra.get("origin", "builtin")))
            for a in sorted(ctx.sys.programs.apps.values(), key=lambda a: a.name)
            if not a.name.startswith("py:")]
    return AppListReply(apps=apps)


def tuning_of(driver: object) -> str:
    """A driver's start-time sizing (lmos.drivers.autotune), one line; "" for drivers without one."""
    tuning = getattr(driver, "tuning", None)
    return str(tuning.summary()) if tuning is not None else ""


@syscall(12, "model_list", ModelList, ModelListReply)
async def sys_model_list(ctx: Ctx, req: ModelList) -> ModelListReply:
    """Loaded models with their driver limits and load."""
    out = []
    for name, s in ctx.kernel.schedulers.items():
        lim = s.driver.limits
        out.append(ModelInfo(name=name, driver=s.driver.name, max_seqs=lim.max_seqs,
                             max_tokens=lim.max_tokens, num_blocks=lim.num_blocks,
                             free_blocks=s.driver.kv_free(),
                             block_size=lim.block_size, max_model_len=lim.max_model_len,
                             runnable=len(s.runnable), steps=s.steps, tokens=s.tokens,
                             tuning=tuning_of(s.driver)))
    return ModelListReply(models=out)
