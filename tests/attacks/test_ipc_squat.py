"""IPC names cannot be squatted.

Attacks: another user pre-creates the channel name a program is about to use
(to deny it, or to read and forge what goes through it); a process of the
*same* user learns a private channel's name (from ``ps``: it is in the
workers' argv) and opens it, or pre-creates it as a named channel.  Names are
per uid, and a private channel opens only for its creator's tree, so each
attack is refused and the real exchange (``team``, ``pipeline``) completes.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import SyscallError
from lmos.syscalls.client import Sys
from lmos.taskprompts import TEAM_PLAN_SYSTEM

pytestmark = pytest.mark.anyio
ALICE, BOB = 1001, 1002


async def test_another_user_cannot_squat_or_read_a_channel_name() -> None:
    async with kernel() as k:
        squatted = anyio.Event()

        async def squatter(sys: Sys, argv: list[str]) -> Any:
            ch = await sys.chan_open("results")
            await sys.send(ch, {"answer": "forged"})
            squatted.set()
            try:
                return await sys.recv(ch, timeout=0.5)  # hoping to read the victim's message
            except SyscallError as e:
                return e.errno.name

        async def victim(sys: Sys, argv: list[str]) -> Any:
            await squatted.wait()
            ch = await sys.chan_open("results")  # the same name: its own channel, not the squatter's
            await sys.send(ch, {"answer": "real"})
            return await sys.recv(ch, timeout=1)

        bob = await k.spawn(squatter, uid=BOB)
        alice = await k.spawn(victim, uid=ALICE)
        assert (await k.wait(alice)).result == {"answer": "real"}
        assert (await k.wait(bob)).result == {"answer": "forged"}  # it only ever read its own


async def test_a_private_channel_opens_only_for_its_creators_tree() -> None:
    async with kernel() as k:
        name: dict[str, str] = {}
        ready = anyio.Event()

        async def owner(sys: Sys, argv: list[str]) -> Any:
            r = await sys.call("chan_open", name="answers", capacity=4, private=True)
            name["n"] = r.name
            ready.set()
            await sys.send(r.chan, "for my children only")
            await sys.sleep(0.3)
            return r.name

        async def intruder(sys: Sys, argv: list[str]) -> list[str]:
            await ready.wait()
            out = []
            for kw in ({"name": name["n"]}, {"name": name["n"], "capacity": 1}):
                try:
                    await sys.call("chan_open", **kw)
                    out.append("opened")
                except SyscallError as e:
                    out.append(e.errno.name)
            return out

        o = await k.spawn(owner, caps=["ipc", "spawn"], uid=ALICE)
        same_user = await k.spawn(intruder, caps=["ipc", "proc"], uid=ALICE)
        other_user = await k.spawn(intruder, caps=["ipc", "proc"], uid=BOB)
        assert (await k.wait(same_user)).result == ["EACCES", "EACCES"]
        assert (await k.wait(other_user)).result == ["EACCES", "EACCES"]
        w = await k.wait(o)
        assert w.exit_status == 0 and re.fullmatch(r"answers\.[0-9a-f]{24}", w.result)


def model(window: str) -> str:
    if TEAM_PLAN_SYSTEM in window:
        return "1. what is 2 + 3?\n2. what is 4 * 5?"
    if "Combine the results" in window:
        return "Combined."
    if "what is 2 + 3" in window:
        return "The answer is 5."
    return "The answer is 20."


async def test_team_gathers_its_answers_while_a_same_user_process_tries_to_hijack_them() -> None:
    async with kernel(ScriptedDriver(model, step_delay=0.002)) as k:
        found: list[str] = []

        async def hijacker(sys: Sys, argv: list[str]) -> list[str]:
            """Watch ps for team-worker argv (it names the channel), then open, forge, pre-create."""
            out: list[str] = []
            with anyio.move_on_after(10):
                while not found:
                    for p in await sys.ps():
                        if p.app == "team-worker" and len(p.argv) == 2:
                            found.append(p.argv[1])
                    await sys.sleep(0.001)
            if not found:
                return ["never saw a worker"]
            for kw in ({"name": found[0]}, {"name": found[0], "private": False}):
                try:
                    ch = (await sys.call("chan_open", **kw)).chan
                    await sys.send(ch, {"pid": 0, "task": "x", "answer": "forged", "calls": 0})
                    out.append("forged")
                except SyscallError as e:
                    out.append(e.errno.name)
            return out

        spy = await k.spawn(hijacker, caps=["ipc", "proc"], uid=ALICE)
        team = await k.spawn("team", ["do two sums"], uid=ALICE)
        w = await k.wait(team)
        assert w.exit_status == 0, w.error
        answers = [r["answer"] for r in w.result["results"]]
        assert answers == ["The answer is 5.", "The answer is 20."], w.result
        h = await k.wait(spy)
        assert h.result == ["EACCES", "EACCES"], h.result


async def test_pipeline_channels_are_private() -> None:
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    async with kernel(ScriptedDriver("question")) as k:
        await k.syscall("app_install", path=str(examples / "pipeline"), grant=True)
        w = await k.wait(await k.spawn("pipeline", ["a", "b"], uid=ALICE))
        assert w.exit_status == 0, w.error
        assert [r["label"] for r in w.result] == ["question", "question"]
