"""``proc`` is checked and scoped to the caller's uid.

Attacks: a process without ``proc`` lists, watches, traces and signals other
processes; a process with ``proc`` reaches across users (argv, output, trace,
kill), including a finished process's trace.  Each is refused, and the victim
(another user's work) runs to the end untouched.  A parent keeps its Unix
rights over its own children without ``proc``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.errors import SyscallError
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio
ALICE, BOB = 1001, 1002
SECRET = "alice-private-argv-7f3a"


async def victim(sys: Sys, argv: list[str]) -> str:
    """Another user's work: writes output, sleeps a little, finishes."""
    await sys.call("write", text="alice's private output")
    await sys.sleep(float(argv[1]) if len(argv) > 1 else 0.5)
    return "victim done"


async def errno_of(coro: Any) -> str:
    try:
        await coro
    except SyscallError as e:
        return e.errno.name
    return "ok"


async def attack_all(sys: Sys, argv: list[str]) -> dict[str, Any]:
    """Try everything against process argv[0]: list, events, trace, kill, stop."""
    target = int(argv[0])
    out: dict[str, Any] = {}
    procs = await sys.ps()
    out["seen"] = sorted(p.pid for p in procs)
    out["argv_leak"] = any(SECRET in " ".join(p.argv) for p in procs)
    out["events"] = await errno_of(sys.call("events", pid=target, timeout=0.1))
    out["trace"] = await errno_of(sys.trace(target))
    out["stop"] = await errno_of(sys.kill(target, "STOP"))
    out["kill"] = await errno_of(sys.kill(target, "KILL"))
    return out


async def test_without_proc_no_other_process_can_be_seen_or_touched() -> None:
    async with kernel() as k:
        same_uid = await k.spawn(victim, [SECRET, "0.5"], uid=ALICE)
        other_uid = await k.spawn(victim, [SECRET, "0.5"], uid=BOB)
        for target in (same_uid, other_uid):
            w = await k.wait(await k.spawn(attack_all, [str(target)], caps=["llm"], uid=ALICE))
            me = w.pid
            assert w.result["seen"] == [me], w.result  # only itself
            assert not w.result["argv_leak"]
            for what in ("events", "trace", "stop", "kill"):
                assert w.result[what] == "EPERM", (what, w.result)
        for pid in (same_uid, other_uid):  # both victims finish their work
            done = await k.wait(pid)
            assert done.exit_status == 0 and done.result == "victim done"


async def test_with_proc_only_the_callers_uid_is_visible() -> None:
    async with kernel() as k:
        bobs = await k.spawn(victim, [SECRET, "0.5"], uid=BOB)
        alices = await k.spawn(victim, ["plain", "5"], uid=ALICE)
        w = await k.wait(await k.spawn(attack_all, [str(bobs)], caps=["proc"], uid=ALICE))
        r = w.result
        assert bobs not in r["seen"] and alices in r["seen"] and not r["argv_leak"]
        assert r["events"] == r["trace"] == r["stop"] == r["kill"] == "EPERM", r
        # with proc, the same uid's processes are visible and may be signalled
        w = await k.wait(await k.spawn(attack_all, [str(alices)], caps=["proc"], uid=ALICE))
        assert w.result["trace"] == "ok" and w.result["kill"] == "ok", w.result
        assert (await k.wait(alices)).state == "killed"
        done = await k.wait(bobs)
        assert done.exit_status == 0 and done.result == "victim done"


async def test_output_never_crosses_users_even_with_stream() -> None:
    async with kernel() as k:
        bobs = await k.spawn(victim, [SECRET, "0.3"], uid=BOB)

        async def snoop(sys: Sys, argv: list[str]) -> list[str]:
            got: list[str] = []
            for _ in range(5):
                try:
                    r = await sys.call("events", pid=bobs, timeout=0.05)
                    got += [e.text for e in r.events]
                except SyscallError as e:
                    got.append(e.errno.name)
            return got

        w = await k.wait(await k.spawn(snoop, caps=["*"], uid=ALICE))  # every capability but another uid
        assert set(w.result) == {"EPERM"}
        assert (await k.wait(bobs)).result == "victim done"


