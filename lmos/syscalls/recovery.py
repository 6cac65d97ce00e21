"""Recovery by replay: the processes a crashed kernel left unfinished go on after a restart.

On boot with a model and the syscall journal on (:mod:`lmos.kernel.sysjournal`),
:func:`recover` finds each process the previous kernel left unfinished (its
row in ``processes`` never got an end) and starts its program again from the
start, under its own pid, uid, capabilities, app and argv, as a child of its
recovered parent (else of init).  The dispatcher then answers each syscall the
program makes from the journal (:func:`answer`), without running it, until the
journal is used up; from there the process goes on live.

- **Generation.**  Recorded replies are returned, never regenerated.  When the
  process goes live its context is given back to the driver as tokens (the
  context rebuilt from the journal, :mod:`lmos.syscalls.journaled`), so the KV
  cache is rebuilt lazily, by the prefill of its next generation.
- **Determinism.**  A program that makes a different syscall than the journal
  holds at that step is ended with ``ENOTRECOVERABLE``, naming the step.
- **Exactly once.**  An effect (``kv_set``, ``fs_write``, ``tool_call`` ...) is
  journaled as *in flight* before it runs (:func:`lmos.syscalls.journaled.intent`):
  inside the effect's own transaction for effects on the state database, and
  durably before it starts for effects outside it (tools).  An effect that was
  in flight at the crash is answered ``EINPROGRESS`` (whether it took effect is
  unknown), never run again silently; the program decides what to do.
- **Lost.**  A process whose app is no longer installed, whose model is not
  loaded, or whose journal has a row that does not decode is marked ``lost``
  with the reason; the others recover.

Besides its journal, a recovered process gets back its limits and the tokens it
used (charged again as its generations replay), its paged context when it goes
live (:mod:`lmos.kernel.recovery_memory`), the IPC channels it held with their
unreceived messages (:mod:`lmos.syscalls.recovery_ipc`), the zombies of children
it had not waited for, and a "recovered at step N" first event that later
subscribers see too.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from lmos.errors import Errno, SyscallError
from lmos.kernel import recovery_memory
from lmos.kernel.journal import Journal
from lmos.kernel.kernel import ProcessExit
from lmos.kernel.process import Process, State
from lmos.kernel.sysjournal import INFLIGHT, Entry, read_entries, read_process
from lmos.syscalls import recovery_ipc
from lmos.syscalls.checkpoint import restore_reply, starts_at_checkpoint
from lmos.syscalls.journaled import append as journal_append
from lmos.syscalls.journaled import is_session, unpack_ids
from lmos.syscalls.registry import TABLE, SyscallDef
from lmos.syscalls.replay import _canonical, _short
from lmos.syscalls.types import Err, Ok, Result

if TYPE_CHECKING:
    from lmos.syscalls.table import Syscalls

log = logging.getLogger("lmos.recovery")
UNFINISHED = ("new", "ready", "running", "blocked", "stopped")


class Cursor:
    """Where a recovered process is in its journal, and the context its generations built."""

    __slots__ = ("context", "entries", "next", "t0")

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.next = 0
        self.context: list[int] | None = []  # None: not rebuildable (paged, n > 1)
        if entries and starts_at_checkpoint(entries):  # compacted: the context is the checkpoint's
            self.context = unpack_ids(entries[0].prompt)
        self.t0 = time.monotonic()

    def track(self, e: Entry, reply: Any) -> None:
        """Follow the context through one replayed ``llm_generate``."""
        if not e.gen:
            return
        info = json.loads(e.gen)
        base = info.get("base")
        if base is None or info.get("page"):
            self.context = None
            return
        prev = [] if info.get("reset") else self.context
        if prev is None or len(prev) < base:
            self.context = None
            return
        self.context = prev[:base] + unpack_ids(e.prompt) + list(getattr(reply, "token_ids", []))


def _decode(d: SyscallDef, e: Entry) -> Result:
    if e.errno:
        try:
            errno = Errno(e.errno)
        except ValueError:
            errno = Errno.EIO
        return Err(int(errno), errno.name, e.error)
    return Ok(msgspec.json.decode(e.result or b"null", type=d.resp))


def check(entries: list[Entry]) -> str | None:
    """Why this journal cannot be replayed (a row that does not decode), or None."""
    for e in entries:
        d = TABLE.get(e.name)
        if d is None:
            return f"step {e.step}: unknown syscall {e.name!r} in the journal"
        try:
            msgspec.json.decode(e.request, type=d.req)
            if e.errno == 0:
                _decode(d, e)
            if e.gen:
                json.loads(e.gen)
                unpack_ids(e.prompt)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            return f"step {e.step}: corrupted journal row ({e.name}: {exc})"
    return None


async def answer(sys: Syscalls, p: Process, d: SyscallDef, req: Any, data: bytes, cap: str | None,
                 t0: float) -> Result | None:
    """The journal's answer to this syscall of a recovering process, or None to run it live."""
    cur = sys.recovering[p.pid]
    k = cur.next
    if k >= len(cur.entries):
        await go_live(sys, p, cur)
        return None
    e = cur.entries[k]
    if k == 0 and starts_at_checkpoint(cur.entries):  # a compacted journal: the program restores first
        if d.name != "restore":
            await go_live(sys, p, cur, step=e.step + 1)
            raise ProcessExit(1, None, SyscallError(
                Errno.ENOTRECOVERABLE, f"step {e.step}: the journal starts at a checkpoint, and the "
                                       f"recovered program made {d.name} before restore"))
        cur.next = 1
        result0: Result = Ok(restore_reply(e))
        if cur.next >= len(cur.entries):
            await go_live(sys, p, cur)
        return result0
    if e.name != d.name or _canonical(d, e.request) != data:
        await go_live(sys, p, cur, step=e.step)
        raise ProcessExit(1, None, SyscallError(
            Errno.ENOTRECOVERABLE, f"step {e.step}: the recovered program made {d.name} {_short(data)}, the "
                                   f"journal holds {e.name} {_short(e.request)}"))
    if e.errno == INFLIGHT:  # the crash came while this effect ran: it may or may not have happened
        cur.next += 1
        if cur.next >= len(cur.entries):  # the last step: what follows is live, from the step after it
            await go_live(sys, p, cur)
        # else another call of the process completed while this one was in flight (two at once):
        # the replay goes on past it
        result: Result = Err(int(Errno.EINPROGRESS), "EINPROGRESS",
                             f"{d.name} was in flight when the kernel stopped (step {e.step}): whether it "
                             "took effect is unknown")
        sj = sys.kernel.sysjournal
        assert sj is not None
        return await journal_append(sj, sys.kernel, p, d.name, data, req, result, cap, t0, step=e.step)
    if d.name == "exit":  # the end itself runs live (and is journaled again at the same step)
        await go_live(sys, p, cur, step=e.step)
        return None
    cur.next += 1
    result = _decode(d, e)
    if isinstance(result, Ok) and d.name == "llm_generate":
        cur.track(e, result.value)
        value = result.value
        _charge(p, int(getattr(value, "completion_tokens", 0)), int(getattr(value, "prompt_tokens", 0)))
    if cur.next >= len(cur.entries):
        await go_live(sys, p, cur)
    return result


