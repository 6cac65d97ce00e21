"""The remote driver against a real server: ``lmos serve`` in a subprocess, on the built-in model.

Both ways of sending a context: token ids to ``/v1/completions`` (with the built-in
model's tokenizer locally) and messages to ``/v1/chat/completions`` (none).  Greedy
tokens must equal the model's own ``generate``; streaming, stop strings, token
limits, token counts and tool calls through lmos's agent loop must work as on a
local model.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from httputil import serve_cmd, start_serve

import lmos
from lmos.config import load_config
from lmos.drivers.remote import RemoteDriver

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
SYSTEM = "<|system|>You are lmos, a helpful assistant with tools.<|end|>\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lmos serve`` on the built-in model; yields its /v1 URL."""
    home = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMOS_")}
    env["LMOS_HOME"] = str(home)
    proc, port = start_serve(serve_cmd("builtin", home / "state"), env)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait(timeout=30)


@asynccontextmanager
async def kernel(url: str, mode: str) -> AsyncIterator[lmos.Kernel]:
    spec: dict[str, Any] = {"url": url, "model": "default", "max_in_flight": 4}
    if mode == "completions":
        spec["tokenizer"] = "builtin"
    cfg = load_config(env={}, state_dir=":memory:", models={"remote": spec})
    async with lmos.Kernel(model="remote", config=cfg) as k:
        drv = k.core.scheduler("default").driver
        assert isinstance(drv, RemoteDriver) and drv.api == mode
        yield k


@pytest.fixture(scope="module")
def hf_model() -> Any:
    from transformers import AutoModelForCausalLM

    from lmos.models import builtin_model_path

    return AutoModelForCausalLM.from_pretrained(str(Path(builtin_model_path())), dtype="float32").eval()


async def test_greedy_tokens_equal_model_generate(server: str, hf_model: Any) -> None:
    import torch

    async with kernel(server, "completions") as k:
        drv = k.core.scheduler("default").driver
        assert drv.tokenizer is not None and drv.limits.max_model_len == 1024  # the server's window
        prompts = [SYSTEM + f"<|user|>{q}<|end|>\n<|assistant|>" for q in
                   ("hello, who are you?", "what is 2 + 2?")]
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await k.complete(drv.tokenizer.encode(prompts[i]), max_tokens=32, temperature=0)

        async with anyio.create_task_group() as tg:  # at once: the server batches them
            for i in range(len(prompts)):
                tg.start_soon(one, i)
        for i, p in enumerate(prompts):
            ids = drv.tokenizer.encode(p)
            with torch.no_grad():
                out = hf_model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                        eos_token_id=7, pad_token_id=0)
            want = out[0, len(ids):].tolist()
            r = results[i]
            assert r.token_ids == want, (r.text, want)
            assert r.finish_reason == ("eos" if want[-1] == 7 else "length")
            assert r.usage.completion_tokens == len(want)  # the server's count


async def test_streaming_stop_and_max_tokens(server: str) -> None:
    async with kernel(server, "completions") as k:
        prompt = SYSTEM + "<|user|>hello, who are you?<|end|>\n<|assistant|>"
        full = await k.complete(prompt, max_tokens=40, temperature=0)
        pid = await k.spawn("llm.complete", [json.dumps({"prompt": prompt, "max_tokens": 40,
                                                         "temperature": 0})])
        tokens = [e for e in [e async for e in k.stream(pid)] if e.kind == "token"]
        w = await k.wait(pid)
        assert w.result["text"] == full.text and [e.token_id for e in tokens] == full.token_ids
        cut = await k.complete(prompt, max_tokens=3, temperature=0)
        assert cut.finish_reason == "length" and cut.token_ids == full.token_ids[:3]
        word = full.text.split()[2]
        stopped = await k.complete(prompt, max_tokens=40, temperature=0, stop=[word])
        assert stopped.finish_reason == "stop" and stopped.text == full.text[:full.text.index(word)]


@pytest.mark.parametrize("mode", ["completions", "chat"])
async def test_agent_tool_call(server: str, mode: str) -> None:
    async with kernel(server, mode) as k:
        r = await k.chat([{"role": "user", "content": "what is 12 * 7?"}], ["calc"], max_tokens=64,
                         temperature=0)
    assert r.calls and r.calls[0]["tool"] == "calc" and r.calls[0]["result"] == "84"
    assert r.finish_reason == "answer" and r.text


async def test_chat_mode_sends_messages(server: str) -> None:
    async with kernel(server, "chat") as k:
        msgs = [{"role": "user", "content": "hello, who are you?"}]
        r = await k.chat(msgs, [], max_tokens=40, temperature=0)
        assert r.calls == [] and r.text
        # the server's own answer to the same messages, asked directly
        import httpx

        direct = httpx.post(server + "/chat/completions", timeout=30, json={
            "model": "default", "messages": msgs, "max_tokens": 40, "temperature": 0}).json()
        assert r.text == direct["choices"][0]["message"]["content"]
        assert r.usage.completion_tokens == direct["usage"]["completion_tokens"]


async def test_a_kill_ends_the_generation_on_the_server(server: str) -> None:
    import httpx

    base = server.removesuffix("/v1")
    async with kernel(server, "completions") as k, httpx.AsyncClient(base_url=base, timeout=30) as http:
        # a seed whose sample runs on for a while (a seeded sample is the same each time), whatever
        # the built-in model is: most end at their end-of-turn token within a few tokens
        for seed in range(1, 64):
            r = await k.complete("the", max_tokens=200, temperature=1.0, seed=seed)
            if r.finish_reason == "length":
                break
        else:
            pytest.skip("no seed makes the built-in model run on for 200 tokens")
        gen = {"prompt": "the", "max_tokens": 900, "temperature": 1.0, "seed": seed}
        pid = await k.spawn("llm.complete", [json.dumps(gen)])
        seen = 0
        async for ev in k.stream(pid):
            seen += ev.kind == "token"
            if seen == 5:
                break
        assert seen == 5

        async def generating() -> list[Any]:
            procs = (await http.get("/v1/processes")).json()["procs"]
            return [p for p in procs if p["app"] == "llm.complete"]

        assert await generating()  # the server is generating for it
        await k.kill(pid)
        assert (await k.wait(pid)).exit_status != 0
        with anyio.fail_after(10):
            while await generating():  # the closed stream ended the server's process
                await anyio.sleep(0.05)
