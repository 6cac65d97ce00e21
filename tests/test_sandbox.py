"""The sandbox from the host's side: results, inputs, syscalls, pool hygiene and worker isolation.

Every async test runs under asyncio and trio (see conftest).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from lmos.errors import Errno, SyscallError
from lmos.userland.sandbox import Extras, Limits, Result, Sandbox, _Run, _Worker, execute, violation

pytestmark = pytest.mark.anyio
FAST = Limits(cpu_seconds=2, wall_seconds=5, memory_bytes=256 << 20, output_bytes=1 << 16, max_syscalls=8)


def _children() -> set[int]:
    """Live child processes of this test process."""
    me = str(os.getpid())
    out = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == me and not fields.get("State", "").startswith("Z"):
            out.add(int(status.parent.name))
    return out


async def test_result_reports_output_namespace_and_costs() -> None:
    src = "x = 1 + 2\nprint('hi', x)\nt = (1, [2, 3])\nf = lambda: 1\ns = {1, 2}\n"
    res = await execute(src, limits=FAST)
    assert isinstance(res, Result)
    assert res.ok and res.error is None
    assert res.stdout == "hi 3\n"
    assert res.namespace == {"x": 3, "t": [1, [2, 3]]}  # tuples become lists, functions and sets dropped
    assert 0 <= res.cpu_seconds < 1 and 0 < res.wall_seconds < 5 and res.syscalls == 0


async def test_failure_is_a_one_line_result_keeping_earlier_names() -> None:
    res = await execute("a = 1\nb = 'two'\nprint('before')\nc = 1 / 0\nd = 4\n", limits=FAST)
    assert not res.ok
    assert res.error == "ZeroDivisionError: division by zero (line 4)"
    assert res.stdout == "before\n" and res.namespace == {"a": 1, "b": "two"}
    bad = await execute("def f(:\n    pass", limits=FAST)
    assert not bad.ok and bad.error is not None
    assert bad.error.startswith("compile error:") and "\n" not in bad.error


async def test_inputs_are_bound_and_bad_arguments_are_rejected() -> None:
    async with Sandbox(size=1, limits=FAST) as sb:
        inputs = {"values": [1, 2, 3], "offset": {"k": 10}}
        res = await sb.run("total = sum(values) + offset['k']", inputs=inputs)
        assert res.ok and res.namespace["total"] == 16
        for kwargs in ({"inputs": {"x": object()}}, {"inputs": {"_private": 1}}, {"inputs": {"not valid": 1}},
                       {"syscall_names": ["_x"]}, {"limits": Limits(cpu_seconds=60)}):
            with pytest.raises(SyscallError) as info:
                await sb.run("x = 1", **kwargs)
            assert info.value.errno == Errno.EINVAL
        with pytest.raises(SyscallError):
            await sb.run(b"x = 1")  # type: ignore[arg-type]
    with pytest.raises(SyscallError):
        await sb.run("x = 1")  # closed
    with pytest.raises(SyscallError):
        Limits(cpu_seconds=0)


async def test_syscalls_travel_to_the_host_and_errors_come_back() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def handler(name: str, args: dict[str, Any]) -> Any:
        seen.append((name, args))
        if name == "fs_read":
            raise SyscallError(Errno.EACCES, "no such capability")
        if name == "broken":
            raise RuntimeError("handler bug")
        if name == "opaque":
            return object()
        return {"text": args["prompt"].upper(), "n": args.get("max_tokens")}

    src = (
        "out = llm_generate(prompt='hi', max_tokens=8)\n"
        "try:\n    fs_read(path='/etc/passwd')\nexcept SyscallError as e:\n"
        "    denied = [e.errno, e.code, e.message]\n"
        "try:\n    broken()\nexcept SyscallError as e:\n    bug = e.errno\n"
        "try:\n    opaque()\nexcept SyscallError as e:\n    opq = e.errno\n"
        "try:\n    sys_call('spawn')\nexcept SyscallError as e:\n    hidden = e.errno\n"
        "try:\n    llm_generate(prompt=object())\nexcept TypeError:\n    typed = True\n"
    )
    names = ["llm_generate", "fs_read", "broken", "opaque"]
    res = await execute(src, limits=FAST, syscalls=handler, syscall_names=names)
    assert res.ok, res.error
    assert res.namespace["out"] == {"text": "HI", "n": 8}
    assert res.namespace["denied"] == ["EACCES", 13, "no such capability"]
    assert res.namespace["bug"] == "EIO" and res.namespace["opq"] == "EFAULT"
    assert res.namespace["hidden"] == "ENOSYS" and res.namespace["typed"] is True
    assert [n for n, _ in seen] == ["llm_generate", "fs_read", "broken", "opaque"]
    assert res.syscalls == 4


async def test_syscall_waits_do_not_count_against_the_wall_clock() -> None:
    async def slow(name: str, args: dict[str, Any]) -> Any:
        await anyio.sleep(0.4)
        return args["v"]

    limits = Limits(cpu_seconds=1, wall_seconds=0.5, memory_bytes=256 << 20)
    res = await execute("a = sys_call('x', v=1) + sys_call('x', v=2)", limits=limits, syscalls=slow)
    assert res.ok, res.error
    assert res.namespace["a"] == 3 and res.syscall_seconds >= 0.8 and res.wall_seconds >= 0.8
    assert res.cpu_seconds < 0.5


async def test_syscall_count_limit_fails_the_run() -> None:
    async def ok(name: str, args: dict[str, Any]) -> Any:
        return 1

    res = await execute("n = 0\nfor i in range(20):\n    n += sys_call('x')\n", limits=FAST, syscalls=ok)
    assert not res.ok and res.error == "syscall limit exceeded (8)" and res.syscalls == 8
    assert res.namespace == {"n": 8, "i": 8}
    # A program that swallows the error and keeps calling is ended outright.
    src = "while True:\n    try:\n        sys_call('x')\n    except SyscallError:\n        pass\n"
    res = await execute(src, limits=FAST, syscalls=ok)
    assert not res.ok and res.error == "syscall limit exceeded (8)"


async def test_state_does_not_leak_between_runs() -> None:
    async with Sandbox(size=1, limits=FAST) as sb:
        pid = sb.isolation.pid if sb.isolation else None
        first = await sb.run(
            "secret = 'run-one'\nimport random\nr1 = random.random()\n"
            "try:\n    math.pi = 3\nexcept TypeError:\n    pass\n"
            "class Keep:\n    pass\nKeep.flag = 1\n",
            seed=1,
        )
        assert first.ok, first.error
        second = await sb.run(
            "import random\nr2 = random.random()\npi = math.pi\n"
            "try:\n    leaked = secret\nexcept NameError:\n    leaked = None\n"
            "try:\n    Keep\n    kept = True\nexcept NameError:\n    kept = False\n",
            seed=1,
        )
        assert second.ok, second.error
        assert second.namespace["leaked"] is None and second.namespace["kept"] is False
        assert second.namespace["pi"] == 3.141592653589793
        assert second.namespace["r2"] == first.namespace["r1"]  # per-run seeding, not one shared stream
        assert sb.isolation is not None and sb.isolation.pid == pid  # same warm worker served both


async def test_execute_leaves_no_worker_behind() -> None:
    before = _children()
    res = await execute("x = 1", limits=FAST)
    assert res.ok
    bomb = await execute("while True:\n    pass", limits=Limits(cpu_seconds=0.3, wall_seconds=5))
    assert not bomb.ok
    assert _children() - before == set()


async def test_cancelled_run_kills_the_worker_and_pool_recovers() -> None:
    async with Sandbox(size=1, limits=FAST) as sb:
        old = sb.isolation.pid if sb.isolation else None
        with anyio.move_on_after(0.3):
            await sb.run("while True:\n    pass")
        res = await sb.run("x = 2")
        assert res.ok and res.namespace == {"x": 2}
        assert sb.isolation is not None and sb.isolation.pid != old
        assert old is not None and not Path(f"/proc/{old}").exists()


async def test_concurrent_runs_share_the_pool() -> None:
    async with Sandbox(size=2, limits=FAST) as sb:
        results: list[Result] = []

        async def one(i: int) -> None:
            results.append(await sb.run("y = x * 2", inputs={"x": i}))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)
        assert sorted(r.namespace["y"] for r in results) == [0, 2, 4, 6, 8, 10]


async def test_worker_is_isolated() -> None:
    """Inspect a live worker from the host through /proc."""
    async with Sandbox(size=1, limits=FAST) as sb:
        info = sb.isolation
        assert info is not None and info.no_new_privs
        assert info.wall in ("landlock", "mountns", "none") and info.weak == (info.wall == "none")
        proc = Path(f"/proc/{info.pid}")
        status = proc.joinpath("status").read_text()
        assert "NoNewPrivs:\t1" in status
        if os.geteuid() == 0:
            assert info.dropped_root and info.uid == 65534
            assert "Uid:\t65534\t65534\t65534\t65534" in status
        limits = proc.joinpath("limits").read_text()
        rows = {line[:26].strip(): line[26:].split() for line in limits.splitlines()[1:]}
        assert rows["Max processes"][:2] == ["0", "0"]
        assert rows["Max file size"][:2] == ["0", "0"]
        assert rows["Max core file size"][:2] == ["0", "0"]
        assert rows["Max open files"][:2] == ["16", "16"]
        assert rows["Max address space"][1] == str(FAST.memory_bytes)
        assert rows["Max cpu time"][1] != "unlimited"
        assert proc.joinpath("environ").read_bytes() == b""
        cmdline = proc.joinpath("cmdline").read_bytes().split(b"\0")
        assert b"-I" in cmdline and cmdline[cmdline.index(b"-I") + 2] == b"-B"
        assert os.getpgid(info.pid) == info.pid  # its own process group, killed as a whole
        maps = proc.joinpath("maps").read_text()
        assert "torch" not in maps and "msgspec" not in maps
        if info.netns:
            assert os.readlink(proc / "ns" / "net") != os.readlink("/proc/self/ns/net")


HOSTILE = {
    "garbage": "import sys\nsys.stdout.write('not json\\n')\nsys.stdout.flush()\nimport time\ntime.sleep(30)",
    "wrong_shape": "import sys\nsys.stdout.write('{\"op\": \"result\", \"ok\": \"yes\"}\\n')\n"
                   "sys.stdout.flush()\nimport time\ntime.sleep(30)",
    "silent": "import time\ntime.sleep(30)",
    # Asks for a syscall, then never reads the (large) reply: the host's send must not hang.
    "stops_reading": "import sys, time\nsys.stdout.write('{\"syscall\": \"big\", \"args\": {}}\\n')\n"
                     "sys.stdout.flush()\ntime.sleep(30)",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_host_survives_a_hostile_worker(kind: str) -> None:
    """A worker is untrusted once it has run untrusted code: bad messages, silence and
    back-pressure end the run within its wall budget, and the process is killed."""

    async def big(name: str, args: dict[str, Any]) -> Any:
        return "x" * (4 << 20)

    process = await anyio.open_process([sys.executable, "-c", HOSTILE[kind]], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
    worker = _Worker(process)
    limits = Limits(cpu_seconds=1, wall_seconds=0.5, memory_bytes=256 << 20)
    with anyio.fail_after(5):
        result, reusable = await _Run(worker, b'{"op": "run"}\n', limits, big, None).drive()
    assert not result.ok and not reusable
    expected = {"garbage": "protocol error", "wrong_shape": "protocol error",
                "silent": "wall-clock limit exceeded", "stops_reading": "wall-clock limit exceeded"}[kind]
    assert result.error is not None and expected in result.error
    assert process.returncode is not None  # killed and reaped


async def test_dates_format_and_parse_but_time_stays_out_of_reach() -> None:
    """datetime's C code imports ``time`` and ``_strptime`` for itself; the program still cannot."""
    src = (
        "import datetime\n"
        "d = datetime.datetime(2024, 2, 29, 13, 5)\n"
        "a = d.strftime('%Y-%m-%d %H:%M %A')\n"
        "b = f'{d:%d/%m/%y}' + format(d.date(), ' %j')\n"
        "c = datetime.datetime.strptime('2024-03-01 07:08', '%Y-%m-%d %H:%M').isoformat()\n"
        "t = list(d.timetuple())[:6]\n"
    )
    res = await execute(src, limits=FAST)
    assert res.ok, res.error
    assert res.namespace == {"a": "2024-02-29 13:05 Thursday", "b": "29/02/24 060",
                             "c": "2024-03-01T07:08:00", "t": [2024, 2, 29, 13, 5, 0]}
    for attempt in ("import time", "from time import sleep", "import _strptime", "import time as t"):
        bad = await execute(attempt, limits=FAST)
        assert violation(bad), (attempt, bad.error)


