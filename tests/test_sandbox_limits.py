"""Resource bombs end as failed results within budget while the event loop keeps serving.

Each bomb runs beside a heartbeat coroutine (it must keep ticking) and beside a
trivial program on the pool's other worker (it must finish promptly).  After
each bomb the pool must hand out a healthy worker.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from lmos.userland.sandbox import Limits, Result, Sandbox

pytestmark = pytest.mark.anyio
LIMITS = Limits(cpu_seconds=1, wall_seconds=8, memory_bytes=256 << 20, output_bytes=1 << 16, max_syscalls=4)
TICK = 0.02
MAX_GAP = 0.5  # generous: the CI machine is small and shared

_SWALLOW = ("while True:\n    try:\n        while True:\n            pass\n"
            "    except BaseException:\n        x = 1")
_GEN_FINALLY = ("def g():\n    try:\n        yield 1\n    finally:\n        while True:\n            pass\n"
                "x = g()\nnext(x)\n")
_DEEP = "a = []\nfor i in range(100000):\n    a = [a]\n"
_CLASS_HELD_GEN = ("class Holder:\n    pass\n" + _GEN_FINALLY.replace("x = g()\nnext(x)", "Holder.gen = g()\n"
                   "next(Holder.gen)"))

BOMBS = {
    "infinite_loop": ("while True:\n    pass", "cpu time limit exceeded"),
    "huge_power": ("x = 10**10**10", "cpu time limit exceeded"),  # one long C call: SIGXCPU
    "regex_backtracking": ("import re\nre.match('(a+)+$', 'a' * 40 + 'b')", "cpu time limit exceeded"),
    "swallows_base_exception": (_SWALLOW, "cpu time limit exceeded"),
    "generator_finally_after_run": (_GEN_FINALLY, "cpu time limit exceeded"),
    "generator_finally_held_by_class": (_CLASS_HELD_GEN, "cpu time limit exceeded"),
    "huge_allocation": ("x = bytearray(10**11)", "MemoryError"),
    "growing_allocation": ("keep = []\nwhile True:\n    keep.append(' ' * 10**6)", "MemoryError"),
    "huge_range_list": ("x = list(range(10**9))", "MemoryError"),
    "print_flood": ("while True:\n    print('x' * 1000)", "output limit exceeded"),
    "print_flood_swallowed": ("while True:\n    try:\n        print('x' * 999)\n    except BaseException:\n"
                              "        pass\n", "output limit exceeded"),
    "deep_recursion": ("def f(n):\n    return f(n + 1)\nf(0)", "RecursionError"),
    "deep_repr": (_DEEP + "s = repr(a)", "RecursionError"),
    "deep_json": (_DEEP + "s = json.dumps(a)", "RecursionError"),
    "compiler_deep_unary": ("x = " + "-" * 100000 + "1", "MemoryError"),
    "compiler_nested_parens": ("x = " + "(" * 1000 + ")" * 1000, "compile error"),
    "system_exit": ("raise SystemExit(0)", "SystemExit"),
    "keyboard_interrupt": ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    "exit_builtin": ("exit(0)", "NameError"),
    "os_exit": ("import os\nos._exit(0)", "compile error"),
    "os_abort": ("import os\nos.abort()", "ImportError"),
    "fork_via_import": ("from os import fork\nfork()", "ImportError"),
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[Sandbox]:
    async with Sandbox(size=2, limits=LIMITS) as sandbox:
        yield sandbox


async def _with_heartbeat(pool: Sandbox, source: str, limits: Limits = LIMITS) -> tuple[Result, list[float]]:
    ticks: list[float] = []
    result: list[Result] = []
    bystander: list[float] = []

    async def beat() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(TICK)

    async def bomb() -> None:
        result.append(await pool.run(source, limits=limits))

    async def trivial() -> None:
        await anyio.sleep(0.1)
        t0 = time.monotonic()
        res = await pool.run("ok = 1")
        assert res.ok
        bystander.append(time.monotonic() - t0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(beat)
        async with anyio.create_task_group() as work:
            work.start_soon(bomb)
            work.start_soon(trivial)
        tg.cancel_scope.cancel()
    ticks.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < MAX_GAP, f"event loop stalled for {max(gaps):.3f}s"
    assert bystander and bystander[0] < 2.0, "a trivial run waited behind the bomb"
    return result[0], gaps


@pytest.mark.parametrize("name", sorted(BOMBS))
async def test_bomb_fails_within_budget_and_loop_keeps_serving(pool: Sandbox, name: str) -> None:
    source, expected = BOMBS[name]
    t0 = time.monotonic()
    res, _ = await _with_heartbeat(pool, source)
    elapsed = time.monotonic() - t0
    assert not res.ok
    assert res.error is not None and expected in res.error, res.error
    assert "\n" not in res.error
    assert len(res.stdout.encode()) <= LIMITS.output_bytes
    assert res.cpu_seconds <= LIMITS.cpu_seconds + 1.5
    assert elapsed < LIMITS.wall_seconds + 2
    after = await pool.run("fine = 40 + 2")
    assert after.ok and after.namespace == {"fine": 42}, after.error


async def test_wall_clock_deadline_kills_the_process_group(pool: Sandbox) -> None:
    limits = Limits(cpu_seconds=1, wall_seconds=0.3, memory_bytes=LIMITS.memory_bytes)
    old = pool.isolation.pid if pool.isolation else None
    res, _ = await _with_heartbeat(pool, "while True:\n    pass", limits)
    assert not res.ok and res.error == "wall-clock limit exceeded (0.3s)"
    assert 0.3 <= res.wall_seconds < 1.5
    assert pool.isolation is not None and pool.isolation.pid != old  # a fresh worker replaced it
    assert (await pool.run("x = 1")).ok


async def test_cpu_bomb_namespace_is_empty_and_stdout_kept(pool: Sandbox) -> None:
    res = await pool.run("a = 1\nprint('started')\nwhile True:\n    pass")
    assert not res.ok and res.error == "cpu time limit exceeded (1s)"
    assert res.stdout == "started\n" and res.namespace == {}
    assert 0.8 <= res.cpu_seconds <= 2.5
