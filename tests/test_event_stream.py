"""Token events under batching: complete, in order, exit last; several subscribers; overflow.

The kernel queues a tick's token events per subscriber and wakes each waiting
reader at most once per tick (and less often while ticks are very short), so
these tests check what batching must not change: every token exactly once and
in order through ``Kernel.stream`` and the ``events`` syscall, the same sequence
for every subscriber of a process, a slow subscriber dropped alone, and fewer
wake-ups than tokens.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.drivers.scripted import ScriptedDriver
from lmos.kernel.events import EventBus
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


async def gen(sys: Sys, argv: list[str]) -> Any:
    r = await sys.llm_generate("go", max_tokens=int(argv[0]))
    return {"text": r.text, "ids": r.token_ids}


async def collect(stream: Any) -> list[Any]:
    return [ev async for ev in stream]


def check_complete(events: list[Any], result: dict[str, Any]) -> None:
    """Every token once, in order (ids and text both match the result), then exit, last."""
    toks = [ev for ev in events if ev.kind == "token"]
    assert [ev.token_id for ev in toks] == result["ids"]
    assert "".join(ev.text for ev in toks) == result["text"]
    assert events[-1].kind == "exit" and [ev.kind for ev in events].count("exit") == 1
    assert all(ev.kind != "overflow" for ev in events)


async def test_many_streamed_processes_get_every_token_in_order_exit_last() -> None:
    async with kernel(ScriptedDriver("cycle", max_seqs=64)) as k:
        streams: dict[int, list[Any]] = {}

        async def read(pid: int, stream: Any) -> None:
            streams[pid] = await collect(stream)

        async with anyio.create_task_group() as tg:
            for i in range(40):
                pid = await k.spawn(gen, [str(30 + i)])
                tg.start_soon(read, pid, k.stream(pid))  # subscribed at the call
        for pid, events in streams.items():
            w = await k.wait(pid)
            check_complete(events, w.result)
            assert len(w.result["ids"]) >= 30


async def test_several_subscribers_of_one_process_see_the_same_sequence() -> None:
    async with kernel(ScriptedDriver("cycle")) as k:
        pid = await k.spawn(gen, ["300"])
        streams = [k.stream(pid) for _ in range(3)]
        got: list[list[Any]] = [[], [], []]

        async def read(i: int) -> None:
            got[i] = await collect(streams[i])
            if i == 0:
                await anyio.sleep(0)  # one reader slower than the others: same events still

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(read, i)
        w = await k.wait(pid)
        for events in got:
            check_complete(events, w.result)
        assert got[0] == got[1] == got[2]


async def test_the_events_syscall_long_poll_returns_batches_in_order() -> None:
    async with kernel(ScriptedDriver("cycle")) as k:
        gate = anyio.Event()

        async def child(sys: Sys, argv: list[str]) -> Any:
            await gate.wait()
            return await gen(sys, argv)

        async def watcher(sys: Sys, argv: list[str]) -> Any:
            events: list[Any] = []
            calls = 0
            while True:
                r = await sys.call("events", pid=int(argv[0]), timeout=0 if not calls else 5)
                calls += 1
                gate.set()  # subscribed by the first call: now let the child generate
                events += r.events
                if r.ended:
                    break
            return {"events": [[e.kind, e.token_id, e.text] for e in events], "calls": calls}

        cpid = await k.spawn(child, ["200"])
        pid = await k.spawn(watcher, [str(cpid)], caps=["proc"])
        w, c = await k.wait(pid), await k.wait(cpid)
        evs = w.result["events"]
        assert [e[1] for e in evs if e[0] == "token"] == c.result["ids"]
        assert "".join(e[2] for e in evs if e[0] == "token") == c.result["text"]
        assert len(c.result["ids"]) == 200 and evs[-1][0] == "exit"
        assert w.result["calls"] < 100, w.result["calls"]  # batches, not a call per token


async def test_readers_wake_less_than_once_per_token() -> None:
    async with kernel(ScriptedDriver("cycle", max_seqs=8)) as k:
        assert k.core is not None
        bus = k.core.events
        pids = [await k.spawn(gen, ["400"]) for _ in range(4)]
        streams = [k.stream(pid) for pid in pids]
        got: list[list[Any]] = []
        async with anyio.create_task_group() as tg:
            for s in streams:
                async def read(s: Any = s) -> None:
                    got.append(await collect(s))
                tg.start_soon(read)
        tokens = sum(1 for events in got for ev in events if ev.kind == "token")
        assert tokens == 4 * 400
        assert bus.wakeups <= tokens // 2, (bus.wakeups, tokens)  # several tokens per wake-up


async def test_slow_ticks_deliver_each_token_at_its_tick() -> None:
    # A tick longer than the flush interval (a real model's) wakes the reader every tick:
    # batching adds no latency there.
    async with kernel(ScriptedDriver("cycle", step_delay=0.02)) as k:
        assert k.core is not None
        pid = await k.spawn(gen, ["8"])
        k.stream(pid)
        sub = k.core.events.subs[pid][-1]  # read its queue directly, batch by batch
        sizes: list[int] = []
        while batch := await sub.batch():
            sizes.append(sum(ev.kind == "token" for ev in batch))
        assert sum(sizes) == 8 and max(sizes) <= 2, sizes


async def test_overflow_drops_only_the_slow_subscriber() -> None:
    async with kernel(ScriptedDriver("cycle")) as k:
        assert k.core is not None
        bus = k.core.events
        bus.buffer = 50  # events a subscriber may have waiting
        pid = await k.spawn(gen, ["300"])
        slow = k.stream(pid)  # never read until the process has ended
        fast = k.stream(pid)
        events = await collect(fast)
        w = await k.wait(pid)
        check_complete(events, w.result)
        late = await collect(slow)
        assert [ev.kind for ev in late] == ["token"] * 50 + ["overflow"]
        assert [ev.token_id for ev in late[:50]] == w.result["ids"][:50]
        assert bus.dropped == 1 and bus.held_bytes() == 0


def test_drain_takes_a_batch_and_releases_its_bytes() -> None:
    bus = EventBus(buffer=100, max_bytes=10_000, max_owner_bytes=20_000)
    sub = bus.subscribe(5, owner=1001)
    for i in range(10):
        bus.token(5, 97 + i, chr(97 + i), 0.0)
    assert bus.by_owner == {1001: 10 * 97}
    first = sub.drain(4)
    assert [ev.text for ev in first] == list("abcd") and bus.held_bytes() == 6 * 97
    bus.close(5)
    rest = sub.drain()
    assert [ev.text for ev in rest] == list("efghij")
    assert bus.held_bytes() == 0 and bus.by_owner == {} and sub.ended and not bus.has(5)


def test_a_dropped_reader_releases_its_uids_budget() -> None:
    bus = EventBus(buffer=100, max_bytes=10_000, max_owner_bytes=20_000)
    sub = bus.subscribe(5, owner=1001)
    bus.publish(5, kind="output", text="x" * 5000)
    bus.close(5)
    assert bus.by_owner == {1001: 5096}
    del sub  # never read nor closed: collected, its bytes come back
    assert bus.by_owner == {} and bus.held_bytes() == 0


async def test_a_long_poll_that_times_out_leaves_no_waiter_behind() -> None:
    bus = EventBus()
    sub = bus.subscribe(9)
    for _ in range(50):
        with anyio.move_on_after(0.001):
            await sub.wait()
    assert sub._waiters == []  # an idle process polled for hours must not grow a list
    bus.token(9, 97, "a", 0.0)
    bus.flush(force=True)
    assert [ev.text for ev in await sub.batch()] == ["a"]
