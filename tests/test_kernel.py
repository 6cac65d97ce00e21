"""The kernel through the embedding API, on the scripted driver (asyncio and trio)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from kutil import Recorder, kernel

import lmos
from lmos.drivers.scripted import EOS, ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


async def test_complete_text_and_token_ids() -> None:
    async with kernel() as k:
        r = await k.complete("hello world", max_tokens=50)
        assert r.text == "hello world"
        assert r.token_ids == [*b"hello world", EOS]  # ends with EOS, as model.generate reports it
        assert r.finish_reason == "eos"
        assert r.pid >= 2
        assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens == 11
        r2 = await k.complete([104, 105], max_tokens=1)  # token-id prompt
        assert r2.token_ids == [104] and r2.finish_reason == "length"
        assert await k.ps() == []  # complete reaps its process


async def test_stop_strings_and_quota() -> None:
    async with kernel(ScriptedDriver("alpha STOP beta")) as k:
        r = await k.complete("x", stop=["STOP"], max_tokens=100)
        assert (r.text, r.finish_reason) == ("alpha ", "stop")

        async def two_calls(sys: Sys, argv: list[str]) -> Any:
            first = await sys.llm_generate("x", max_tokens=100)
            try:
                await sys.llm_generate("y", max_tokens=100)
            except SyscallError as e:
                return [first.finish_reason, len(first.token_ids), e.errno.name]
            return "no error"

        pid = await k.spawn(two_calls, token_quota=4)
        w = await k.wait(pid)
        assert w.result == ["quota", 4, "EDQUOT"]


async def test_many_processes_run_concurrently_and_finish() -> None:
    drv = ScriptedDriver(max_seqs=64)
    async with kernel(drv) as k:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            results[i] = (await k.complete(f"p{i}", max_tokens=20)).text

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(one, i)
        assert results == {i: f"p{i}" for i in range(1000)}
        assert await k.ps() == []
        assert drv.seqs == {} and drv.used == 0  # every sequence freed


async def test_cancelling_complete_kills_and_frees() -> None:
    drv = ScriptedDriver("cycle")
    async with kernel(drv) as k:
        with anyio.move_on_after(0.1):
            await k.complete("go", max_tokens=10**6)
        assert await k.ps() == []
        assert drv.seqs == {} and drv.used == 0
        assert len((await k.complete("still works", max_tokens=20)).token_ids) == 20


async def test_shutdown_with_running_processes_reaps_everything() -> None:
    drv = ScriptedDriver("cycle")
    k = kernel(drv)
    async with k:
        async def forever(sys: Sys, argv: list[str]) -> None:
            while True:
                await sys.llm_generate("x", max_tokens=50)

        async def sleeper(sys: Sys, argv: list[str]) -> None:
            await sys.sleep(1000)

        for _ in range(5):
            await k.spawn(forever)
            await k.spawn(sleeper)
        await anyio.sleep(0.05)
        assert len(await k.ps()) == 10
        core = k.core
    assert core is not None
    assert not core._scopes and all(p.ended for p in core.live())
    assert drv.seqs == {}
    assert core.journal.closed
    with pytest.raises(SyscallError):
        await k.ps()


async def test_signals_kill_term_stop_cont_int() -> None:
    drv = ScriptedDriver("cycle")
    async with kernel(drv) as k:
        async def gen(sys: Sys, argv: list[str]) -> int:
            r = await sys.llm_generate("x", max_tokens=int(argv[0]))
            return len(r.token_ids)

        async def sleeper(sys: Sys, argv: list[str]) -> str:
            try:
                await sys.sleep(100)
            except SyscallError as e:
                return e.errno.name
            return "slept"

        a = await k.spawn(gen, ["1000000"])
        b = await k.spawn(gen, ["1000000"])
        await anyio.sleep(0.02)
        await k.signal(a, "KILL")
        await k.signal(b, "TERM")
        wa, wb = await k.wait(a), await k.wait(b)
        assert (wa.state, wa.exit_status) == ("killed", -9)
        assert (wb.state, wb.exit_status) == ("killed", -15)

        s = await k.spawn(sleeper)
        await anyio.sleep(0.02)
        await k.signal(s, "INT")
        assert (await k.wait(s)).result == "EINTR"

        c = await k.spawn(gen, ["3000"])
        await anyio.sleep(0.01)
        await k.signal(c, "STOP")
        await anyio.sleep(0.01)
        frozen = (await k.ps())[0]
        assert frozen.state == "stopped"
        await anyio.sleep(0.05)
        assert (await k.ps())[0].usage.completion_tokens == frozen.usage.completion_tokens
        other = await k.complete("others still run", max_tokens=100)
        assert len(other.token_ids) == 100  # completed while c was stopped
        assert (await k.ps())[0].usage.completion_tokens == frozen.usage.completion_tokens
        await k.signal(c, "CONT")
        w = await k.wait(c)
        assert w.result == 3000 and w.exit_status == 0
        with pytest.raises(SyscallError) as ei:
            await k.signal(c, "TERM")  # reaped: gone
        assert ei.value.errno is Errno.ESRCH
        with pytest.raises(SyscallError) as ei:
            await k.signal(1, "KILL")
        assert ei.value.errno is Errno.EPERM


async def test_blocked_processes_never_stall_runnable_ones() -> None:
    async with kernel() as k:
        async def blocker(sys: Sys, argv: list[str]) -> None:
            chan = await sys.chan_open("never")
            await sys.recv(chan)  # blocks forever

        async def sleeper(sys: Sys, argv: list[str]) -> None:
            await sys.sleep(60)

        blocked = [await k.spawn(blocker) for _ in range(20)] + [await k.spawn(sleeper) for _ in range(20)]
        with anyio.fail_after(5):
            for i in range(50):
                assert (await k.complete(f"q{i}", max_tokens=10)).text == f"q{i}"
        states = {p.pid: p.state for p in await k.ps()}
        assert all(states[p] == "blocked" for p in blocked)


async def test_program_errors_become_exit_status() -> None:
    async with kernel() as k:
        async def bad(sys: Sys, argv: list[str]) -> None:
            raise ValueError("boom")

        async def exits(sys: Sys, argv: list[str]) -> None:
            await sys.exit(7, {"why": "done"})

        async def denied(sys: Sys, argv: list[str]) -> None:
            await sys.spawn("llm.complete")

        w = await k.wait(await k.spawn(bad))
        assert (w.exit_status, w.error) == (1, "ValueError: boom")
        w = await k.wait(await k.spawn(exits))
        assert (w.exit_status, w.result) == (7, {"why": "done"})
        w = await k.wait(await k.spawn(denied, caps=["llm"]))
        assert w.exit_status == 1 and w.errno == Errno.EPERM and "spawn" in (w.error or "")


async def test_children_wait_and_ipc() -> None:
    async with kernel() as k:
        async def worker(sys: Sys, argv: list[str]) -> None:
            chan = await sys.chan_open("results")
            r = await sys.llm_generate(argv[0], max_tokens=50)
            await sys.send(chan, {"who": (await sys.getpid()).pid, "text": r.text})

        k.programs.register(lmos.system.AppSpec("worker", worker, frozenset({"llm", "ipc"})))

        async def planner(sys: Sys, argv: list[str]) -> Any:
            chan = await sys.chan_open("results")
            kids = [await sys.spawn("worker", [f"task {i}"]) for i in range(3)]
            got = [await sys.recv(chan, timeout=5) for _ in kids]
            statuses = [(await sys.wait()).exit_status for _ in kids]
            try:
                await sys.wait()
            except SyscallError as e:
                echild = e.errno.name
            try:
                await sys.recv(chan, timeout=0.01)
            except SyscallError as e:
                etime = e.errno.name
            return [sorted(g["text"] for g in got), sorted(g["who"] for g in got) == sorted(kids),
                    statuses, echild, etime]

        w = await k.wait(await k.spawn(planner, caps=["llm", "ipc", "spawn"]))
        assert w.result == [["task 0", "task 1", "task 2"], True, [0, 0, 0], "ECHILD", "ETIMEDOUT"], w.error


async def test_stream_tokens_then_exit() -> None:
    async with kernel(ScriptedDriver("streamed text")) as k:
        async def slow(sys: Sys, argv: list[str]) -> str:
            await sys.sleep(0.05)
            return (await sys.llm_generate("x", max_tokens=100)).text

        pid = await k.spawn(slow)
        events = [ev async for ev in k.stream(pid)]
        text = "".join(ev.text for ev in events if ev.kind == "token")
        assert text == "streamed text"
        assert [ev.token_id for ev in events if ev.kind == "token"][-1] == EOS
        assert events[-1].kind == "exit" and events[-1].data == "streamed text"
        await k.wait(pid)


async def test_admission_control_eagain() -> None:
    async with kernel(max_procs=3) as k:
        async def sleeper(sys: Sys, argv: list[str]) -> None:
            await sys.sleep(60)

        for _ in range(3):
            await k.spawn(sleeper)
        with pytest.raises(SyscallError) as ei:
            await k.spawn(sleeper)
        assert ei.value.errno is Errno.EAGAIN
    async with kernel(max_procs_per_uid=2) as k:
        await k.spawn(sleeper, uid=5)
        await k.spawn(sleeper, uid=5)
        with pytest.raises(SyscallError) as ei:
            await k.spawn(sleeper, uid=5)
        assert ei.value.errno is Errno.EAGAIN
        await k.spawn(sleeper, uid=6)  # another user is not affected


async def test_bad_model_path_is_enoent(tmp_path: Any) -> None:
    with pytest.raises(SyscallError) as ei:
        async with lmos.Kernel(model=str(tmp_path / "nope"), state_dir=":memory:"):
            pass
    assert ei.value.errno is Errno.ENOENT


async def test_kv_pressure_swaps_or_drops_and_output_is_unchanged() -> None:
    # 3 blocks of 4 tokens: not enough for all sequences at once.
    drv = Recorder(max_seqs=8, num_blocks=12, block_size=4)
    async with kernel(drv) as k:
        out: dict[int, str] = {}

        async def one(i: int) -> None:
            out[i] = (await k.complete(f"prompt number {i}", max_tokens=40)).text

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)
        assert out == {i: f"prompt number {i}" for i in range(6)}
        assert drv.used == 0
        assert any(m[0] in ("drop", "swap_out") for m in drv.moves)  # pressure was resolved by moves


class FailingDriver(ScriptedDriver):
    """Fails its third step, as a driver with a device error would."""

    def step(self, plan: Any) -> dict[int, int | None]:
        if self.steps == 2:
            self.steps += 1
            raise RuntimeError("device lost")
        return super().step(plan)


async def test_a_failing_driver_step_fails_requests_not_the_kernel() -> None:
    async with kernel(FailingDriver("cycle")) as k:
        with pytest.raises(SyscallError) as ei:
            await k.complete("x", max_tokens=10)
        assert ei.value.errno is Errno.EIO and "device lost" in ei.value.message
        r = await k.complete("y", max_tokens=10)  # the scheduler is still running
        assert len(r.token_ids) == 10
