"""``llm_generate(n=...)``: n choices from one prefill, forks of one context that share its KV.

With temperature 0 every choice is the single generation; with a seed, choice ``i`` is the
kernel's own single generation with ``seed + i`` token for token; the prompt is computed once.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from kutil import Recorder, kernel
from models import make_driver, prompt

from lmos.drivers.base import StepPlan
from lmos.drivers.hf import HFDriver
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio


async def _run(k: Any, **args: Any) -> dict[str, Any]:
    async def prog(sys: Sys, argv: list[str]) -> Any:
        return msgspec.to_builtins(await sys.llm_generate(**args))

    w = await k.wait(await k.spawn(prog))
    assert w.exit_status == 0, w.error
    assert isinstance(w.result, dict)
    return w.result


async def test_scripted_n_choices_prefill_once() -> None:
    drv = Recorder("one two")
    async with kernel(drv) as k:
        r = await _run(k, prompt="hello there", max_tokens=50, n=3)
        assert [c["text"] for c in r["choices"]] == ["one two"] * 3
        assert r["text"] == "one two" and r["finish_reason"] == "eos"
        assert r["prompt_tokens"] == len("hello there")
        assert r["completion_tokens"] == 3 * (len("one two") + 1)
        computed = sum(n for step in drv.log for _, n in step)
        # the prompt once, then per choice its last prompt token again and each token but the last
        assert computed == len("hello there") + r["completion_tokens"]
        assert max(n for step in drv.log for _, n in step) == len("hello there")
        assert drv.seqs == {} and drv.used == 0  # the forks are freed, and the process's sequence
        assert await k.ps() == []


async def test_scripted_n_refuses_paged_and_bounds() -> None:
    async with kernel() as k:
        async def prog(sys: Sys, argv: list[str]) -> Any:
            try:
                await sys.llm_generate("x", n=2, page=True)
            except SyscallError as e:
                return e.errno.name
            return "no error"

        w = await k.wait(await k.spawn(prog))
        assert w.result == Errno.EINVAL.name
        async def big(sys: Sys, argv: list[str]) -> Any:
            try:
                await sys.llm_generate("x", n=17)
            except SyscallError as e:
                return e.errno.name
            return "no error"

        w = await k.wait(await k.spawn(big))
        assert w.result == Errno.EINVAL.name


class Counting(HFDriver):
    log: list[int]

    """The HF driver, logging how many tokens each step computes for each sequence."""

    def step(self, plan: StepPlan) -> dict[int, int | None]:
        self.log.extend(i.num_tokens for i in plan.items)
        return super().step(plan)


def _counting() -> Counting:
    d = make_driver("llama")
    d.__class__ = Counting
    d.log = []
    return d  # type: ignore[return-value]


async def test_hf_forked_choices_equal_single_generations() -> None:
    ids = prompt(3, 40)
    drv = _counting()
    async with kernel(drv) as k:
        greedy = await _run(k, token_ids=ids, max_tokens=10, temperature=0.0, n=3)
        single = await _run(k, token_ids=ids, max_tokens=10, temperature=0.0)
        assert [c["token_ids"] for c in greedy["choices"]] == [single["token_ids"]] * 3
    drv = _counting()
    async with kernel(drv) as k:  # a fresh driver: no prefix cached
        forked = await _run(k, token_ids=ids, max_tokens=10, temperature=1.0, seed=11, n=3)
        # the prompt computed once; each branch recomputes at most its last block's tail
        assert drv.log[0] == len(ids) and all(n <= 4 for n in drv.log[1:]), drv.log
        for i, c in enumerate(forked["choices"]):
            one = await _run(k, token_ids=ids, max_tokens=10, temperature=1.0, seed=11 + i)
            assert c["token_ids"] == one["token_ids"], i
        assert len({tuple(c["token_ids"]) for c in forked["choices"]}) > 1  # seeds differ
        assert forked["token_ids"] == forked["choices"][0]["token_ids"]


async def test_killed_mid_generation_frees_every_fork() -> None:
    drv = ScriptedDriver("cycle", step_delay=0.001)
    async with kernel(drv) as k:
        async def prog(sys: Sys, argv: list[str]) -> Any:
            return msgspec.to_builtins(await sys.llm_generate("hello", max_tokens=100_000, n=4))

        pid = await k.spawn(prog)
        await anyio.sleep(0.1)
        await k.kill(pid)
        w = await k.wait(pid)
        assert w.state == "killed"
        assert drv.seqs == {} and drv.used == 0