async def test_a_parent_keeps_its_rights_over_its_own_children() -> None:
    async with kernel() as k:
        async def parent(sys: Sys, argv: list[str]) -> dict[str, Any]:
            child = await sys.spawn("sleep", ["30"])
            seen = [p.pid for p in await sys.ps()]
            ev = await sys.call("events", pid=child, timeout=0.05)
            trace = await sys.trace(child)
            await sys.kill(child, "KILL")
            w = await sys.wait(child)
            return {"seen": child in seen, "events": ev.ended is False, "trace": isinstance(trace, list),
                    "state": w.state}

        w = await k.wait(await k.spawn(parent, caps=["spawn"], uid=ALICE))
        assert w.result == {"seen": True, "events": True, "trace": True, "state": "killed"}, w


async def test_trace_of_a_finished_process_checks_its_owner_and_buffers_are_freed() -> None:
    async with kernel() as k:
        bobs = await k.spawn(victim, [SECRET, "0"], uid=BOB)
        zombie = k.core.procs[bobs] if k.core else None
        while zombie is not None and not zombie.ended:  # ended, not yet reaped: a zombie
            await anyio.sleep(0.01)

        async def tracer(sys: Sys, argv: list[str]) -> str:
            return await errno_of(sys.trace(int(argv[0])))

        w = await k.wait(await k.spawn(tracer, [str(bobs)], caps=["proc"], uid=ALICE))
        assert w.result == "EPERM"  # a zombie: checked like a live process
        assert bobs in k.sys.traces if k.sys else False
        await k.wait(bobs)  # reaped: its in-memory trace is freed ...
        assert k.sys is not None and bobs not in k.sys.traces
        w = await k.wait(await k.spawn(tracer, [str(bobs)], caps=["proc"], uid=ALICE))
        assert w.result == "EPERM"  # ... and the audit table is checked the same way
        w = await k.wait(await k.spawn(tracer, [str(bobs)], caps=["proc"], uid=BOB))
        assert w.result == "ok"  # its owner, with proc, still reads it
        w = await k.wait(await k.spawn(tracer, [str(bobs)], caps=["llm"], uid=BOB))
        assert w.result == "EPERM"  # its owner without proc does not
        assert (await k.syscall("trace", pid=bobs)).entries  # init (the host) sees everything


async def test_reaped_processes_leave_no_trace_buffers_behind() -> None:
    async with kernel() as k:
        for _ in range(20):
            await k.wait(await k.spawn(victim, ["x", "0"], uid=ALICE))
        assert k.sys is not None and k.core is not None
        assert set(k.sys.traces) <= set(k.core.procs)  # only live (or zombie) processes hold a ring


async def test_kill_across_users_is_refused_even_with_every_capability() -> None:
    async with kernel() as k:
        bobs = await k.spawn(victim, [SECRET, "0.3"], uid=BOB)

        async def killer(sys: Sys, argv: list[str]) -> str:
            return await errno_of(sys.kill(bobs, "KILL"))

        w = await k.wait(await k.spawn(killer, caps=["*"], uid=ALICE))
        assert w.result == "EPERM"
        assert (await k.wait(bobs)).result == "victim done"


async def whoami(sys: Sys, argv: list[str]) -> int:
    return (await sys.getpid()).uid


async def test_no_accidental_root_from_the_embedding_api() -> None:
    """Without uid=, processes run as the host's user; a root host maps to users.root_runs_as."""
    import os

    from lmos.config import Users

    async with kernel(users=Users(root_runs_as="4321")) as k:
        expected = 4321 if os.getuid() == 0 else os.getuid()
        assert k.core is not None and k.core.host_uid == expected and k.core.init.uid == expected
        assert (await k.wait(await k.spawn(whoami))).result == expected
        assert (await k.complete("hi", max_tokens=2)).text is not None
        assert (await k.wait(await k.spawn(whoami, uid=0))).result == 0  # asked for explicitly

        async def escalate(sys: Sys, argv: list[str]) -> str:
            try:
                await sys.spawn("sleep", ["0"], uid=0)
            except SyscallError as e:
                return e.errno.name
            return "root"

        assert (await k.wait(await k.spawn(escalate, caps=["spawn"]))).result == "EPERM"
    if os.getuid() == 0:
        async with kernel(as_root=True) as k:
            assert (await k.wait(await k.spawn(whoami))).result == 0  # the operator asked for root