async def go_live(sys: Syscalls, p: Process, cur: Cursor, step: int | None = None) -> None:
    """The journal is used up: the next steps are journaled from ``step``, the context goes back."""
    if sys.recovering.pop(p.pid, None) is None:
        return
    kernel = sys.kernel
    going_on = step is None  # not the end of the program (a divergence, its exit)
    if step is None:  # steps go on after the last one replayed (a compacted journal starts later than 0)
        step = cur.entries[cur.next - 1].step + 1 if cur.next else (cur.entries[0].step if cur.entries else 0)
    if kernel.sysjournal is not None:
        kernel.sysjournal.set_step(p.pid, step)
    sched = kernel.schedulers.get(p.model)
    if going_on and sched is not None:  # its paged context, as the journal vouches for it
        cut, resident = page_cut(cur.entries)
        if cut is not None:  # and the pinned pages its spawn gave it, as its process record does
            cut = max(cut, int(_limits(kernel.journal, p.pid).get("spawn_pages") or 0) + 1)
        await recovery_memory.restore(kernel.memory, p.pid, sched.driver, p.uid, cut, resident)
    if cur.context and sched is not None and not p.has_seq:
        async with sched.lock:  # tokens only: the next generation's prefill rebuilds the KV
            sched.driver.add(p.pid, list(cur.context), sched.driver.default_sampling())
            p.has_seq = True
            sched.kv.track(p.pid)
    log.info("pid %d recovered: live from step %d after %.3fs of replay", p.pid, step,
             time.monotonic() - cur.t0)


