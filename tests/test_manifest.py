"""App manifests: validation, capabilities from tools, entries, quotas, and the app registry."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from kutil import kernel

from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.userland.apps import builtin_apps
from lmos.userland.manifest import app_spec, load_manifest, parse_manifest
from lmos.userland.tools import load_entry_points

pytestmark = pytest.mark.anyio

GOOD = """
name = "notes"
version = "2.1"
description = "takes notes"
system = "You take notes."
tools = ["fs_write", "calc"]
capabilities = ["llm", "fs.write:/notes", "net:*.example.com"]
[entry]
kind = "agent"
[quotas]
max_tokens = 100
max_children = 2
"""


def test_good_manifest_becomes_an_app_spec() -> None:
    m = parse_manifest(GOOD)
    spec = app_spec(m)
    assert spec.name == "notes" and spec.token_quota == 100 and spec.max_children == 2
    assert spec.caps == {"llm", "fs.write:/notes", "net:*.example.com", "tool:fs_write", "tool:calc"}
    assert spec.description == "takes notes"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name = 'x'\nbogus = 1", "bogus"),
        ("name = 'Bad Name'", "name"),
        ("version = '1'", "name"),
        ("name = 'x'\ncapabilities = ['root']", "unknown capability 'root'"),
        ("name = 'x'\ncapabilities = ['fs.read:relative']", "absolute"),
        ("name = 'x'\ncapabilities = ['*']", "unknown capability"),
        ("name = 'x'\n[entry]\nkind = 'binary'", "kind"),
        ("name = 'x'\n[entry]\nkind = 'code'", "exactly one of source or code"),
        ("name = 'x'\n[entry]\nkind = 'code'\nsource = '../up.py'", "next to the manifest"),
        ("name = 'x'\n[entry]\nkind = 'python'", "module:function"),
        ("name = 'x'\n[quotas]\nmax_tokens = 0", "max_tokens"),
        ("name = 'x'\ntools = ['bad tool']", "tools"),
        ("name = = 'x'", "not valid TOML"),
    ],
)
def test_bad_manifests_have_clear_errors(text: str, needle: str) -> None:
    with pytest.raises(SyscallError) as e:
        parse_manifest(text)
    assert e.value.errno == Errno.EINVAL and needle in e.value.message


def test_untrusted_manifest_cannot_run_python_in_process(tmp_path: Path) -> None:
    m = parse_manifest("name = 'x'\n[entry]\nkind = 'python'\nfunction = 'os:system'")
    with pytest.raises(SyscallError) as e:
        app_spec(m)
    assert e.value.errno == Errno.EPERM
    with pytest.raises(SyscallError) as e:
        load_manifest(tmp_path / "missing.toml")
    assert e.value.errno == Errno.ENOENT


def test_builtin_manifests_load_and_entry_point_apps() -> None:
    names = {a.name for a in builtin_apps()}
    assert {"chat", "calc-agent", "support", "sentiment-monitor", "recommend", "team", "team-worker"} <= names
    eps = [EntryPoint("mine", "lmos.userland.apps:builtin_apps", "lmos.apps")]
    assert load_entry_points("lmos.apps", eps) == [load_entry_points("lmos.apps", eps)[0]]


async def test_code_entry_runs_in_the_sandbox_as_the_process(tmp_path: Path) -> None:
    (tmp_path / "app.toml").write_text(
        "name = 'shout'\ncapabilities = ['fs.read:/in']\n[entry]\nkind = 'code'\nsource = 'main.py'\n"
    )
    (tmp_path / "main.py").write_text(
        "text = sys_call('fs_read', path=argv[0])['data']\n"
        "try:\n    sys_call('fs_read', path='/secret')\n    denied = 'no'\n"
        "except Exception as e:\n    denied = str(e)\n"
        "result = {'text': text.upper(), 'denied': denied}\n"
    )
    async with kernel() as k:
        k.programs.register(app_spec(load_manifest(tmp_path / "app.toml")))
        await k.syscall("fs_write", path="/in/x.txt", data="hi")
        await k.syscall("fs_write", path="/secret", data="s")
        w = await k.wait(await k.spawn("shout", ["/in/x.txt"]))
        assert w.exit_status == 0, w.error
        assert w.result["text"] == "HI" and "fs.read:/secret" in w.result["denied"]


async def test_a_sandbox_violation_is_audited(tmp_path: Path) -> None:
    (tmp_path / "app.toml").write_text("name = 'sneaky'\n[entry]\nkind = 'code'\nsource = 'main.py'\n")
    (tmp_path / "main.py").write_text("x = getattr(1, '__cl' + 'ass__')\n")
    async with kernel() as k:
        k.programs.register(app_spec(load_manifest(tmp_path / "app.toml")))
        pid = await k.spawn("sneaky")
        w = await k.wait(pid)
        assert w.exit_status != 0 and "not accessible" in (w.error or "")
        await k.core.journal.flush()
        rows = k.core.journal.query(
            "SELECT name, decision, cap FROM audit WHERE pid=? AND decision='violation'", (pid,))
        assert rows and rows[0][0] == "sandbox_violation" and "__class__" in rows[0][2]


async def test_wall_time_quota() -> None:
    m = parse_manifest("name = 'slow'\n[quotas]\nmax_wall_seconds = 0.2\n")
    async with kernel(ScriptedDriver(step_delay=0.05, responder="cycle")) as k:
        k.programs.register(app_spec(m))
        w = await k.wait(await k.spawn("slow", ["go"]))
        assert w.exit_status != 0 and w.errno == Errno.EDQUOT and "wall-time" in (w.error or "")


async def test_agent_manifest_runs_with_its_tools_only() -> None:
    def model(window: str) -> str:
        if "<|tool|>" in window:
            return "result " + window.rsplit("<|tool|>", 1)[1].split("<|end|>")[0]
        return '<|call|>{"tool": "clock", "args": {}}'

    m = parse_manifest("name = 'a'\ntools = ['calc']\n")
    async with kernel(ScriptedDriver(model)) as k:
        k.programs.register(app_spec(m))
        w = await k.wait(await k.spawn("a", ["what time is it"]))
        res: dict[str, Any] = w.result
        # clock is not declared to the model, so the loop never makes the call and says what is declared
        assert res["text"] == "result error: unknown tool 'clock'; the declared tools are: calc"
