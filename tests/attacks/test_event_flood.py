"""Event floods: a subscriber that does not read is dropped at its byte limit, never the kernel.

A process writes megabyte outputs as fast as it can while a subscriber holds
its stream without reading.  The kernel keeps at most the subscriber's byte
budget for it, ends that stream with an ``overflow`` marker, and the writer and
another user's process both finish.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.kernel.events import MAX_OWNER_BYTES, MAX_SUBSCRIBER_BYTES, EventBus
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio
MB = 1 << 20


async def flood(sys: Sys, argv: list[str]) -> Any:
    size = int(argv[1]) if len(argv) > 1 else MB
    for _ in range(int(argv[0])):
        await sys.call("write", text="x" * size)
    return "flooded"


async def test_a_subscriber_that_does_not_read_is_dropped_at_its_byte_limit() -> None:
    async with kernel() as k:
        assert k.core is not None
        bus = k.core.events
        pid = await k.spawn(flood, ["64"], uid=1001)
        stream = k.stream(pid)  # subscribed now; read only after the flood
        other = await k.spawn(flood, ["2"], uid=1002)
        assert (await k.wait(pid)).result == "flooded"
        assert 0 < bus.peak_held <= MAX_SUBSCRIBER_BYTES
        kinds = [ev.kind async for ev in stream]
        assert kinds[-1] == "overflow" and "exit" not in kinds
        assert kinds.count("output") * MB <= MAX_SUBSCRIBER_BYTES
        assert (await k.wait(other)).result == "flooded"


async def test_a_subscriber_within_its_budget_sees_everything() -> None:
    async with kernel() as k:
        pid = await k.spawn(flood, ["16", str(MAX_SUBSCRIBER_BYTES // 20)], uid=1001)
        kinds = [ev.kind async for ev in k.stream(pid)]
        assert kinds.count("output") == 16 and kinds[-1] == "exit"


def test_bytes_are_released_as_the_subscriber_reads() -> None:
    bus = EventBus(buffer=100, max_bytes=10_000)
    recv = bus.subscribe(7)
    for _ in range(3):
        bus.publish(7, kind="output", text="y" * 3000)
    assert 9000 < bus.held_bytes() <= 10_000
    for _ in range(3):
        recv.receive_nowait()
    assert bus.held_bytes() == 0
    for _ in range(3):  # room again: nothing dropped
        bus.publish(7, kind="output", text="y" * 3000)
    assert bus.dropped == 0
    bus.publish(7, kind="output", text="y" * 3000)  # over the budget: dropped with a marker
    assert bus.dropped == 1 and not bus.has(7)
    assert [recv.receive_nowait().kind for _ in range(4)] == ["output"] * 3 + ["overflow"]


def test_a_uids_subscribers_share_one_budget() -> None:
    bus = EventBus(buffer=100, max_bytes=10_000, max_owner_bytes=15_000)
    mine = [bus.subscribe(pid, owner=1001) for pid in (1, 2, 3)]
    theirs = bus.subscribe(4, owner=1002)
    for pid in (1, 2, 3, 4):
        bus.publish(pid, kind="output", text="z" * 6000)
    assert bus.by_owner == {1001: 12_192, 1002: 6096}  # the third of 1001's did not fit: dropped
    assert [bus.has(pid) for pid in (1, 2, 3, 4)] == [True, True, False, True]
    assert mine[2].receive_nowait().kind == "overflow"
    assert theirs.receive_nowait().kind == "output"


async def test_watching_many_flooders_cannot_multiply_the_limit() -> None:
    async with kernel() as k:
        assert k.core is not None
        bus = k.core.events
        gate = anyio.Event()

        async def flooder(sys: Sys, argv: list[str]) -> Any:
            await gate.wait()
            for _ in range(3):  # 3 MB each: within one subscriber's budget
                await sys.call("write", text="f" * MB)
            return "flooded"

        async def watcher(sys: Sys, argv: list[str]) -> Any:
            for pid in map(int, argv):  # subscribe, then never read again
                await sys.call("events", pid=pid, timeout=0)
            gate.set()
            await sys.call("sleep", seconds=60)

        pids = [await k.spawn(flooder, uid=1001) for _ in range(30)]  # 90 MB in all
        watch = await k.spawn(watcher, [str(p) for p in pids], caps=["proc"], uid=1001)
        assert [(await k.wait(pid)).result for pid in pids] == ["flooded"] * 30
        assert bus.peak_held <= MAX_OWNER_BYTES
        assert bus.dropped > 0, (bus.peak_held, bus.by_owner, len(bus.subs))
        await k.kill(watch)
        other = await k.spawn(flood, ["2"], uid=1002)
        assert (await k.wait(other)).result == "flooded"
