"""Step placement: short CPU steps on the loop thread, long ones in a worker thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.drivers.base import StepPlan
from lmos.drivers.scripted import ScriptedDriver
from lmos.kernel.placement import StepPlacement

pytestmark = pytest.mark.anyio


def test_prediction_learns_step_and_token_costs() -> None:
    p = StepPlacement(0.05)
    assert p.inline(4, 4)  # nothing known yet: try the loop thread
    for _ in range(20):
        p.record(4, 4, 0.01, True)  # decode steps of 10 ms
    p.record(2, 1002, 0.51, True)  # a prefill step: 0.5 s over 1,000 extra tokens
    assert p.predict(4, 4) == pytest.approx(0.01, rel=0.01)
    assert p.predict(1, 1001) == pytest.approx(0.01 + 1000 * 0.0005, rel=0.01)
    assert p.inline(8, 8)
    assert not p.inline(1, 201)  # 0.11 s predicted: a worker thread
    assert not StepPlacement(0.0).inline(1, 1)  # 0 disables inline steps


class SlowCPU(ScriptedDriver):
    """A scripted driver that burns CPU per step (as a CPU model would) and logs its thread."""

    def __init__(self, busy_s: float, **kw: Any) -> None:
        super().__init__("cycle", **kw)
        self.busy_s = busy_s
        self.threads: list[int] = []

    def step(self, plan: StepPlan) -> dict[int, int | None]:
        self.threads.append(threading.get_ident())
        end = time.perf_counter() + self.busy_s
        while time.perf_counter() < end:
            pass
        return super().step(plan)


@pytest.mark.parametrize(("busy_s", "inline_expected"), [(0.001, True), (0.08, False)])
async def test_long_steps_leave_the_loop_thread(busy_s: float, inline_expected: bool) -> None:
    drv = SlowCPU(busy_s)
    loop_thread = threading.get_ident()
    async with kernel(drv, inline_step_ms=20) as k:
        await k.complete("hello", max_tokens=6, temperature=0)
    # the first prefill and the first decode run inline: nothing is known about their cost yet
    later = drv.threads[2:]
    assert later
    assert all((t == loop_thread) is inline_expected for t in later), drv.threads


async def test_loop_stays_responsive_during_long_steps() -> None:
    """With 100 ms steps, a timer on the loop still fires on time between and during steps."""
    drv = SlowCPU(0.1)
    async with kernel(drv, inline_step_ms=20) as k:
        lags: list[float] = []

        async def ticker() -> None:
            for _ in range(8):
                t = time.perf_counter()
                await anyio.sleep(0.01)
                lags.append(time.perf_counter() - t - 0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: k.complete("hello world", max_tokens=8))
            await anyio.sleep(0.25)  # past the first (inline) step
            tg.start_soon(ticker)
    assert max(lags) < 0.06, lags
