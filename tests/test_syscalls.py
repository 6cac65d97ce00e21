"""The syscall table: every call's success and error paths, capabilities, trace, fuzzing."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kutil import kernel

from lmos.errors import Errno, SyscallError
from lmos.kernel.kernel import INIT_PID
from lmos.syscalls.caps import grants
from lmos.syscalls.client import Sys
from lmos.syscalls.docs import render
from lmos.syscalls.registry import BY_NR, TABLE
from lmos.syscalls.types import Err, Ok

pytestmark = pytest.mark.anyio


async def errno_of(k: Any, name: str | int, **args: Any) -> Errno:
    res = await k.sys.dispatch(INIT_PID, name, args)
    assert isinstance(res, Err), res
    return Errno(res.errno)


async def test_table_is_consistent() -> None:
    assert {d.name for d in BY_NR.values()} == set(TABLE)
    for name in ("llm_generate", "spawn", "exit", "wait", "kill", "getpid", "ps", "sleep", "time",
                 "chan_open", "send", "recv"):
        assert name in TABLE
    assert TABLE["llm_generate"].cap == "llm" and TABLE["llm_generate"].blocking


async def test_error_paths_as_init() -> None:
    async with kernel() as k:
        assert await errno_of(k, "no_such_call") is Errno.ENOSYS
        assert await errno_of(k, 9999) is Errno.ENOSYS
        assert await errno_of(k, "spawn", app="nope") is Errno.ENOENT
        assert await errno_of(k, "spawn", app="llm.complete", bogus=1) is Errno.EINVAL
        assert await errno_of(k, "spawn", app="llm.complete", priority=99) is Errno.EINVAL
        assert await errno_of(k, "spawn", app="llm.complete", model="other") is Errno.ENOENT
        assert await errno_of(k, "kill", pid=424242) is Errno.ESRCH
        assert await errno_of(k, "kill", pid=INIT_PID) is Errno.EPERM
        assert await errno_of(k, "kill", pid=1, signal="HUP") is Errno.EINVAL
        assert await errno_of(k, "wait", pid=424242) is Errno.ECHILD
        assert await errno_of(k, "wait") is Errno.ECHILD
        assert await errno_of(k, "sleep", seconds=-1) is Errno.EINVAL
        assert await errno_of(k, "recv", chan=77) is Errno.ENOENT
        assert await errno_of(k, "exit") is Errno.EPERM
        res = await k.sys.dispatch(INIT_PID, "getpid", b"{not json")
        assert isinstance(res, Err) and res.errno == Errno.EFAULT
        res = await k.sys.dispatch(424242, "getpid", None)
        assert isinstance(res, Err) and res.errno == Errno.ESRCH


async def test_success_paths_as_init() -> None:
    async with kernel() as k:
        assert (await k.syscall("getpid")).pid == INIT_PID
        t = await k.syscall("time")
        assert t.wall > 1e9 and t.monotonic > 0
        await k.syscall("sleep", seconds=0.001)
        res = await k.sys.dispatch(INIT_PID, 0, None)  # by number
        assert isinstance(res, Ok) and res.value.pid == INIT_PID
        ch = (await k.syscall("chan_open", name="c")).chan
        await k.syscall("send", chan=ch, data={"a": [1, 2]})
        assert (await k.syscall("recv", chan=ch)).data == {"a": [1, 2]}
        assert await errno_of(k, "recv", chan=ch, timeout=0.01) is Errno.ETIMEDOUT
        await k.syscall("chan_close", chan=ch)
        assert await errno_of(k, "send", chan=ch, data=1) is Errno.ENOENT


async def test_program_view_llm_errors_and_capabilities() -> None:
    async with kernel() as k:
        async def prog(sys: Sys, argv: list[str]) -> Any:
            out: dict[str, Any] = {}
            for label, kwargs in {
                "both": {"prompt": "a", "token_ids": [1]},
                "empty": {"prompt": ""},
                "neg": {"token_ids": [-1]},
                "big": {"prompt": "a", "max_tokens": 0},
                "temp": {"prompt": "a", "temperature": -1.0},
            }.items():
                try:
                    await sys.call("llm_generate", **kwargs)
                    out[label] = "ok"
                except SyscallError as e:
                    out[label] = e.errno.name
            for label, call in {"spawn": ("spawn", {"app": "llm.complete"}),
                                "ipc": ("chan_open", {"name": "x"})}.items():
                try:
                    await sys.call(call[0], **call[1])
                    out[label] = "ok"
                except SyscallError as e:
                    out[label] = e.errno.name + ":" + e.message
            out["trace"] = [(t.name, t.ok) for t in await sys.trace()]
            return out

        w = await k.wait(await k.spawn(prog, caps=["llm"]))
        r = w.result
        assert r["both"] == "EINVAL" and r["empty"] == "EINVAL" and r["neg"] == "EINVAL"
        assert r["big"] == "EINVAL" and r["temp"] == "EINVAL"
        assert r["spawn"] == "EPERM:spawn needs capability 'spawn'"
        assert r["ipc"] == "EPERM:chan_open needs capability 'ipc'"
        assert ("chan_open", False) in r["trace"] and r["trace"][0] == ("llm_generate", False)


async def test_no_capability_escalation_and_uid_rules() -> None:
    async with kernel() as k:
        async def child_spawner(sys: Sys, argv: list[str]) -> Any:
            out = []
            for kw in ({"caps": ["llm", "mem"]}, {"uid": 0}, {"caps": ["llm"]}):
                try:
                    pid = await sys.spawn("llm.complete", ['{"prompt": "a", "max_tokens": 1}'], **kw)
                    out.append((await sys.wait(pid)).exit_status)
                except SyscallError as e:
                    out.append(e.errno.name)
            return out

        w = await k.wait(await k.spawn(child_spawner, caps=["llm", "spawn"], uid=7))
        assert w.result == ["EPERM", "EPERM", 0]

        async def sleeper(sys: Sys, argv: list[str]) -> None:
            await sys.sleep(60)

        victim = await k.spawn(sleeper, uid=8)

        async def killer(sys: Sys, argv: list[str]) -> str:
            try:
                await sys.kill(int(argv[0]))
            except SyscallError as e:
                return e.errno.name
            return "killed"

        w = await k.wait(await k.spawn(killer, [str(victim)], uid=9))
        assert w.result == "EPERM"
        await k.kill(victim)


def test_capability_matching() -> None:
    assert grants(["fs.read:/docs"], "fs.read:/docs/a.txt")
    assert not grants(["fs.read:/docs"], "fs.read:/docs2/a.txt")
    assert not grants(["fs.read:/docs"], "fs.read:/docs/../etc/passwd")
    assert not grants(["fs.read:/docs"], "fs.write:/docs/a")
    assert grants(["net:*.example.com"], "net:api.example.com")
    assert not grants(["net:*.example.com"], "net:example.org")
    assert grants(["*"], "anything")
    assert grants(["fs.read"], "fs.read:/x")
    assert not grants(["fs.read:/x"], "fs.read")


async def test_trace_and_audit_are_recorded() -> None:
    async with kernel() as k:
        r = await k.complete("hi", max_tokens=5)
        await k.sys.dispatch(INIT_PID, "kill", {"pid": 999999})
        trace = k.sys.trace(INIT_PID)
        names = [(t.name, t.errno) for t in trace]
        assert ("spawn", 0) in names and ("wait", 0) in names and ("kill", Errno.ESRCH) in names
        assert all(t.digest for t in trace if t.name == "spawn")
        await k.core.journal.flush()
        rows = k.core.journal.query("SELECT pid, name, decision, errno FROM audit ORDER BY id")
        assert (r.pid, "llm_generate", "allow", 0) in rows
        assert (INIT_PID, "kill", "error", int(Errno.ESRCH)) in rows


def test_reference_doc_is_current() -> None:
    from lmos.syscalls.docs import DOC

    assert DOC.read_text() == render(), "run `python -m lmos.syscalls.docs`"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
ALL_FIELDS = sorted({f for d in TABLE.values() for f in d.req.__struct_fields__})
field_names = st.sampled_from([*ALL_FIELDS, "bogus", ""])
payloads = st.one_of(
    json_values,
    st.dictionaries(field_names, json_values, max_size=5),
    st.binary(max_size=64),
    json_values.map(msgspec.json.encode),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sorted(TABLE)) | st.text(max_size=8) | st.integers(-5, 100), payload=payloads)
def test_malformed_payloads_always_yield_an_errno(name: str | int, payload: Any) -> None:
    async def run() -> None:
        async with kernel(max_procs=64) as k:
            with anyio.move_on_after(0.5):  # a *valid* sleep/wait/recv may legitimately block
                res = await k.sys.dispatch(INIT_PID, name, payload)
                assert isinstance(res, Ok | Err)
                if isinstance(res, Err):
                    Errno(res.errno)  # a real errno
            assert (await k.syscall("getpid")).pid == INIT_PID  # the kernel is still alive

    anyio.run(run)


async def test_children_inherit_taint() -> None:
    async with kernel() as k:
        async def parent(sys: Sys, argv: list[str]) -> bool:
            me = (await sys.getpid()).pid
            k.core.procs[me].tainted = True  # as if it had read a web page
            child = await sys.spawn("sleep", ["0.2"])
            tainted = k.core.procs[child].tainted
            await sys.wait(child)
            return tainted

        w = await k.wait(await k.spawn(parent, caps=["llm", "spawn"]))
        assert w.result is True, w.error
