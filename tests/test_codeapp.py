"""Code apps and the sandbox API they use: modules, helpers, errno, echoed output, ``result``.

The sandbox-level tests drive ``Sandbox.run`` with ``Extras`` directly; the
code-app tests install apps into a kernel on the scripted driver and run them
as processes, so every syscall is checked by the real kernel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from kutil import kernel
from test_agent import calc_model

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.userland import codeapp
from lmos.userland.codeapp import code_main, compile_check
from lmos.userland.manifest import parse_manifest
from lmos.userland.sandbox import Extras, Limits, Sandbox, execute

pytestmark = pytest.mark.anyio
FAST = Limits(cpu_seconds=2, wall_seconds=5, memory_bytes=256 << 20, output_bytes=1 << 16, max_syscalls=8)
HELPERS = "SCALE = 3\n\ndef scale(x):\n    return SCALE * x\n\ndef fail():\n    return 1 / 0\n"


# -- the sandbox API ----------------------------------------------------------------
async def test_modules_import_by_name_as_read_only_namespaces() -> None:
    src = ("import helpers\nfrom helpers import scale\nimport helpers as again\n"
           "a = scale(2)\nb = helpers.SCALE\nsame = again is helpers\n"
           "try:\n    helpers.SCALE = 4\nexcept TypeError:\n    ro = True\n")
    r = await execute(src, limits=FAST, extras=Extras(modules={"helpers": HELPERS}))
    assert r.ok, r.error
    assert r.namespace == {"a": 6, "b": 3, "same": True, "ro": True}  # imported once per run
    extras = Extras(modules={"helpers": HELPERS})
    r = await execute("import helpers\nhelpers.fail()\n", limits=FAST, extras=extras)
    assert r.error == "ZeroDivisionError: division by zero (helpers.py line 7)"


async def test_a_module_that_breaks_the_rules_fails_the_run_even_unimported() -> None:
    r = await execute("x = 1\n", limits=FAST, extras=Extras(modules={"bad": "y = a.__dict__\n"}))
    assert not r.ok and r.error is not None and r.error.startswith("compile error: bad.py: Line 1:")
    r = await execute("import nothere\n", limits=FAST, extras=Extras(modules={"other": "z = 1\n"}))
    assert not r.ok and "available: datetime, json, math, other, random, re" in (r.error or "")
    for name in ("json", "_private", "not-a-name", "class"):
        with pytest.raises(SyscallError) as info:
            await execute("x = 1\n", limits=FAST, extras=Extras(modules={name: "z = 1\n"}))
        assert info.value.errno == Errno.EINVAL


async def test_uncaught_syscall_error_reports_its_errno() -> None:
    async def handler(name: str, args: dict[str, Any]) -> Any:
        raise SyscallError(Errno.ENOENT, f"no such file {args['path']}")

    async with Sandbox(size=1, limits=FAST) as sb:
        r = await sb.run("fs_read(path='/x')\n", syscalls=handler, syscall_names=["fs_read"])
        assert r.errno == "ENOENT" and r.error == "SyscallError: ENOENT: no such file /x (line 1)"
        r = await sb.run("raise SyscallError('EINVAL', 'usage: app X')\n")
        assert r.errno == "EINVAL" and "usage: app X" in (r.error or "")
        r = await sb.run("x = 1 / 0\n")
        assert r.errno is None and not r.ok
        r = await sb.run("try:\n    fs_read(path='/x')\nexcept SyscallError:\n    pass\n", syscalls=handler,
                         syscall_names=["fs_read"])
        assert r.ok and r.errno is None


async def test_echo_sends_each_print_as_a_write_syscall() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def handler(name: str, args: dict[str, Any]) -> Any:
        seen.append((name, args))
        return {}

    src = "print('one')\nx = sys_call('time')\nprint('two', end='')\n"
    r = await execute(src, limits=FAST, syscalls=handler, extras=Extras(echo=True))
    assert r.ok and r.stdout == "one\ntwo"
    assert seen == [("write", {"text": "one\n"}), ("time", {}), ("write", {"text": "two"})]


async def test_only_reports_the_named_result_and_refuses_non_json() -> None:
    extras = Extras(only=["result"])
    r = await execute("big = 'x' * 100\nresult = {'n': 1}\n", limits=FAST, extras=extras)
    assert r.ok and r.namespace == {"result": {"n": 1}}
    r = await execute("result = {1, 2}\n", limits=FAST, extras=extras)
    assert not r.ok and "top-level 'result' must be JSON data" in (r.error or "")
    r = await execute("x = 1\n", limits=FAST, extras=extras)
    assert r.ok and r.namespace == {}


async def test_helpers_need_a_worker_that_loaded_the_agent_loop() -> None:
    """Plain workers load no lmos code at all: asking for the helpers there is ENOSYS, catchably."""
    async with Sandbox(size=1, limits=FAST) as sb:
        src = ("try:\n    ask([{'role': 'user', 'content': 'hi'}])\n"
               "except SyscallError as e:\n    err = e.errno\n")
        r = await sb.run(src, extras=Extras(agent={}))
        assert r.ok and r.namespace["err"] == "ENOSYS"
        r = await sb.run("x = ask\n")
        assert not r.ok and "NameError" in (r.error or "")  # not even bound without Extras.agent
    async with Sandbox(size=1, limits=FAST, agent=True) as sb:
        assert sb.isolation is not None
        maps = Path(f"/proc/{sb.isolation.pid}/maps").read_text()
        assert "msgspec" in maps and "torch" not in maps
        if os.geteuid() == 0:
            assert sb.isolation.dropped_root


async def test_helper_syscalls_count_against_the_run() -> None:
    calls: list[str] = []

    async def handler(name: str, args: dict[str, Any]) -> Any:
        calls.append(name)
        if name == "chat_format":
            return {"format": "lmos", "text": ""}
        return {"text": "fine", "finish_reason": "stop", "tools": []}

    src = "a = ask([{'role': 'user', 'content': 'hi'}])\nb = ask([{'role': 'user', 'content': 'hi'}])\n"
    r = await execute(src, limits=FAST, syscalls=handler, extras=Extras(agent={}))
    assert r.ok and r.namespace["a"] == "fine" and r.syscalls == 4
    assert calls == ["chat_format", "llm_generate"] * 2
    r = await execute("while True:\n    ask([{'role': 'user', 'content': 'x'}])\n", limits=FAST,
                      syscalls=handler, extras=Extras(agent={}))
    assert not r.ok and "syscall limit" in (r.error or "")


# -- compile_check ----------------------------------------------------------------
def test_compile_check_names_the_file_and_line() -> None:
    compile_check({"main.py": "import helpers\nresult = helpers.f()\n",
                   "helpers.py": "def f():\n    return 1\n", "README.md": "not python"})
    cases = [
        ({"main.py": "x = 1\ny = x.__class__\n"}, 'main.py: line 2: "__class__" is an invalid attribute'),
        ({"main.py": "x = 1\n", "util.py": "def f(:\n"}, "util.py: line 1: SyntaxError"),
        ({"main.py": "x = 1\n", "json.py": "y = 1\n"}, "json.py: module name 'json' is reserved"),
        ({"main.py": "x = (" * 5000}, "main.py: line 1: SyntaxError: too many nested parentheses"),
    ]
    for files, why in cases:
        with pytest.raises(SyscallError) as info:
            compile_check(files)
        assert info.value.errno == Errno.EINVAL and info.value.message.startswith(why), info.value.message


def test_compile_check_survives_hostile_source_and_remembers_good_sets() -> None:
    """The compiler meets untrusted source only in a locked-down worker: absurd input is a refusal."""
    deep = "x = " + "+".join(["1"] * 300_000) + "\n"
    with pytest.raises(SyscallError) as info:
        compile_check({"main.py": deep})
    assert info.value.errno == Errno.EINVAL and "RecursionError" in info.value.message
    files = {"main.py": f"x = {os.getpid()}\n"}
    compile_check(files)
    assert len(codeapp._checked) >= 1
    compile_check(files)  # remembered: no second worker


# -- code apps in a kernel -------------------------------------------------------
TOML = """name = "probe"
version = "2.5"
description = "probe app"
system = "be brief"
tools = ["calc"]
capabilities = ["llm"]
max_steps = 3
temperature = 0.0
[entry]
kind = "code"
source = "main.py"
"""


async def install(k: lmos.Kernel, main: str, toml: str = TOML, **files: str) -> str:
    await k.syscall("app_install", files={"app.toml": toml, "main.py": main, **files}, grant=True, force=True)
    return str(parse_manifest(toml).name)


async def test_inputs_result_and_output_stream() -> None:
    async with kernel(ScriptedDriver("ok")) as k:
        app = await install(k, "print('hello', argv)\nresult = {'argv': argv, 'manifest': manifest}\n")
        pid = await k.spawn(app, ["a", "b c"])
        out = "".join([ev.text async for ev in k.stream(pid) if ev.kind == "output"])
        w = await k.wait(pid)
        assert out == "hello ['a', 'b c']\n"
        assert w.result == {"argv": ["a", "b c"], "manifest": {
            "name": "probe", "version": "2.5", "description": "probe app", "system": "be brief",
            "tools": ["calc"], "max_steps": 3, "temperature": 0.0}}
        app = await install(k, "print('no result')\n")
        assert (await k.wait(await k.spawn(app, []))).result is None


async def test_agent_helper_uses_the_manifest_tools_and_kernel_capabilities() -> None:
    async with kernel(ScriptedDriver(calc_model)) as k:
        app = await install(k, "result = agent([{'role': 'user', 'content': 'what is 2 + 2?'}])\n")
        w = await k.wait(await k.spawn(app, []))
        assert w.result["text"] == "The answer is 4." and w.result["calls"][0]["ok"]
        # The same program in an app not granted the calc tool: the kernel refuses the call,
        # and the agent loop sees the refusal as an observation.
        toml = TOML.replace('tools = ["calc"]', "tools = []").replace('"probe"', '"probe-nocalc"')
        main = "result = agent([{'role': 'user', 'content': 'what is 2 + 2?'}], tools=['calc'])\n"
        app = await install(k, main, toml)
        w = await k.wait(await k.spawn(app, []))
        call = w.result["calls"][0]
        assert call["tool"] == "calc" and not call["ok"] and "tool:calc" in call["result"]


@pytest.mark.parametrize(("main", "errno", "reason"), [
    ("fs_read(path='/etc/passwd')\n", Errno.EPERM, "fs_read needs capability"),
    ("raise SyscallError('EINVAL', 'usage: probe N')\n", Errno.EINVAL, "usage: probe N (line 1)"),
    ("raise SyscallError('EBOGUS', 'made up')\n", Errno.EIO, "SyscallError: EBOGUS: made up"),
    ("x = 1 / 0\n", Errno.EIO, "ZeroDivisionError: division by zero (line 1)"),
    ("exit(status=0)\n", Errno.ENOSYS, "a code app ends by finishing"),
    ("x = getattr(argv, '__cla' + 'ss__')\n", Errno.EPERM, "blocked by the sandbox: AttributeError"),
    ("while True:\n    pass\n", Errno.EDQUOT, "cpu time limit exceeded"),
])
async def test_failures_name_the_app_the_errno_and_the_reason(main: str, errno: Errno, reason: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codeapp, "LIMITS", Limits(cpu_seconds=1, wall_seconds=5))
    async with kernel(ScriptedDriver("ok")) as k:
        pid = await k.spawn(code_main(parse_manifest(TOML), {"main.py": main}), [])
        w = await k.wait(pid)
        assert w.errno == errno and w.error is not None
        assert w.error.startswith(f"{errno.name}: probe: ") and reason in w.error, w.error
        try:
            calls = [e.name for e in (await k.syscall("trace", pid=pid)).entries]
        except SyscallError as exc:  # it made no syscall at all
            assert exc.errno == Errno.ESRCH
            calls = []
        assert ("audit" in calls) == (errno == Errno.EPERM and "blocked" in reason)


async def test_killing_a_code_app_kills_its_sandbox_worker() -> None:
    from test_sandbox import _children

    before = _children()
    async with kernel(ScriptedDriver("ok")) as k:
        app = await install(k, "print('up')\nwhile True:\n    sleep(seconds=0.05)\n")
        pid = await k.spawn(app, [])
        async for ev in k.stream(pid):
            if ev.kind == "output":  # the worker is running the program
                break
        assert _children() - before, "the code app runs in a worker process"
        await k.kill(pid)
        w = await k.wait(pid)
        assert w.state == "killed"
        assert _children() - before == set()


async def test_a_syscall_error_the_app_raises_is_not_audited_as_a_violation() -> None:
    async with kernel(ScriptedDriver("ok")) as k:
        main = "raise SyscallError('EINVAL', 'that option is not allowed')\n"
        pid = await k.spawn(code_main(parse_manifest(TOML), {"main.py": main}), [])
        w = await k.wait(pid)
        assert w.errno == Errno.EINVAL and w.error == "EINVAL: probe: that option is not allowed (line 1)"
        # only the getpid that picks its uid's worker slot, and the time that seeds its clock
        trace = await k.syscall("trace", pid=pid)
        assert [e.name for e in trace.entries] == ["getpid", "time"]


async def test_a_code_app_reads_its_clock_and_random_seed_from_the_time_syscall() -> None:
    """Recovery by replay re-runs a code app to the same outputs: its time and randomness follow
    from a ``time`` syscall's result, which the journal holds (docs/durability.md)."""
    main = code_main(parse_manifest(TOML), {"main.py": (
        "import datetime, random\n"
        "result = [datetime.datetime.now().timestamp(), datetime.date.today().isoformat(),\n"
        "          random.random()]\n")})

    class FakeSys:
        def __init__(self, wall: float) -> None:
            self.wall = wall

        async def call(self, name: str, **payload: Any) -> Any:
            if name == "getpid":
                return type("R", (), {"uid": os.getuid(), "pid": 7, "ppid": 1})()
            assert name == "time"
            return {"wall": self.wall, "monotonic": 1.0}

    runs = [await main(FakeSys(w), []) for w in (1_700_000_000.5, 1_700_000_000.5, 1_800_000_000.0)]
    assert runs[0][0] == 1_700_000_000.5 and runs[2][0] == 1_800_000_000.0
    assert runs[0] == runs[1]  # the same syscall result, the same outputs
    assert runs[0][2] != runs[2][2]  # another instant, another seed
