"""Attack: evade the audit log, or forge rows in it.

Evade: a sandboxed program probes a guard and catches the refusal, so the run
ends normally and nothing used to be recorded.  Every refusal must be audited
where it happens.  Forge: a program writes ``sandbox_violation`` (or a
syscall's name) through the ``audit`` syscall to bury or fake an incident.  A
program may write only ``app.<its name>.*`` rows, marked ``decision='app'``.
Another user's app runs at the same time and finishes normally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from kutil import kernel

import lmos
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.userland.manifest import app_spec, load_manifest
from lmos.userland.tools.sandboxed import code_tool

pytestmark = pytest.mark.anyio

CATCHES = """
tries = []
try:
    getattr(argv, '__cl' + 'ass__')
except AttributeError:
    tries.append('class')
try:
    import os
except ImportError:
    tries.append('os')
for i in range(40):  # a flood of refusals: all counted, the first few kept
    try:
        getattr(argv, '_x')
    except AttributeError:
        pass
result = tries
"""

FORGES = """
outcome = {}
for event in ['sandbox_violation', 'fs_write', 'app.other.note', 'app.forger']:
    try:
        sys_call('audit', event=event, detail='all clear')
        outcome[event] = 'written'
    except SyscallError as e:
        outcome[event] = e.errno
sys_call('audit', event='app.forger.note', detail='my own note')
result = outcome
"""


def install(k: lmos.Kernel, tmp: Path, name: str, source: str) -> None:
    d = tmp / name
    d.mkdir()
    (d / "app.toml").write_text(f"name = '{name}'\n[entry]\nkind = 'code'\nsource = 'main.py'\n")
    (d / "main.py").write_text(source)
    k.programs.register(app_spec(load_manifest(d / "app.toml")))


async def rows(k: lmos.Kernel, pid: int) -> list[tuple[str, str, str]]:
    """The process's audit rows that are not plain syscall records."""
    await k.core.journal.flush()
    return [(str(n), str(d), str(c)) for n, d, c in k.core.journal.query(
        "SELECT name, decision, cap FROM audit WHERE pid=? AND decision IN ('violation', 'app') ORDER BY id",
        (pid,))]


async def run_with_bystander(k: lmos.Kernel, tmp: Path, app: str) -> Any:
    install(k, tmp, "honest", "result = sum(range(10))\n")
    waits: dict[str, Any] = {}

    async def one(name: str, uid: int) -> None:
        pid = await k.spawn(name, uid=uid)
        waits[name] = (pid, await k.wait(pid))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, app, 1001)
        tg.start_soon(one, "honest", 1002)
    pid, w = waits["honest"]
    assert w.exit_status == 0 and w.result == 45  # the other user's app went on
    assert await rows(k, pid) == []
    return waits[app]


async def test_caught_guard_refusals_are_audited(tmp_path: Path) -> None:
    async with kernel() as k:
        install(k, tmp_path, "prober", CATCHES)
        pid, w = await run_with_bystander(k, tmp_path, "prober")
        assert w.exit_status == 0 and w.result == ["class", "os"]  # the program carried on
        found = await rows(k, pid)
        assert all(name == "sandbox_violation" and decision == "violation" for name, decision, _ in found)
        details = [detail for _, _, detail in found]
        assert "__class__" in details[0] and "import of 'os'" in details[1]
        assert len(details) == 17 and details[-1].endswith("more refusals")  # 16 kept, the rest counted
        assert "26 more" in details[-1]  # 42 refusals in all


async def test_caught_refusal_in_a_user_tool_is_audited() -> None:
    src = "try:\n    import subprocess\nexcept ImportError:\n    pass\nresult = 'ok'\n"
    async with kernel() as k:
        k.tools.register(code_tool("sneak", "looks innocent", {"type": "object", "properties": {}}, src))

        async def caller(sys: Sys, argv: list[str]) -> Any:
            return (await sys.call("tool_call", name="sneak")).text

        pid = await k.spawn(caller, caps=["tool:sneak"], uid=1001)
        w = await k.wait(pid)
        assert w.result == "ok"
        found = await rows(k, pid)
        assert [(n, d) for n, d, _ in found] == [("sandbox_violation", "violation")]
        assert "subprocess" in found[0][2]


async def test_a_program_cannot_forge_kernel_or_sandbox_rows(tmp_path: Path) -> None:
    async with kernel() as k:
        install(k, tmp_path, "forger", FORGES)
        pid, w = await run_with_bystander(k, tmp_path, "forger")
        assert w.exit_status == 0, w.error
        assert w.result == {"sandbox_violation": "EPERM", "fs_write": "EPERM", "app.other.note": "EPERM",
                            "app.forger": "EPERM"}
        assert await rows(k, pid) == [("app.forger.note", "app", "my own note")]


async def test_a_plain_process_cannot_forge_rows_either() -> None:
    async with kernel() as k:

        async def forger(sys: Sys, argv: list[str]) -> Any:
            try:
                await sys.call("audit", event="sandbox_violation", detail="x")
            except SyscallError as e:
                return e.errno.name
            return "forged"

        pid = await k.spawn(forger, caps=[], uid=1001)
        w = await k.wait(pid)
        assert w.result == "EPERM"
        assert await rows(k, pid) == []
        with pytest.raises(SyscallError) as e:
            await k.syscall("audit", event="fs_delete", detail="x")
        assert e.value.errno == Errno.EPERM
