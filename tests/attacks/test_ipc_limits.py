"""IPC floods: bytes per channel, bytes per uid and channels per uid are limited.

Attacks: a process fills a channel with large messages nobody reads, spreads
them over many channels, or opens channels until the kernel runs out.  It
gets EAGAIN (or blocks, as a full pipe does), the kernel holds no more than
the limits, and another user's channel keeps working.
"""

from __future__ import annotations

from typing import Any

import pytest
from kutil import kernel

from lmos.errors import SyscallError
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio
ALICE, BOB = 1001, 1002
KB = 1024


async def other_user_works(sys: Sys, argv: list[str]) -> Any:
    ch = await sys.chan_open("mine")
    await sys.send(ch, {"ok": "x" * 4 * KB})
    return (await sys.recv(ch, timeout=2))["ok"] == "x" * 4 * KB


async def flood_one(sys: Sys, argv: list[str]) -> dict[str, Any]:
    ch = await sys.chan_open("sink", capacity=1 << 20)
    sent = 0
    while True:
        try:
            await sys.send(ch, "y" * 10 * KB, timeout=0)
            sent += 1
        except SyscallError as e:
            return {"sent": sent, "errno": e.errno.name}


async def test_a_channel_holds_a_bounded_number_of_bytes() -> None:
    async with kernel(ipc_channel_bytes=64 * KB) as k:
        w = await k.wait(await k.spawn(flood_one, caps=["ipc"], uid=ALICE))
        assert w.result["errno"] == "EAGAIN" and 0 < w.result["sent"] <= 7, w.result
        assert (await k.wait(await k.spawn(other_user_works, caps=["ipc"], uid=BOB))).result is True
        assert k.core is not None and k.core.channels.queued.get(ALICE, 0) == 0  # freed with its last opener


async def test_a_full_channel_blocks_its_sender_and_a_timeout_ends_the_wait() -> None:
    async with kernel(ipc_channel_bytes=32 * KB) as k:
        async def writer(sys: Sys, argv: list[str]) -> list[str]:
            ch = await sys.chan_open("slow")
            out = []
            for _ in range(5):
                try:
                    await sys.send(ch, "z" * 10 * KB, timeout=0.05)
                    out.append("sent")
                except SyscallError as e:
                    out.append(e.errno.name)
            return out

        w = await k.wait(await k.spawn(writer, caps=["ipc"], uid=ALICE))
        assert w.result == ["sent", "sent", "sent", "ETIMEDOUT", "ETIMEDOUT"]


async def test_a_message_larger_than_the_channel_is_refused() -> None:
    async with kernel(ipc_channel_bytes=16 * KB) as k:
        async def big(sys: Sys, argv: list[str]) -> str:
            ch = await sys.chan_open("c")
            try:
                await sys.send(ch, "q" * 20 * KB)
            except SyscallError as e:
                return e.errno.name
            return "sent"

        assert (await k.wait(await k.spawn(big, caps=["ipc"], uid=ALICE))).result == "E2BIG"


async def test_bytes_are_limited_per_uid_over_all_its_channels() -> None:
    async with kernel(ipc_channel_bytes=64 * KB, ipc_bytes_per_uid=100 * KB) as k:
        async def spread(sys: Sys, argv: list[str]) -> dict[str, Any]:
            sent = 0
            for i in range(10):
                ch = await sys.chan_open(f"c{i}", capacity=1 << 20)
                while True:
                    try:
                        await sys.send(ch, "y" * 10 * KB, timeout=0)
                        sent += 1
                    except SyscallError as e:
                        if "bytes queued" in e.message:
                            return {"sent": sent, "errno": e.errno.name}
                        break  # this channel is full: try the next one
            return {"sent": sent, "errno": "none"}

        w = await k.wait(await k.spawn(spread, caps=["ipc"], uid=ALICE))
        assert w.result["errno"] == "EAGAIN" and w.result["sent"] <= 10, w.result
        assert (await k.wait(await k.spawn(other_user_works, caps=["ipc"], uid=BOB))).result is True


async def test_channels_per_uid_are_limited() -> None:
    async with kernel(ipc_channels_per_uid=4) as k:
        async def hoard(sys: Sys, argv: list[str]) -> Any:
            opened = []
            try:
                for i in range(100):
                    opened.append(await sys.chan_open(f"h{i}"))
            except SyscallError as e:
                first = e.errno.name
            else:
                return "no limit"
            await sys.chan_close(opened[0])  # closing one frees its slot
            again = await sys.chan_open("again")
            try:
                await sys.call("chan_open", name="p", private=True)
                private = "opened"
            except SyscallError as e:
                private = e.errno.name
            return [len(opened), first, again > 0, private]

        w = await k.wait(await k.spawn(hoard, caps=["ipc"], uid=ALICE))
        assert w.result == [4, "EAGAIN", True, "EAGAIN"], w.result
        assert (await k.wait(await k.spawn(other_user_works, caps=["ipc"], uid=BOB))).result is True
        assert k.core is not None and k.core.channels.count.get(ALICE, 0) == 0  # all freed at exit
