"""The kv_* syscalls: capability, audit, per-user isolation, bounds, persistence, the kv tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kutil import kernel

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_KV_KEY, MAX_KV_VALUE
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


async def run(k: lmos.Kernel, main: Any, caps: list[str], uid: int = 5) -> Any:
    w = await k.wait(await k.spawn(main, caps=caps, uid=uid))
    assert w.exit_status == 0, w.error
    return w.result


async def errno_of(sys: Sys, call: str, **args: Any) -> str:
    try:
        await sys.call(call, **args)
    except SyscallError as e:
        return e.errno.name
    return "ok"


async def test_set_get_list_delete() -> None:
    async with kernel() as k:

        async def prog(sys: Sys, argv: list[str]) -> Any:
            new = [await sys.kv_set("user/color", "blue"), await sys.kv_set("user/color", "green")]
            await sys.kv_set("user/size", "L")
            await sys.kv_set("other", "x")
            got = (await sys.call("kv_get", key="user/color")).value
            listed = [await sys.kv_list("user/"), await sys.kv_list(), await sys.kv_list(limit=1)]
            removed = [await sys.kv_delete("user/size"), await sys.kv_delete("user/size")]
            missing = [await errno_of(sys, "kv_get", key="user/size"), await sys.kv_get("user/size", "none")]
            return [new, got, listed, removed, missing, await sys.kv_list("user/")]

        assert await run(k, prog, ["kv"]) == [
            [True, False],
            "green",
            [["user/color", "user/size"], ["other", "user/color", "user/size"], ["other"]],
            [True, False],
            ["ENOENT", "none"],
            ["user/color"],
        ]


async def test_every_kv_syscall_needs_the_kv_capability_and_is_audited() -> None:
    async with kernel() as k:

        async def denied(sys: Sys, argv: list[str]) -> Any:
            return [
                await errno_of(sys, "kv_get", key="a"),
                await errno_of(sys, "kv_set", key="a", value="1"),
                await errno_of(sys, "kv_list"),
                await errno_of(sys, "kv_delete", key="a"),
            ]

        async def allowed(sys: Sys, argv: list[str]) -> Any:
            await sys.kv_set("a", "1")
            return (await sys.getpid()).pid

        pid_denied = await k.spawn(denied, caps=["llm"], uid=5)
        assert (await k.wait(pid_denied)).result == ["EPERM"] * 4
        pid_allowed = await run(k, allowed, ["kv"])
        await k.core.journal.flush()
        rows = await k.core.journal.aquery(
            "SELECT pid, name, cap, decision, errno FROM audit WHERE name LIKE 'kv%' ORDER BY id")
        assert [r for r in rows if r[0] == pid_denied] == [
            (pid_denied, name, "kv", "deny", int(Errno.EPERM))
            for name in ("kv_get", "kv_set", "kv_list", "kv_delete")
        ]
        assert [r for r in rows if r[0] == pid_allowed] == [(pid_allowed, "kv_set", "kv", "allow", 0)]


async def test_each_user_has_its_own_namespace() -> None:
    async with kernel() as k:

        async def write(sys: Sys, argv: list[str]) -> Any:
            await sys.kv_set("pin", argv[0])

        async def read(sys: Sys, argv: list[str]) -> Any:
            return [await sys.kv_get("pin"), await sys.kv_list()]

        await k.wait(await k.spawn(write, ["1111"], caps=["kv"], uid=5))
        await k.wait(await k.spawn(write, ["2222"], caps=["kv"], uid=6))
        assert await run(k, read, ["kv"], uid=5) == ["1111", ["pin"]]
        assert await run(k, read, ["kv"], uid=6) == ["2222", ["pin"]]
        assert await run(k, read, ["kv"], uid=7) == [None, []]


async def test_bounds_are_clear_errors() -> None:
    async with kernel() as k:

        async def prog(sys: Sys, argv: list[str]) -> Any:
            return [
                await errno_of(sys, "kv_set", key="", value="v"),
                await errno_of(sys, "kv_set", key="k" * (MAX_KV_KEY + 1), value="v"),
                await errno_of(sys, "kv_set", key="a\nb", value="v"),
                await errno_of(sys, "kv_set", key="k" * MAX_KV_KEY, value="v" * MAX_KV_VALUE),
                await errno_of(sys, "kv_set", key="big", value="v" * (MAX_KV_VALUE + 1)),
                await errno_of(sys, "kv_set", key="wide", value="é" * (MAX_KV_VALUE // 2 + 1)),  # bytes count
                await errno_of(sys, "kv_set", key="n", value=3),
                await errno_of(sys, "kv_get", key="a\x00"),
                await errno_of(sys, "kv_list", limit=0),
            ]

        assert await run(k, prog, ["kv"]) == [
            "EINVAL", "EINVAL", "EINVAL", "ok", "E2BIG", "E2BIG", "EINVAL", "EINVAL", "EINVAL",
        ]


async def test_values_survive_a_reopened_state_dir(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    async with kernel(state_dir=state) as k:
        await k.syscall("kv_set", key="greeting", value="hello\nworld")

        async def as_user(sys: Sys, argv: list[str]) -> Any:
            await sys.kv_set("mine", "5")

        await k.wait(await k.spawn(as_user, caps=["kv"], uid=5))
    async with kernel(state_dir=state) as k:
        assert (await k.syscall("kv_get", key="greeting")).value == "hello\nworld"
        assert (await k.syscall("kv_list")).keys == ["greeting"]

        async def read(sys: Sys, argv: list[str]) -> Any:
            return await sys.kv_get("mine")

        assert await run(k, read, ["kv"]) == "5"


async def test_kv_tools_are_wrappers_over_the_syscalls() -> None:
    async with kernel() as k:

        async def prog(sys: Sys, argv: list[str]) -> Any:
            said = await sys.tool_call("kv_set", {"key": "color", "value": "blue"})
            direct = await sys.kv_get("color")
            await sys.kv_set("size", "L")
            via_tool = await sys.tool_call("kv_get", {"key": "size"})
            try:
                await sys.tool_call("kv_get", {"key": "nope"})
            except SyscallError as e:
                return [said, direct, via_tool, e.errno.name, e.message]
            return "found"

        assert await run(k, prog, ["tool:kv_set", "tool:kv_get", "kv"]) == [
            "ok", "blue", "L", "ENOENT", "no such key: nope",
        ]
        pid = await k.spawn(prog, caps=["tool:kv_set", "tool:kv_get"], uid=5)
        w = await k.wait(pid)
        assert w.exit_status != 0 and "tool kv_set needs capability 'kv'" in (w.error or "")


def _remembering_model(window: str) -> str:
    """Calls kv_set, then kv_get, then answers with what the store gave back."""
    if "<|tool|>" not in window:
        return '<|call|>{"tool": "kv_set", "args": {"key": "pet", "value": "cat"}}'
    if window.count("<|tool|>") == 1:
        return '<|call|>{"tool": "kv_get", "args": {"key": "pet"}}'
    return "Your pet is a " + window.rsplit("<|tool|>", 1)[1].split("<|end|>")[0] + "."


async def test_chat_and_the_assistant_app_get_kv_for_kv_tools() -> None:
    async with kernel(ScriptedDriver(_remembering_model)) as k:
        r = await k.chat([{"role": "user", "content": "remember my pet"}], tools=["kv_set", "kv_get"])
        assert [c["result"] for c in r.calls] == ["ok", "cat"] and r.text == "Your pet is a cat."
        w = await k.wait(await k.spawn("assistant", ["remember", "my", "pet"], uid=5))
        assert w.exit_status == 0, w.error
        assert [c["result"] for c in w.result["calls"]] == ["ok", "cat"], json.dumps(w.result)
