"""Store quotas: one per-uid budget covers files, kv values and context-memory pages.

Attacks: fill the store through each kind in turn, and through context pages
left behind by a process that exits (pages outlive their process).  Each past
the budget is refused with EDQUOT and a message that says what the quota
covers, while another user stores as much as before; deleting gives bytes back.
"""

from __future__ import annotations

from typing import Any

import pytest
from kutil import kernel

import lmos
from lmos.errors import SyscallError
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio
KB = 1 << 10
QUOTA = 2 << 20
CAPS = ["fs.read", "fs.write", "kv", "mem"]


def script(*calls: tuple[str, dict[str, Any]]) -> Any:
    async def prog(sys: Sys, argv: list[str]) -> Any:
        out: list[str] = []
        for name, args in calls:
            try:
                await sys.call(name, **args)
                out.append("ok")
            except SyscallError as e:
                out.append(e.errno.name)
                if e.errno.name == "EDQUOT":
                    assert "quota" in e.message and "files, kv values and context pages" in e.message
        return out

    return prog


async def run(k: lmos.Kernel, uid: int, *calls: tuple[str, dict[str, Any]]) -> list[str]:
    w = await k.wait(await k.spawn(script(*calls), caps=CAPS, uid=uid))
    assert w.exit_status == 0, w.error
    return list(w.result)


def fill() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("fs_write", {"path": "/a", "data": "a" * (1000 * KB)}),
        ("fs_write", {"path": "/b", "data": "b" * (950 * KB)}),
        ("kv_set", {"key": "k1", "value": "v" * (60 * KB)}),  # 2010 of 2048 KB in use now
        ("kv_set", {"key": "k2", "value": "v" * (60 * KB)}),
        ("mem_append", {"text": "m" * (20 * KB)}),
        ("fs_write", {"path": "/c", "data": "c" * (100 * KB)}),
        ("fs_write", {"path": "/a", "data": "a" * (1000 * KB), "mode": "append"}),
    ]


async def approve(req: Any) -> bool:
    return True  # deletes ask for confirmation; the user says yes


async def test_files_kv_and_pages_share_one_quota_per_uid() -> None:
    async with kernel(confirm=approve) as k:
        assert k.core is not None
        k.core.files.quota.limit = QUOTA
        assert await run(k, 1001, *fill()) == ["ok", "ok", "ok", "EDQUOT", "EDQUOT", "EDQUOT", "EFBIG"]
        # another user is untouched by the first one's use
        assert await run(k, 1002, *fill()[:3], ("mem_append", {"text": "m" * (5 * KB)})) == ["ok"] * 4
        # deleting gives the bytes back
        assert await run(k, 1001, ("fs_delete", {"path": "/a"}), ("kv_delete", {"key": "k1"}),
                         ("mem_append", {"text": "m" * (150 * KB)}),
                         ("kv_set", {"key": "k2", "value": "v" * (60 * KB)})) == ["ok"] * 4


async def test_pages_left_by_exited_processes_still_count() -> None:
    # Pages of ended processes are deleted by default (and their bytes given back, see
    # test_pages_of_ended_processes_are_given_back); kept for replay, they must still count.
    async with kernel(keep_ended_pages=True) as k:
        assert k.core is not None
        k.core.files.quota.limit = QUOTA
        for _ in range(3):  # each process pages out ~500 KB of context and exits
            assert await run(k, 1001, ("mem_append", {"text": "p" * (100 * KB)})) == ["ok"]
        # 3 x (4 bytes per token + 1 per character) x 100 KB = 1.5 MB already stored
        assert await run(k, 1001, ("fs_write", {"path": "/x", "data": "x" * (600 * KB)}),
                         ("mem_append", {"text": "p" * (200 * KB)}),
                         ("fs_write", {"path": "/y", "data": "y" * (400 * KB)})) == ["EDQUOT", "EDQUOT", "ok"]
        assert await run(k, 1002, ("fs_write", {"path": "/x", "data": "x" * (1000 * KB)})) == ["ok"]


async def test_pages_of_ended_processes_are_given_back() -> None:
    async with kernel() as k:
        assert k.core is not None
        k.core.files.quota.limit = QUOTA
        for _ in range(6):  # 6 x ~500 KB of context, over the 2 MB quota were it kept
            assert await run(k, 1001, ("mem_append", {"text": "p" * (100 * KB)})) == ["ok"]
        assert await run(k, 1001, ("fs_write", {"path": "/x", "data": "x" * (1000 * KB)})) == ["ok"]
