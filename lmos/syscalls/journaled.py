"""What the dispatcher writes to the syscall journal for one completed syscall.

The journal itself (group commit, retention) is :mod:`lmos.kernel.sysjournal`;
this module turns a syscall's request and result into a row, at the one
dispatch path (:meth:`lmos.syscalls.table.Syscalls.dispatch`).

For ``llm_generate`` the row also says what the model saw: ``gen`` holds where
the prompt and the output lie in the process's context (``base`` tokens kept
from before, then the prompt, then the output), a hash of the whole context the
model saw, and the prompt's token ids are stored (``prompt``), so a replay can
rebuild that context token by token (:mod:`lmos.syscalls.replay`) and
``--live`` can feed the very same tokens to another model.  The tokens produced
are in the result.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from array import array
from typing import TYPE_CHECKING, Any

import msgspec

from lmos.errors import Errno, SyscallError
from lmos.kernel.recovery_memory import page_marks
from lmos.kernel.sysjournal import INFLIGHT, Entry, SysJournal
from lmos.syscalls.recovery_ipc import held_now
from lmos.syscalls.types import Err, GenerateReply, LlmGenerate, Ok, Result

if TYPE_CHECKING:
    from lmos.kernel.kernel import KernelCore
    from lmos.kernel.process import Process


def pack_ids(ids: list[int]) -> bytes:
    a = array("I", ids)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def unpack_ids(data: bytes | None) -> list[int]:
    if not data:
        return []
    a = array("I")
    a.frombytes(data)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


def context_hash(ids: list[int]) -> str:
    return hashlib.blake2b(pack_ids(ids), digest_size=8).hexdigest()


# Syscalls whose effect outlives the call (state others see, or that survives the process): each is
# journaled as in flight before it runs, so a crash during it is reported (EINPROGRESS), not redone.
EFFECTS = frozenset({"spawn", "kill", "write", "send", "chan_open", "chan_close", "mem_write", "mem_ctl",
                     "mem_append", "fs_write", "fs_delete", "fs_mount", "fs_umount", "tool_call", "kv_set",
                     "kv_delete", "app_install", "app_remove", "app_load"})
# Effects outside the state database: their in-flight row is durable before they start.  (The others
# change the database: their in-flight row rides in the same transaction as the change, or an earlier one.)
EXTERNAL = frozenset({"tool_call", "kill", "send", "spawn", "write", "chan_open", "chan_close"})
PURE_TOOLS = frozenset({"calc", "clock"})  # built-in tools that compute and change nothing


# Front ends' session processes (lmos.cli.sessions, lmos.server.session) run no program of their own:
# they carry a user's commands, which the audit log records.  They are neither journaled (a session's
# replies, a replay or an audit query among them, would fill its owner's quota) nor recovered (a session
# ends with its front end).
SESSION_APPS = frozenset({"lmos", "lmosh", "lmos.connect"})


def is_session(app: str, argv: list[str]) -> bool:
    return (app in SESSION_APPS and argv[:1] == ["session"]) or (app == "http" and argv[:1] != []
                                                                 and argv[0].startswith("uid="))


def is_effect(name: str, req: Any) -> bool:
    if name == "tool_call":
        return getattr(req, "name", "") not in PURE_TOOLS
    return name in EFFECTS


async def intent(sj: SysJournal, p: Process, name: str, request: bytes, cap: str | None) -> int:
    """Journal that effect ``name`` starts now; its step.  Waits for durability only for an
    effect outside the database (see EXTERNAL)."""
    step = sj.next_step(p.pid)
    entry = Entry(pid=p.pid, step=step, ts=time.time(), name=name, request=request, result=None,
                  errno=INFLIGHT, error="in flight", cap=cap, decision="allow", duration_us=0,
                  tainted=p.tainted)
    batch = sj.queue(entry)
    if name in EXTERNAL:
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
    return step


def decision_of(errno: int) -> str:
    return "allow" if errno == 0 else ("deny" if errno == Errno.EPERM else "error")


def generation(kernel: KernelCore, p: Process, req: Any, value: Any) -> tuple[str | None, bytes | None]:
    """``gen`` and ``prompt`` of an ``llm_generate`` row (None, None for any other call)."""
    if not isinstance(value, GenerateReply) or not isinstance(req, LlmGenerate):
        return None, None
    out = list(value.token_ids)
    info: dict[str, Any] = {"prompt_tokens": value.prompt_tokens, "out_tokens": len(out),
                            "reset": req.reset, "page": req.page, "n": req.n}
    if req.page:  # the pages this step leaves: recovery undoes what a later, unjournaled step did
        info.update(page_marks(kernel.memory, p.pid))
    toks = context_tokens(kernel, p)
    # The output is the context's tail; a driver may not have appended the last sampled token yet.
    end = len(toks)
    if out and toks[end - len(out):] == out:
        out_start = end - len(out)
    elif out and len(out) > 1 and toks[end - len(out) + 1:] == out[:-1]:
        out_start = end - len(out) + 1
    elif not out:
        out_start = end
    else:
        out_start = -1
    if out_start < 0 or out_start < value.prompt_tokens:
        info["context"] = "unknown"  # the driver's sequence does not end with this output (n > 1)
        return json.dumps(info), None
    base = out_start - value.prompt_tokens
    seen = toks[:out_start]
    info.update(base=base, context_tokens=len(seen), context_hash=context_hash(seen))
    return json.dumps(info), pack_ids(toks[base:out_start])


def encode_payload(payload: Any) -> bytes:
    try:
        return msgspec.json.encode(payload)
    except (TypeError, ValueError, msgspec.EncodeError):
        return b"null"


async def append(sj: SysJournal, kernel: KernelCore, p: Process, name: str, request: bytes, req: Any,
                 result: Result, cap: str | None, t0: float, step: int | None = None) -> Result:
    """Journal one completed syscall of ``p``; the result once it is durable, or the commit's error."""
    errno = result.errno if isinstance(result, Err) else 0
    gen: str | None = None
    prompt: bytes | None = None
    body: bytes | None = None
    if isinstance(result, Ok):
        try:
            body = msgspec.json.encode(result.value)
        except (TypeError, ValueError, msgspec.EncodeError):
            body = json.dumps(repr(result.value)).encode()
        gen, prompt = generation(kernel, p, req, result.value) if name != "checkpoint" else \
            checkpoint_context(kernel, p)
    step = sj.next_step(p.pid) if step is None else step
    entry = Entry(pid=p.pid, step=step, ts=time.time(), name=name, request=request,
                  result=body, errno=errno, error=result.message if isinstance(result, Err) else "",
                  cap=cap, decision=decision_of(errno), duration_us=int((time.perf_counter() - t0) * 1e6),
                  gen=gen, prompt=prompt, tainted=p.tainted)
    try:
        await sj.append(entry)
    except SyscallError as exc:
        return Err(int(exc.errno), exc.errno.name, exc.message)
    if name == "checkpoint" and errno == 0:  # the checkpoint is the process's new start
        sj.journal.post("DELETE FROM sysjournal WHERE pid=? AND step < ?", (p.pid, step))
    return result


def context_tokens(kernel: KernelCore, p: Process) -> list[int]:
    """The process's context tokens as its driver holds them ([] with no sequence)."""
    sched = kernel.schedulers.get(p.model)
    if sched is None or not p.has_seq:
        return []
    try:
        return list(sched.driver.tokens(p.pid))
    except (KeyError, SyscallError):
        return []


def checkpoint_context(kernel: KernelCore, p: Process) -> tuple[str | None, bytes | None]:
    """A checkpoint row keeps the process's context tokens: recovery gives them back to the driver."""
    toks = context_tokens(kernel, p)
    # the tokens used so far: a recovery that starts at this checkpoint counts them against the quotas
    info: dict[str, Any] = {"checkpoint": True, "context_tokens": len(toks),
                            "generated_tokens": p.stats.generated_tokens,
                            "prompt_tokens": p.stats.prompt_tokens,
                            "children_tokens": p.children_tokens}
    info.update(page_marks(kernel.memory, p.pid))
    channels = held_now(kernel, p.pid)  # the rows that opened them are deleted with the journal before it
    if channels:
        info["channels"] = channels
    return json.dumps(info), pack_ids(toks)
