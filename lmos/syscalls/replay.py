"""``proc_replay`` (``lmos replay PID``): a process explained step by step from its journal.

A process's syscall journal (:mod:`lmos.kernel.sysjournal`) holds every
syscall it completed, in order.  Replaying it shows each step (the syscall,
its arguments, its result or errno, how long it took, the capability checked
and the decision) and, for each generation, the context the model saw,
rebuilt token by token from the journal (:mod:`lmos.syscalls.journaled`).

It also *verifies* the journal, side-effect free:

- **re-run**: when the process's app is still installed, its program runs
  again with a client (:class:`ReplaySys`) that answers every syscall from the
  journal and never reaches the kernel.  Each request the program makes must
  equal the recorded one byte for byte, and its final result the recorded
  result; the first step where it does not is named.  This is the check that
  recovery by replay relies on: the program is deterministic given its syscall
  results.
- **contexts**: each generation's rebuilt context must hash to what the
  model saw when it ran.
- ``live``: each generation is run again on the current model, from the same
  context tokens with the same sampling settings, and the first token where the
  output differs is shown: "would the new model have done the same?".  These
  generations run as short children of the caller (only ``llm``), so they are
  scheduled, counted and audited like any other.

Who may replay: the process's owner, or the operator (``is_operator``), as for
``audit_query``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec
from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.kernel.process import Process
from lmos.kernel.sysjournal import INFLIGHT, Entry, ProcRecord, read_entries, read_process
from lmos.syscalls.checkpoint import restore_reply, starts_at_checkpoint
from lmos.syscalls.client import Sys
from lmos.syscalls.journaled import context_hash, unpack_ids
from lmos.syscalls.llm import merge_sampling
from lmos.syscalls.registry import TABLE, SyscallDef, syscall
from lmos.syscalls.types import LlmGenerate, Pid, Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx, Syscalls

RERUN_SECONDS = 30.0  # a program that neither ends nor calls within this long is reported, not awaited


class ProcReplay(Req):
    pid: Pid
    live: bool = False  # generate again on the current model and compare
    rerun: bool = True  # re-run the program against the journal (when its app is installed)
    contexts: bool = True  # include each generation's context tokens and text
    limit: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000  # steps shown (all are verified)


class ReplayStep(Resp):
    step: int
    ts: float
    name: str
    args: Any
    ok: bool
    result: Any = None
    errno: int = 0
    errname: str = ""
    error: str = ""
    cap: str = ""
    decision: str = ""
    duration_us: int = 0
    rerun: str = ""  # match | diverged | not reached | "" (no re-run)
    # llm_generate: the context the model saw (rebuilt), the prompt within it, the output
    context: list[int] | None = None
    context_text: str | None = None
    prompt: list[int] | None = None
    output: list[int] | None = None
    context_check: str = ""  # verified | differs | unknown (tokens before the prompt not in the journal)
    live_output: list[int] | None = None
    live_text: str | None = None
    live_differs_at: int | None = None  # first token index where the current model's output differs
    live_error: str = ""


class ReplayReply(Resp):
    pid: int
    app: str
    uid: int
    argv: list[str]
    state: str
    exit_status: int | None
    steps: list[ReplayStep]
    total_steps: int
    rerun: str  # "match", "diverged", "skipped", or why the program could not be re-run
    verified: bool  # the re-run and every context reproduced the journal
    diverged_at: int | None  # the first step that did not reproduce (None: none)
    reason: str  # what differed there
    live: bool
    live_differs_at: int | None  # the first generation step whose live output differs


class _Stop(Exception):
    """Ends a re-run: the journal was used up, or the program diverged from it."""

    def __init__(self, step: int, reason: str, diverged: bool) -> None:
        super().__init__(reason)
        self.step, self.reason, self.diverged = step, reason, diverged


class ReplaySys(Sys):
    """A program's client whose syscalls are answered from a journal, never by the kernel."""

    def __init__(self, table: Syscalls, pid: int, entries: list[Entry]) -> None:
        super().__init__(table, pid)
        self.entries = entries
        self.next = 0
        self.exited: tuple[int, Any] | None = None

    async def call(self, call: str | int, /, **args: Any) -> Any:
        k = self.next
        d = self._table.lookup(call)
        if k == 0 and starts_at_checkpoint(self.entries):  # compacted: the program restores first
            e0 = self.entries[0]
            if d.name != "restore":
                raise _Stop(0, f"step {e0.step}: the journal starts at a checkpoint, the program made "
                               f"{d.name} before restore", True)
            self.next = 1
            return restore_reply(e0)
        try:
            req = self._table.decode(d, args)
            data = msgspec.json.encode(req)
        except SyscallError as exc:
            data, req = msgspec.json.encode(args), None
            e = self.entries[k] if k < len(self.entries) else None
            if e is not None and e.errno == exc.errno and e.name == d.name:
                self.next += 1
                raise
        if k >= len(self.entries):
            n = self.step_of(k)
            raise _Stop(n, f"step {n}: the program made {d.name} after the last step of the journal", False)
        e = self.entries[k]
        if e.name != d.name or _canonical(d, e.request) != data:
            raise _Stop(e.step, f"step {e.step}: the program made {d.name} {_short(data)}, the journal holds "
                           f"{e.name} {_short(e.request)}", True)
        self.next += 1
        if d.name == "exit" and e.errno == 0:
            assert isinstance(req, msgspec.Struct)
            self.exited = (int(getattr(req, "status", 0)), getattr(req, "result", None))
            raise _Stop(self.step_of(k + 1), "exit", False)
        if e.errno:
            raise SyscallError(_errno(e.errno), e.error)
        try:
            return msgspec.json.decode(e.result or b"null", type=d.resp)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            why = f"step {e.step}: corrupted journal row: {d.name} result: {exc}"
            raise _Stop(e.step, why, True) from None

    def step_of(self, k: int) -> int:
        """The journal step of entry ``k`` (a compacted journal does not start at 0)."""
        if k < len(self.entries):
            return self.entries[k].step
        return self.entries[-1].step + 1 if self.entries else 0

    async def report_violation(self, detail: str) -> None:
        await self.call("audit", event="sandbox_violation", detail=detail)


