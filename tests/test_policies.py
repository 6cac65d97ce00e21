"""Scheduling policies: ordering, preemption at token boundaries, fairness, aging."""

from __future__ import annotations

import anyio
import pytest
from kutil import Recorder, kernel

from lmos.kernel.policies import make_policy
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


async def gen(sys: Sys, argv: list[str]) -> int:
    r = await sys.llm_generate("x", max_tokens=int(argv[0]))
    return len(r.token_ids)


def served(drv: Recorder) -> dict[int, int]:
    out: dict[int, int] = {}
    for step in drv.log:
        for sid, n in step:
            out[sid] = out.get(sid, 0) + n
    return out


async def run_until(drv: Recorder, total: int) -> None:
    with anyio.fail_after(20):
        while sum(served(drv).values()) < total:
            await anyio.sleep(0.005)


async def test_fifo_runs_in_arrival_order_without_preemption() -> None:
    drv = Recorder("cycle", max_seqs=1)
    async with kernel(drv, policy="fifo") as k:
        pids = [await k.spawn(gen, ["30"]) for _ in range(3)]
        for p in pids:
            await k.wait(p)
    order = [step[0][0] for step in drv.log]
    # each process runs to completion before the next begins (arrival order of the requests)
    firsts = sorted(set(order), key=order.index)
    assert sorted(firsts) == sorted(pids)
    assert order == [firsts[0]] * 30 + [firsts[1]] * 30 + [firsts[2]] * 30


async def test_round_robin_rotates_every_quantum() -> None:
    drv = Recorder("cycle", max_seqs=1)
    async with kernel(drv, policy="rr", quantum_tokens=4) as k:
        pids = [await k.spawn(gen, ["40"]) for _ in range(3)]
        for p in pids:
            await k.wait(p)
    order = [step[0][0] for step in drv.log]
    runs: list[tuple[int, int]] = []
    for pid in order:
        if runs and runs[-1][0] == pid:
            runs[-1] = (pid, runs[-1][1] + 1)
        else:
            runs.append((pid, 1))
    # every turn is one quantum (the first includes the prompt token), and turns rotate
    assert all(n <= 5 for _, n in runs)
    assert len(runs) >= 3 * 40 // 5
    first = [pid for pid, _ in runs[:3]]
    assert sorted(first) == sorted(pids)
    assert [pid for pid, _ in runs[3:9]] == first + first


async def test_priority_orders_and_preempts_at_token_boundary() -> None:
    drv = Recorder("cycle", max_seqs=1)
    async with kernel(drv, policy="priority", aging_per_second=0.0) as k:
        low = await k.spawn(gen, ["200"], priority=10)
        await run_until(drv, 10)
        high = await k.spawn(gen, ["20"], priority=-10)
        await k.wait(high)
        order = [step[0][0] for step in drv.log]
        first_high = order.index(high)
        # once the high-priority process arrived it ran every step until done: preemption
        assert order[first_high:first_high + 20] == [high] * 20
        assert low in order[:first_high]
        await k.kill(low)


async def test_priority_aging_prevents_starvation() -> None:
    drv = Recorder("cycle", max_seqs=1, step_delay=0.0005)
    async with kernel(drv, policy="priority", aging_per_second=200.0) as k:
        hogs = [await k.spawn(gen, ["1000000"], priority=-20) for _ in range(2)]
        starving = await k.spawn(gen, ["5"], priority=19)
        with anyio.fail_after(10):
            w = await k.wait(starving)  # finishes although better-priority work never ends
        assert w.result == 5
        for h in hogs:
            await k.kill(h)


@pytest.mark.parametrize("weights", [(1.0, 2.0, 4.0)])
async def test_fair_share_follows_weights(weights: tuple[float, float, float]) -> None:
    drv = Recorder("cycle", max_seqs=1)
    async with kernel(drv, policy="fair") as k:
        pids = [await k.spawn(gen, ["1000000"], weight=w) for w in weights]
        await run_until(drv, 7000)
        got = served(drv)
        for p in pids:
            await k.kill(p)
    total = sum(got[p] for p in pids)
    for p, w in zip(pids, weights, strict=True):
        share = got[p] / total
        want = w / sum(weights)
        assert abs(share - want) / want < 0.05, (share, want)


async def test_fair_share_with_batch_limit_below_runnable_count() -> None:
    # 12 processes in 3 weight classes, 4 slots per step: classes get 1:2:4 of the tokens.
    drv = Recorder("cycle", max_seqs=4)
    async with kernel(drv, policy="fair") as k:
        classes = {1.0: [], 2.0: [], 4.0: []}  # type: dict[float, list[int]]
        for w in classes:
            for _ in range(4):
                classes[w].append(await k.spawn(gen, ["1000000"], weight=w))
        await run_until(drv, 14000)
        got = served(drv)
        for pids in classes.values():
            for p in pids:
                await k.kill(p)
    per_class = {w: sum(got.get(p, 0) for p in pids) for w, pids in classes.items()}
    total = sum(per_class.values())
    for w, n in per_class.items():
        assert abs(n / total - w / 7.0) / (w / 7.0) < 0.05, per_class


async def test_chunked_prefill_does_not_stall_decodes() -> None:
    drv = Recorder("cycle", max_seqs=4, max_tokens=16)
    async with kernel(drv) as k:
        decoding = await k.spawn(gen, ["1000000"])
        await run_until(drv, 5)
        big = await k.complete("y" * 100, max_tokens=1)
        assert len(big.token_ids) == 1
        # every step after the long prompt arrived still decoded the running process
        steps_with_big = [s for s in drv.log if any(n > 1 for _, n in s)]
        assert len(steps_with_big) >= 100 // 16
        assert all(any(sid == decoding for sid, _ in s) for s in steps_with_big)
        assert all(sum(n for _, n in s) <= 16 for s in drv.log)
        await k.kill(decoding)


def test_unknown_policy() -> None:
    from lmos.errors import Errno, SyscallError

    with pytest.raises(SyscallError) as ei:
        make_policy("lottery")
    assert ei.value.errno is Errno.EINVAL