async def test_lone_surrogates_never_lose_the_result() -> None:
    """A str that is not Unicode text (``chr(0xD800)``) cannot cross the wire as JSON: it is
    refused where it is made into a result or a syscall, and the rest of the run comes back."""
    seen: list[dict[str, Any]] = []

    async def handler(name: str, args: dict[str, Any]) -> Any:
        seen.append(args)
        return "ok"

    src = ("bad = chr(0xD800)\nkeyed = {chr(0xDC00): 1}\nnested = [1, {'k': 'a' + chr(0xD800)}]\n"
           "good = 'caf\u00e9'\n"
           "try:\n    sys_call('echo', text=bad)\nexcept TypeError as e:\n    arg_error = str(e)\n"
           "try:\n    sys_call(bad)\nexcept SyscallError as e:\n    name_error = e.errno\n"
           "print('printed', bad)\n")
    res = await execute(src, limits=FAST, syscalls=handler)
    assert res.ok, res.error
    assert res.namespace == {"good": "caf\u00e9", "arg_error": "syscall arguments must be JSON values "
                             "(str with a lone surrogate is not text)", "name_error": "ENOSYS"}
    assert res.stdout.startswith("printed ") and seen == []
    only = await execute("result = chr(0xD800)", limits=FAST, extras=Extras(only=["result"]))
    assert not only.ok and only.error is not None and "lone surrogate" in only.error