async def _lost(sys: Syscalls, pid: int, uid: int, reason: str) -> dict[str, Any]:
    kernel = sys.kernel
    kernel.journal.post("UPDATE processes SET state='lost', error=?, ended=? WHERE pid=?",
                        (f"lost at recovery: {reason}", time.time(), pid))
    if not kernel.memory.keep_ended:  # nobody can use its pages again: their bytes go back
        await kernel.memory.store.delete(pid, uid)
    log.warning("pid %d is lost: %s", pid, reason)
    return {"pid": pid, "recovered": False, "reason": reason}


async def recover(sys: Syscalls) -> list[dict[str, Any]]:
    """Start every unfinished process of the previous run again; what became of each."""
    kernel = sys.kernel
    j = kernel.journal
    if kernel.sysjournal is None:
        return []
    j.flush_sync()
    marks = ",".join("?" * len(UNFINISHED))
    pids = [r[0] for r in j.query(f"SELECT pid FROM processes WHERE state IN ({marks}) AND pid > 1 "
                                  "ORDER BY pid", UNFINISHED)]
    report: list[dict[str, Any]] = []
    back: dict[int, tuple[int, list[Entry]]] = {}  # the recovered: their uid and journal
    for pid in pids:
        rec = read_process(j, pid)
        if rec is None:
            continue
        entries = read_entries(j, pid)
        spec = sys.programs.apps.get(rec.app)
        reason = check(entries)
        if is_session(rec.app, rec.argv):  # ended with its front end: not lost, just over
            j.post("UPDATE processes SET state='killed', error=?, ended=? WHERE pid=?",
                   ("the kernel stopped while this front end's session was attached", time.time(), pid))
            continue
        if spec is None:
            reason = f"app {rec.app!r} is not installed"
        elif rec.model and rec.model not in kernel.schedulers:
            reason = f"model {rec.model!r} is not loaded"
        if reason is not None or spec is None:
            report.append(await _lost(sys, pid, rec.uid, reason or "no app"))
            continue
        parent = kernel.procs.get(rec.ppid)
        if parent is None or parent.ended:
            parent = kernel.init
        main = spec.main

        async def entry(proc: Process, main: Any = main) -> Any:
            return await main(sys.client(proc.pid), proc.argv)

        lim = _limits(j, pid)
        try:
            p = kernel.spawn(entry, parent=parent, app=spec.name, argv=rec.argv, model=rec.model or None,
                             uid=rec.uid, caps=frozenset(rec.caps), priority=int(lim.get("priority") or 0),
                             weight=float(lim.get("weight") or 1.0), token_quota=lim.get("token_quota"),
                             max_children=lim.get("max_children", spec.max_children),
                             wall_seconds=lim.get("wall_seconds", spec.wall_seconds), pid=pid)
        except SyscallError as exc:
            report.append(await _lost(sys, pid, rec.uid, exc.message))
            continue
        sys.recovering[pid] = Cursor(entries)  # before its first syscall: spawn only scheduled it
        p.tainted = entries[-1].tainted if entries else parent.tainted
        if entries and starts_at_checkpoint(entries):  # the tokens used before the checkpoint
            info = json.loads(entries[0].gen or "{}")
            p.children_tokens = int(info.get("children_tokens", 0))
            _charge(p, int(info.get("generated_tokens", 0)), int(info.get("prompt_tokens", 0)))
        step = entries[-1].step + 1 if entries else 0
        # its first event, also for whoever subscribes later (a front end that reconnects)
        kernel.events.publish_sticky(pid, kind="output", text=f"recovered at step {step}",
                                     data={"recovered": step})
        j.post("INSERT INTO audit(ts, pid, uid, name, cap, decision, errno, duration_us, digest) "
               "VALUES(?,?,?,?,?,?,?,?,?)", (time.time(), pid, rec.uid, "recovered",
                                             f"recovered at step {step}", "app", 0, 0, ""))
        report.append({"pid": pid, "recovered": True, "step": step})
        back[pid] = (rec.uid, entries)
        _zombies(sys, p, entries)
    recovery_ipc.restore(sys, back)  # before any of them runs: spawn only scheduled them
    return report