def _canonical(d: SyscallDef, request: bytes) -> bytes:
    """A recorded request as this lmos encodes it (fields added since then take their defaults)."""
    try:
        return msgspec.json.encode(msgspec.json.decode(request, type=d.req))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return request


def _errno(n: int) -> Errno:
    try:
        return Errno(n)
    except ValueError:
        return Errno.EIO


def _short(data: bytes, n: int = 160) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= n else text[:n] + "..."


async def rerun(sys: Syscalls, rec: ProcRecord, entries: list[Entry]) -> tuple[str, int | None, str]:
    """Run the process's program again against its journal: (verdict, first bad step, reason)."""
    spec = sys.programs.apps.get(rec.app)
    if spec is None:
        return f"skipped: app {rec.app!r} is not installed (a one-off program cannot be run again)", None, ""
    client = ReplaySys(sys, rec.pid, entries)
    result: Any = None
    ended = False
    try:
        with anyio.fail_after(RERUN_SECONDS):
            result = await spec.main(client, list(rec.argv))
        ended = True
    except _Stop as stop:
        if stop.diverged:
            return "diverged", stop.step, stop.reason
        if client.exited is not None:
            ended, result = True, client.exited[1]
        elif rec.state in ("exited",):
            return "diverged", stop.step, stop.reason
        else:  # killed or still running: the journal ends where the process stopped
            return "match", None, ""
    except TimeoutError:
        at = client.step_of(client.next)
        return "diverged", at, f"step {at}: the program neither ended nor made a " \
                                        f"syscall within {RERUN_SECONDS:g}s of replay"
    except SyscallError as exc:  # the program ended on an error, as it may have the first time
        ended, result = True, None
        if rec.exit_status == 0:
            at = client.step_of(client.next)
            return "diverged", at, f"the re-run ended on {exc}, the process exited with status 0"
    except Exception as exc:
        return "diverged", client.step_of(client.next), f"the re-run raised {type(exc).__name__}: {exc}"
    if client.next < len(entries):
        e = entries[client.next]
        if rec.state == "exited" or ended:
            return "diverged", e.step, f"step {e.step}: the program ended, the journal goes on " \
                                            f"with {e.name}"
    if ended and rec.state == "exited" and client.exited is None and rec.exit_status == 0:
        try:
            same = json.loads(json.dumps(result)) == rec.result
        except (TypeError, ValueError):
            same = repr(result) == rec.result
        if not same:
            got = _short(json.dumps(result, default=repr).encode())
            was = _short(json.dumps(rec.result).encode())
            return "diverged", client.step_of(len(entries)), f"the re-run returned {got}, the process " \
                                                             f"returned {was}"
    return "match", None, ""


