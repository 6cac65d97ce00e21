"""Huge prompts against the event loop: a cheap length check, then tokenizing off the loop.

One user sends 16 MB prompts (and mem_append texts) as fast as it can, on a
real tokenizer (the built-in model's: tokenizing 16 MB with it takes about 20
seconds of CPU).  The prompts that cannot fit the window are refused with E2BIG
before tokenizing; the largest that might fit are tokenized in a thread.
Other users' processes keep generating and finish in a fraction of that time.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.drivers.hf_load import HFTokenizer
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import SyscallError
from lmos.kernel.tokenize import max_token_chars
from lmos.models import builtin_model_path
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio
WINDOW = 4096


def driver() -> ScriptedDriver:
    from transformers import AutoTokenizer

    drv = ScriptedDriver("cycle", max_model_len=WINDOW)
    hf = AutoTokenizer.from_pretrained(str(builtin_model_path()), local_files_only=True)
    drv.tokenizer = HFTokenizer(hf)
    return drv


async def attacker(sys: Sys, argv: list[str]) -> Any:
    huge = "the quick brown fox jumps over the lazy dog. " * (16 * (1 << 20) // 45)
    largest = huge[: int(argv[0])]  # as long as the cheap check lets through
    out = []
    for text in (huge, largest, huge, largest):
        for call, args in (("llm_generate", {"prompt": text, "max_tokens": 1}),
                           ("mem_append", {"text": text})):
            try:
                await sys.call(call, **args)
                out.append("ok")
            except SyscallError as e:
                out.append(e.errno.name)
    return out


async def worker(sys: Sys, argv: list[str]) -> Any:
    for _ in range(20):
        await sys.call("llm_generate", prompt="hello", max_tokens=4)
        await anyio.sleep(0.01)
    return "done"


async def test_huge_prompts_do_not_stop_other_users() -> None:
    drv = driver()
    per = max_token_chars(drv.tokenizer)
    assert per is not None
    async with kernel(drv) as k:
        bad = await k.spawn(attacker, [str(WINDOW * per)], caps=["llm", "mem"], uid=1001)
        await anyio.sleep(0.05)
        t0 = time.monotonic()
        others = [await k.spawn(worker, caps=["llm"], uid=1002) for _ in range(4)]
        assert [(await k.wait(pid)).result for pid in others] == ["done"] * 4
        assert time.monotonic() - t0 < 10.0  # one 16 MB prompt tokenized on the loop alone takes ~20 s
        w = await k.wait(bad)
        assert w.exit_status == 0, w.error
        assert w.result[:2] == ["E2BIG", "E2BIG"]  # 16 MB: refused without tokenizing
