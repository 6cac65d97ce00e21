"""Children never exceed their parent: token quota, priority, weight, wall time, ``net:`` patterns.

Attacks: a process spawns children that ask for more than it has (a bigger
token quota, a better priority, more weight, no deadline, a wider ``net:``
pattern written so that it *matches the parent's pattern as text*).  Quota,
priority, weight and wall time are clamped to the parent's, and the children's
tokens are charged to the parent's quota, so many children together cannot
spend more than it.  A wider ``net:`` pattern is refused (EPERM).  Another
user's process runs to the end meanwhile.
"""

from __future__ import annotations

from typing import Any

import pytest
from kutil import kernel

from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.caps import subset
from lmos.syscalls.client import Sys
from lmos.syscalls.globs import within
from lmos.syscalls.table import AppSpec

pytestmark = pytest.mark.anyio
ALICE, BOB = 1001, 1002


async def bystander(sys: Sys, argv: list[str]) -> str:
    r = await sys.llm_generate("hello", max_tokens=20)
    return f"bystander got {len(r.token_ids)} tokens"


async def greedy_child(sys: Sys, argv: list[str]) -> int:
    total = 0
    for _ in range(10):
        try:
            total += len((await sys.llm_generate("go", max_tokens=64)).token_ids)
        except SyscallError as e:
            assert e.errno is Errno.EDQUOT
            break
    return total


async def test_children_together_cannot_spend_more_than_the_parents_token_quota() -> None:
    async with kernel(ScriptedDriver("cycle")) as k:
        k.programs.register(AppSpec("greedy", greedy_child, frozenset({"llm"})))
        other = await k.spawn(bystander, uid=BOB)

        async def parent(sys: Sys, argv: list[str]) -> dict[str, Any]:
            kids = [await sys.spawn("greedy", token_quota=1_000_000) for _ in range(4)]
            quotas = [k.core.procs[c].token_quota for c in kids] if k.core else []
            spent = [(await sys.wait(c)).result for c in kids]
            return {"quotas": quotas, "spent": spent}

        w = await k.wait(await k.spawn(parent, caps=["llm", "spawn"], token_quota=100, uid=ALICE))
        assert all(q is not None and q <= 100 for q in w.result["quotas"]), w.result
        assert sum(w.result["spent"]) <= 100, w.result  # four children, one budget
        assert sum(w.result["spent"]) > 0
        assert (await k.wait(other)).result.startswith("bystander got ")


async def test_an_apps_own_quota_cannot_be_raised_by_asking() -> None:
    async with kernel(ScriptedDriver("cycle")) as k:
        k.programs.register(AppSpec("capped", greedy_child, frozenset({"llm"}), token_quota=30))
        w = await k.wait(await k.spawn("capped", token_quota=10_000, uid=ALICE))
        assert 0 < w.result <= 30


async def test_priority_and_weight_are_clamped_to_the_parents() -> None:
    async with kernel() as k:
        async def parent(sys: Sys, argv: list[str]) -> tuple[int, float]:
            child = await sys.spawn("sleep", ["0"], priority=-20, weight=1000.0)
            p = k.core.procs[child] if k.core else None
            assert p is not None
            got = (p.priority, p.weight)
            await sys.wait(child)
            return got

        w = await k.wait(await k.spawn(parent, caps=["spawn"], priority=5, weight=0.5, uid=ALICE))
        assert tuple(w.result) == (5, 0.5)


async def test_a_child_cannot_outlive_its_parents_wall_time() -> None:
    async with kernel() as k:
        seen: dict[str, Any] = {}

        async def parent(sys: Sys, argv: list[str]) -> None:
            child = await sys.spawn("sleep", ["30"])
            seen["child"] = child
            await sys.wait(child)

        k.programs.register(AppSpec("walled", parent, frozenset({"spawn"}), wall_seconds=0.5))
        other = await k.spawn(bystander, uid=BOB)
        pid = await k.spawn("walled", uid=ALICE)
        assert k.core is not None
        deadline = k.core.procs[pid].deadline
        w = await k.wait(pid, timeout=10)
        assert w.errno == Errno.EDQUOT and "wall-time" in (w.error or "")
        assert w.usage.wall_seconds < 5
        child = k.core.procs.get(seen["child"])
        assert child is None or child.ended  # ended by the deadline it inherited, and reaped by init
        assert seen["child"] not in k.core.procs
        await k.core.journal.flush()
        rows = await k.core.journal.aquery("SELECT state, error FROM processes WHERE pid=?", (seen["child"],))
        assert rows and "wall-time" in (rows[0][1] or ""), rows
        assert deadline is not None
        assert (await k.wait(other)).result.startswith("bystander got ")


@pytest.mark.parametrize("held, asked", [
    ("net:?", "net:*"),  # '?' matches the one-character text '*'
    ("net:[*]", "net:*"),  # a class holding '*' matches the text '*'
    ("net:*.example.com", "net:*"),
    ("net:*.example.com", "net:*.com"),
    ("net:*.example.com", "net:*example.com"),  # would match evilexample.com
    ("net:api.example.com", "net:api.example.co?"),
    ("net:[ab].example.com", "net:[!a].example.com"),  # [!a] also matches c, d, ...
    ("net:?.example.com", "net:??.example.com"),
    ("net:a*", "net:[ab]*"),
    ("net:*x", "net:*x[y"),  # an unclosed bracket: not provable, refused
])
async def test_a_wider_net_pattern_is_refused(held: str, asked: str) -> None:
    assert subset([asked], [held]) == [asked]
    async with kernel() as k:
        async def parent(sys: Sys, argv: list[str]) -> str:
            try:
                await sys.spawn("sleep", ["0"], caps=[asked])
            except SyscallError as e:
                return e.errno.name
            return "granted"

        other = await k.spawn(bystander, uid=BOB)
        w = await k.wait(await k.spawn(parent, caps=["spawn", held], uid=ALICE))
        assert w.result == "EPERM"
        assert (await k.wait(other)).result.startswith("bystander got ")


@pytest.mark.parametrize("held, asked", [
    ("net:*.example.com", "net:api.example.com"),
    ("net:*.example.com", "net:*.api.example.com"),
    ("net:*.example.com", "net:?.example.com"),
    ("net:*.example.com", "net:[ab].example.com"),
    ("net:*", "net:*.anything.org"),
    ("net", "net:*"),
    ("net:API.Example.com", "net:api.example.COM"),
])
async def test_a_narrower_net_pattern_is_granted(held: str, asked: str) -> None:
    assert subset([asked], [held]) == []
    async with kernel() as k:
        async def parent(sys: Sys, argv: list[str]) -> int:
            return (await sys.wait(await sys.spawn("sleep", ["0"], caps=[asked]))).exit_status

        w = await k.wait(await k.spawn(parent, caps=["spawn", held], uid=ALICE))
        assert w.result == 0


def test_glob_containment_is_sound_on_a_small_alphabet() -> None:
    """Whenever ``within`` says yes, every short string the child matches, the parent matches."""
    import fnmatch
    import itertools

    alphabet = "ab.*?"
    patterns = ["".join(t) for n in range(4) for t in itertools.product(alphabet + "[", repeat=n)]
    strings = ["".join(t) for n in range(5) for t in itertools.product("ab.*?[", repeat=n)]
    for child in patterns[:400]:
        matched = [s for s in strings if fnmatch.fnmatchcase(s, child)]
        for parent in patterns[:400]:
            if within(child, parent):
                assert all(fnmatch.fnmatchcase(s, parent) for s in matched), (child, parent)