def _steps(entries: list[Entry], contexts: bool,
           decode: Any) -> tuple[list[ReplayStep], list[list[int] | None]]:
    """The steps, with each generation's context rebuilt; the contexts (None where unknown)."""
    out: list[ReplayStep] = []
    seen_ctx: list[list[int] | None] = []
    prev: list[int] | None = []
    for e in entries:
        d: SyscallDef | None = TABLE.get(e.name)
        args = _loads(e.request)
        step = ReplayStep(step=e.step, ts=e.ts, name=e.name, args=args, ok=e.errno == 0,
                          result=_loads(e.result) if e.result is not None else None, errno=e.errno,
                          errname="" if e.errno in (0, INFLIGHT) else _errno(e.errno).name,
                          error=e.error if e.errno != INFLIGHT else
                          "in flight: the process or the kernel ended while it ran", cap=e.cap or "",
                          decision=e.decision, duration_us=e.duration_us)
        ctx: list[int] | None = None
        if e.name == "checkpoint" and e.prompt is not None and e.errno == 0:
            prev = unpack_ids(e.prompt)  # the context at the checkpoint: where a compacted journal starts
        if d is not None and d.name == "llm_generate" and e.gen:
            try:
                info = json.loads(e.gen)
                outp = [int(t) for t in step.result.get("token_ids", [])] if isinstance(step.result, dict) \
                    else []
                prompt = unpack_ids(e.prompt)
            except (ValueError, TypeError, AttributeError):
                step.context_check, prev = "corrupted", None
                seen_ctx.append(None)
                out.append(step)
                continue
            step.prompt, step.output = prompt, outp
            base = info.get("base")
            if base is None:
                step.context_check = "unknown"
                prev = None
            else:
                if info.get("reset"):
                    prev = []
                if prev is not None and len(prev) >= base:
                    ctx = prev[:base] + prompt
                    ok = context_hash(ctx) == info.get("context_hash")
                    step.context_check = "verified" if ok else "differs"
                    if not ok:
                        ctx = None
                else:
                    step.context_check = "unknown" if base else "verified"
                    ctx = prompt if not base else None
                prev = ctx + outp if ctx is not None else None
            if contexts and ctx is not None:
                step.context = ctx
                step.context_text = decode(ctx)
        seen_ctx.append(ctx)
        out.append(step)
    return out, seen_ctx


