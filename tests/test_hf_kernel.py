"""Token-level correctness through the public API: lmos.Kernel(model=path).complete(...)
equals model.generate run alone, for Llama, Qwen2 and Mistral and block sizes 1, 16, 64,
with processes joining mid-run, a small KV pool (preemption by swap or recompute),
blocking processes under each KV policy, and a shared system prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from models import ARCHS, prompt, reference, save_model_dir, tiny_model

import lmos
from lmos.train.tokenizer import byte_tokenizer

pytestmark = pytest.mark.anyio
NEW = 12
TEXT = byte_tokenizer(256)  # the model directories' tokenizer: replies are its decoding of the tokens


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for arch in ARCHS:
        d = tmp_path_factory.mktemp(arch)
        save_model_dir(tiny_model(arch), d)  # with a byte-level tokenizer; the prompts are token ids
        out[arch] = d
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def run_all(k: lmos.Kernel, prompts: list[list[int]], stagger: float = 0.0) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in prompts]

    async def one(i: int) -> None:
        await anyio.sleep(stagger * i)  # later processes join while earlier ones decode
        r = await k.complete(prompts[i], max_tokens=NEW, temperature=0)
        assert r.finish_reason == "length" and r.text == TEXT.decode(r.token_ids)
        out[i] = r.token_ids

    async with anyio.create_task_group() as tg:
        for i in range(len(prompts)):
            tg.start_soon(one, i)
    return out


@pytest.mark.parametrize("block_size", [1, 16, 64])
@pytest.mark.parametrize("arch", ARCHS)
async def test_complete_equals_generate(model_dirs: dict[str, Path], arch: str, block_size: int) -> None:
    prompts = [prompt(i, n) for i, n in enumerate([3, 17, 40, 70])]
    async with lmos.Kernel(model=str(model_dirs[arch]), state_dir=":memory:", block_size=block_size,
                           max_tokens_per_step=32, kv_memory="8MiB") as k:
        got = await run_all(k, prompts, stagger=0.01)
    assert got == [reference(arch, p, NEW) for p in prompts]


@pytest.mark.parametrize("kv_policy", ["keep", "swap", "drop", "adaptive"])
async def test_blocking_agents_under_kv_pressure(model_dirs: dict[str, Path], kv_policy: str) -> None:
    arch = "llama"
    prompts = [prompt(100 + i, 20 + 7 * i) for i in range(5)]
    extra = [prompt(200 + i, 9) for i in range(5)]

    async def agent(sys: Any, argv: list[str]) -> list[int]:
        i = int(argv[0])
        first = await sys.llm_generate(token_ids=prompts[i], max_tokens=NEW, temperature=0.0)
        await sys.sleep(0.05)  # blocked: keep, swap or drop its KV
        second = await sys.llm_generate(token_ids=extra[i], max_tokens=NEW, temperature=0.0)
        return list(first.token_ids) + list(second.token_ids)

    # a pool far smaller than the demand: sequences are preempted and restored
    async with lmos.Kernel(model=str(model_dirs[arch]), state_dir=":memory:", block_size=4,
                           kv_memory=str(24 * 4 * 2 * 2 * 2 * 16 * 4), kv_policy=kv_policy) as k:
        pids = [await k.spawn(agent, [str(i)]) for i in range(5)]
        results = [await k.wait(p) for p in pids]
        counts = k.core.schedulers["default"].kv.counts if k.core else {}
    for i, w in enumerate(results):
        assert w.exit_status == 0, w.error
        first = reference(arch, prompts[i], NEW)
        second = reference(arch, prompts[i] + first + extra[i], NEW)
        assert w.result == first + second, f"agent {i}"
    if kv_policy == "drop":
        assert counts["drop"] == 5
    if kv_policy == "swap":  # once host swap space runs out the kernel falls back to recompute
        assert counts["swap"] >= 1 and counts["swap"] + counts["drop"] == 5


async def test_shared_system_prompt_shares_blocks(model_dirs: dict[str, Path]) -> None:
    arch = "qwen2"
    system = prompt(7, 64)
    prompts = [system + prompt(300 + i, 5) for i in range(4)]
    async with lmos.Kernel(model=str(model_dirs[arch]), state_dir=":memory:", block_size=16,
                           kv_memory="8MiB") as k:
        got = await run_all(k, prompts)
    assert got == [reference(arch, p, NEW) for p in prompts]
