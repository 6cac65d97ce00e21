"""KV of blocked processes: keep, swap or drop, by policy; outputs are unchanged."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from kutil import Recorder, kernel

from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


def agent(block_s: float) -> Any:
    async def main(sys: Sys, argv: list[str]) -> list[str]:
        texts = []
        for r in range(3):
            out = await sys.llm_generate(f"{argv[0]} round {r}", max_tokens=64)
            texts.append(out.text)
            await sys.sleep(block_s)
        return texts

    return main


async def run_agents(policy: str, block_s: float, procs: int = 4, blocks: int = 40) -> tuple[Any, Recorder]:
    drv = Recorder(max_seqs=8, num_blocks=blocks, block_size=4, seconds_per_token=1e-3)
    async with kernel(drv, kv_policy=policy) as k:
        pids = [await k.spawn(agent(block_s), [f"agent{i}"]) for i in range(procs)]
        results = [(await k.wait(p)).result for p in pids]
        assert k.core is not None
        counts = dict(k.core.schedulers["default"].kv.counts)
    assert results == [[f"agent{i} round {r}" for r in range(3)] for i in range(procs)]
    assert drv.used == 0
    return counts, drv


async def test_keep_never_moves_blocked_kv() -> None:
    counts, _ = await run_agents("keep", 0.05)
    assert counts["swap"] == counts["drop"] == 0 and counts["keep"] > 0


@pytest.mark.parametrize("policy", ["swap", "drop"])
async def test_fixed_policies_move_blocked_kv(policy: str) -> None:
    counts, drv = await run_agents(policy, 0.05)
    assert counts[policy] == 4 * 3  # every block of every agent
    assert any(m[0] == ("swap_out" if policy == "swap" else "drop") for m in drv.moves)


async def test_adaptive_keeps_without_pressure_and_moves_long_blocks_under_pressure() -> None:
    counts, _ = await run_agents("adaptive", 0.05, blocks=100_000)  # a huge pool: no pressure
    assert counts["swap"] == counts["drop"] == 0
    counts, _ = await run_agents("adaptive", 0.3, procs=6, blocks=48)  # long blocks, small pool
    assert counts["swap"] + counts["drop"] > 0


async def test_adaptive_learns_blocking_time_per_syscall() -> None:
    drv = Recorder(num_blocks=1000)
    async with kernel(drv, kv_policy="adaptive") as k:
        async def sleeper(sys: Sys, argv: list[str]) -> None:
            await sys.llm_generate("x", max_tokens=2)
            for _ in range(3):
                await sys.sleep(0.02)

        await k.wait(await k.spawn(sleeper))
        assert k.core is not None
        learned = k.core.schedulers["default"].kv.expected["sleep"]
        assert 0.015 < learned < 0.2


async def test_interrupt_during_blocked_generation_is_eintr() -> None:
    async with kernel(Recorder("cycle")) as k:
        async def gen(sys: Sys, argv: list[str]) -> str:
            try:
                await sys.llm_generate("x", max_tokens=1_000_000)
            except Exception as e:
                return type(e).__name__ + ":" + str(e)
            return "done"

        pid = await k.spawn(gen)
        await anyio.sleep(0.02)
        await k.signal(pid, "INT")
        w = await k.wait(pid)
        assert w.result.startswith("SyscallError:EINTR")


async def test_waiting_admissions_that_fill_the_pool_do_not_deadlock() -> None:
    # Two agents keep their KV while they sleep; together they fill the pool, so when both
    # come back with new input neither fits unless one takes the other's blocks.
    drv = Recorder(max_seqs=8, num_blocks=18, block_size=4)
    async with kernel(drv, kv_policy="keep") as k:
        async def agent2(sys: Sys, argv: list[str]) -> list[str]:
            texts = []
            for r in range(2):
                texts.append((await sys.llm_generate(f"{argv[0]} {r} " + "x" * 10, max_tokens=64)).text)
                await sys.sleep(0.01)
            return texts

        with anyio.fail_after(20):
            pids = [await k.spawn(agent2, [f"a{i}"]) for i in range(2)]
            results = [(await k.wait(p)).result for p in pids]
    assert results == [[f"a{i} {r} " + "x" * 10 for r in range(2)] for i in range(2)]


def test_swap_comes_back_after_host_space_frees() -> None:
    """A failed swap (host space full) evicts by recompute only until swapped sequences return."""
    from lmos.drivers.scripted import ScriptedDriver
    from lmos.kernel.kvpolicy import KVAdvisor

    drv = ScriptedDriver()
    drv.add(1, [1, 2, 3], drv.default_sampling())
    kv = KVAdvisor(drv, "swap")
    kv.track(1)
    kv.track(2)
    kv.mark(2, "host")
    assert kv._pick(drv.cost(1)) == "swap"
    kv.swap_failed()
    assert not kv.swap_ok and kv._pick(drv.cost(1)) == "drop"
    kv.mark(2, "device")  # the swapped sequence came back: its host space is free
    assert kv.swap_ok and kv._pick(drv.cost(1)) == "swap"