def _charge(p: Process, generated: int, prompt: int) -> None:
    """Tokens ``p`` used before the crash count again: against its quota and its ancestors'."""
    p.stats.generated_tokens += generated
    p.stats.prompt_tokens += prompt
    for q in p.quota_chain():
        if q is not p:
            q.children_tokens += generated


def _limits(j: Journal, pid: int) -> dict[str, Any]:
    """The limits ``pid`` was spawned with (token quota, priority ...); {} for a row from before v7."""
    rows = j.query("SELECT limits FROM processes WHERE pid=?", (pid,))
    try:
        got = json.loads(rows[0][0]) if rows and rows[0][0] else {}
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


_PAGE_CHANGES = frozenset({"mem_append", "mem_page_in", "mem_recall", "mem_write", "mem_ctl"})


def page_cut(entries: list[Entry]) -> tuple[int | None, set[int] | None]:
    """The first context page id the journal does not vouch for, and the pages resident after its
    last paged step (kernel/recovery_memory.py); None, None to keep the store as it is (an effect on
    the context memory whose outcome is unknown)."""
    cut: int | None = 1  # no paged step acknowledged: pages in the store are of an unjournaled one
    resident: set[int] | None = None
    for e in entries:
        if e.errno == INFLIGHT and e.name.startswith("mem_"):
            return None, None
        if e.errno != 0:
            continue
        if e.gen:
            info = json.loads(e.gen)
            if isinstance(info.get("mem_next"), int):
                cut, resident = info["mem_next"], set(info.get("mem_resident") or [])
        elif e.name in _PAGE_CHANGES:  # it changed the pages after that step: keep their states
            resident = None
            if e.name == "mem_append" and e.result:
                cut = max([cut or 1, *(int(i) + 1 for i in json.loads(e.result).get("pages") or [])])
    return cut, resident


def _zombies(sys: Syscalls, parent: Process, entries: list[Entry]) -> None:
    """Children of ``parent`` that ended before the crash and that it had not waited for."""
    kernel = sys.kernel
    waited = set()
    for e in entries:
        if e.name == "wait" and e.errno == 0 and e.result:
            waited.add(json.loads(e.result).get("pid"))
    rows = kernel.journal.query("SELECT pid FROM processes WHERE ppid=? AND state IN ('exited', 'killed')",
                                (parent.pid,))
    for (pid,) in rows:
        if pid in waited or pid in kernel.procs:
            continue
        rec = read_process(kernel.journal, pid)
        if rec is None:
            continue
        z = Process(pid=pid, ppid=parent.pid, uid=rec.uid, app=rec.app, argv=rec.argv, model=rec.model,
                    caps=frozenset(rec.caps), exit_status=rec.exit_status, result=rec.result, error=rec.error,
                    state=State.KILLED if rec.state == "killed" else State.EXITED)
        kernel.restore_zombie(z, parent)
