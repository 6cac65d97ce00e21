"""Init's children: orphans, per-uid limits before global ones, a reserved share per uid.

Attacks: a user makes many orphans (parents that exit without waiting) so
that zombies re-parented to init fill the process table and init's child
limit; two users fill the process table together to lock a third one out.
Orphans are reaped as they end and do not count against init, per-uid limits
apply first, and the last slots of the table are kept for users below their
reserved share, so the third user's work still runs.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio
ALICE, BOB, CAROL, DAVE = 1001, 1002, 1003, 1004


async def sleeper(sys: Sys, argv: list[str]) -> None:
    await sys.sleep(float(argv[0]) if argv else 60)


async def quick(sys: Sys, argv: list[str]) -> str:
    return "done"


async def abandoner(sys: Sys, argv: list[str]) -> int:
    """Spawn children and exit without waiting for any of them."""
    for _ in range(int(argv[0])):
        await sys.spawn("sleep", [argv[1]])
    return 0


async def test_orphans_do_not_fill_the_table_or_lock_out_spawn() -> None:
    async with kernel(max_procs=16, max_procs_per_uid=12) as k:
        assert k.core is not None
        for _ in range(20):  # 80 children abandoned in all: far more than the table
            w = await k.wait(await k.spawn(abandoner, ["4", "0"], caps=["spawn"], uid=ALICE))
            assert w.exit_status == 0, w.error
        with anyio.fail_after(5):
            while len(k.core.procs) > 1:  # every orphan ends and init reaps it
                await anyio.sleep(0.01)
        assert k.core.init.children == set()
        assert (await k.wait(await k.spawn(quick, uid=BOB))).result == "done"


async def test_live_orphans_do_not_count_against_inits_child_limit() -> None:
    async with kernel(max_procs=64, max_procs_per_uid=64) as k:
        assert k.core is not None
        k.core.init.max_children = 4  # a tight limit, to show that adopted orphans are not counted
        w = await k.wait(await k.spawn(abandoner, ["10", "0.5"], caps=["spawn"], uid=ALICE))
        assert w.exit_status == 0
        assert len(k.core.init.children) == 10  # ten live orphans, adopted
        pids = [await k.spawn(quick, uid=BOB) for _ in range(4)]  # init's own children still fit
        for pid in pids:
            assert (await k.wait(pid)).result == "done"
        with anyio.fail_after(5):
            while k.core.init.children:  # the orphans end and are reaped without anyone waiting
                await anyio.sleep(0.01)


async def test_per_uid_limit_comes_before_the_global_one() -> None:
    async with kernel(max_procs=8, max_procs_per_uid=3) as k:
        for _ in range(3):
            await k.spawn(sleeper, uid=ALICE)
        with pytest.raises(SyscallError) as ei:
            await k.spawn(sleeper, uid=ALICE)
        assert ei.value.errno is Errno.EAGAIN and f"uid {ALICE}" in ei.value.message
        assert (await k.wait(await k.spawn(quick, uid=BOB))).result == "done"


async def fill(k: Any, uid: int) -> list[int]:
    pids = []
    while True:
        try:
            pids.append(await k.spawn(sleeper, uid=uid))
        except SyscallError as e:
            assert e.errno is Errno.EAGAIN
            return pids


async def test_two_users_cannot_fill_the_table_against_a_third() -> None:
    async with kernel(max_procs=16, max_procs_per_uid=10, procs_reserve=4, procs_reserved_per_uid=2) as k:
        alice = await fill(k, ALICE)
        bob = await fill(k, BOB)
        assert len(alice) == 10 and len(bob) == 2  # bob stops where the reserved slots begin
        carol = [await k.spawn(quick, uid=CAROL) for _ in range(2)]  # a third user still gets its share
        for pid in carol:
            assert (await k.wait(pid)).result == "done"
        with pytest.raises(SyscallError) as ei:
            for _ in range(3):
                await k.spawn(sleeper, uid=CAROL)  # ... but not more than its share while the table is tight
        assert "share" in ei.value.message
        dave = await k.spawn(quick, uid=DAVE)
        assert (await k.wait(dave)).result == "done"


async def test_zombies_count_against_their_uid_until_reaped() -> None:
    async with kernel(max_procs=64, max_procs_per_uid=4) as k:
        async def hoarder(sys: Sys, argv: list[str]) -> Any:
            kids = []
            try:
                for _ in range(10):  # children end at once but are never waited for
                    kids.append(await sys.spawn("sleep", ["0"]))
                    await sys.sleep(0.01)
            except SyscallError as e:
                return [len(kids), e.errno.name]
            return [len(kids), "no limit"]

        w = await k.wait(await k.spawn(hoarder, caps=["spawn"], uid=ALICE))
        assert w.result == [3, "EAGAIN"]  # itself plus three zombies: the uid's four
        assert (await k.wait(await k.spawn(quick, uid=ALICE))).result == "done"  # all reaped with it
        assert (await k.wait(await k.spawn(quick, uid=BOB))).result == "done"