def _loads(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


async def live_generate(ctx: Ctx, model: str, req: LlmGenerate, context: list[int]) -> list[int]:
    """The current model's output from ``context`` with the request's settings, as a child of the caller."""
    kernel = ctx.kernel
    name = kernel.resolve_model(model or None)
    drv = kernel.scheduler(name).driver
    sampling = merge_sampling(drv.default_sampling(), req)
    stop_ids = frozenset(drv.eos_token_ids if req.stop_token_ids is None else req.stop_token_ids)
    out: list[int] = []

    async def program(p: Process) -> None:
        r = await kernel.generate(p, list(context), reset=True, sampling=sampling, max_tokens=req.max_tokens,
                                  stop=tuple(req.stop), stop_token_ids=stop_ids)
        out.extend(r.out)

    me = ctx.proc
    child = kernel.spawn(program, parent=me, app="replay.live", argv=[], model=name, uid=me.uid,
                         caps=frozenset({"llm"}), token_quota=req.max_tokens)
    done = await kernel.wait(me, child.pid)
    if done.error:
        raise SyscallError(_errno(done.errno or int(Errno.EIO)), done.error)
    return out


@syscall(100, "proc_replay", ProcReplay, ReplayReply, cap="proc", blocking=True)
async def sys_proc_replay(ctx: Ctx, req: ProcReplay) -> ReplayReply:
    """A process step by step from its syscall journal, verified by re-running its program
    against the journal (``live``: generations again on the current model); the owner or the operator."""
    me, kernel = ctx.proc, ctx.kernel
    journal = kernel.journal
    rec = await anyio.to_thread.run_sync(read_process, journal, req.pid)
    if rec is None:
        raise SyscallError(Errno.ESRCH, f"no such process {req.pid}")
    if rec.uid != me.uid and not kernel.is_operator(me.uid, me.pid):
        raise SyscallError(Errno.EPERM, f"process {req.pid} belongs to uid {rec.uid}: only its owner or "
                                        "the operator may replay it")
    entries = await anyio.to_thread.run_sync(read_entries, journal, req.pid)
    if not entries:
        why = "journaling is off" if kernel.sysjournal is None else \
            "it made no syscall, or its journal expired"
        raise SyscallError(Errno.ENOENT, f"process {req.pid} has no journal ({why})")
    tok = None
    if kernel.schedulers:
        sched = kernel.schedulers.get(rec.model) or next(iter(kernel.schedulers.values()))
        tok = sched.driver.tokenizer

    def decode(ids: list[int]) -> str | None:
        return tok.decode(ids) if tok is not None else None

    steps, contexts = _steps(entries, True, decode)
    verdict, bad, reason = ("skipped", None, "")
    if req.rerun:
        verdict, bad, reason = await rerun(ctx.sys, rec, entries)
        if verdict in ("match", "diverged"):
            for s in steps:
                s.rerun = "match" if bad is None or s.step < bad else (
                    "diverged" if s.step == bad else "not reached")
    differs = [s for s in steps if s.context_check in ("differs", "corrupted")]
    if differs and (bad is None or differs[0].step < bad):
        first = differs[0]
        bad, reason = first.step, f"step {first.step}: " + (
            "the rebuilt context is not the one the model saw" if first.context_check == "differs"
            else "corrupted journal row (its generation record does not decode)")
    live_bad: int | None = None
    if req.live:
        for s, context, e in zip(steps, contexts, entries, strict=True):
            if s.name != "llm_generate" or s.output is None:
                continue
            if context is None:
                s.live_error = "the context is not in the journal"
                continue
            gen_req = msgspec.json.decode(e.request, type=LlmGenerate)
            try:
                s.live_output = await live_generate(ctx, rec.model, gen_req, context)
            except SyscallError as exc:
                s.live_error = str(exc)
                continue
            s.live_text = decode(s.live_output)
            s.live_differs_at = _first_difference(s.output, s.live_output)
            if s.live_differs_at is not None and live_bad is None:
                live_bad = s.step
    if not req.contexts:
        for s in steps:
            s.context = s.context_text = None
    return ReplayReply(pid=rec.pid, app=rec.app, uid=rec.uid, argv=rec.argv, state=rec.state,
                       exit_status=rec.exit_status, steps=steps[:req.limit], total_steps=len(steps),
                       rerun=verdict, verified=bad is None and verdict == "match",
                       diverged_at=bad, reason=reason, live=req.live, live_differs_at=live_bad)


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
