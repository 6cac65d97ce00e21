"""The remote driver against a stub server that injects faults (tests/remote_stub.py).

Chat mode (no local tokenizer): streaming, stop strings, token limits, the server's token
counts, kills closing the stream, the in-flight limit and the kernel's order, tool calls
through the agent loop, the context window; and failures: slow, dropped, 500, 429, and bad
input at load (unreachable, wrong key, unknown model) as one error, never a hang.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest

import lmos
from lmos.config import load_config
from lmos.drivers.remote import RemoteDriver
from lmos.errors import Errno, SyscallError
from tests.remote_stub import Stub, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stub() -> Iterator[Stub]:
    with running(Stub()) as s:
        yield s


@asynccontextmanager
async def kernel(stub: Stub, policy: str = "fair", **settings: Any) -> AsyncIterator[lmos.Kernel]:
    settings.setdefault("timeout", 2.0)
    cfg = load_config(env={}, state_dir=":memory:", policy=policy,
                      models={"m": {"url": stub.url, "model": "stub", **settings}})
    async with lmos.Kernel(model="m", config=cfg) as k:
        yield k


def _driver(k: lmos.Kernel) -> RemoteDriver:
    drv = k.core.scheduler("default").driver
    assert isinstance(drv, RemoteDriver)
    return drv


def _last_user(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "user"][-1]["content"])


async def test_streams_a_reply_and_counts_the_servers_tokens(stub: Stub) -> None:
    stub.reply = lambda body: f"you said {_last_user(body)}"
    async with kernel(stub) as k:
        pid = await k.spawn("llm.complete", [json.dumps({"prompt": "ping pong", "max_tokens": 50})])
        streamed = [ev.text for ev in [e async for e in k.stream(pid)] if ev.kind == "token"]
        w = await k.wait(pid)
        assert streamed[-1] == "<|end|>"  # the end of turn is a token, as on a local model
        assert w.result["text"] == "you said ping pong" == "".join(streamed[:-1])
        assert w.result["finish_reason"] == "eos"
        # the kernel charges the server's count (usage: 4 pieces + the end), not its own
        assert w.usage.completion_tokens == 5
        assert _driver(k).api == "chat" and stub.requests[0][1] == "/v1/chat/completions"
        assert stub.requests[0][2]["messages"] == [{"role": "user", "content": "ping pong"}]
        sched = k.core.scheduler("default")
        assert sched.kv.mode == "drop" and sched.kv.counts["swap"] == sched.kv.counts["evict_swap"] == 0


async def test_max_tokens_and_stop_strings(stub: Stub) -> None:
    stub.reply = lambda body: "one two three four five six"
    async with kernel(stub) as k:
        r = await k.complete("x", max_tokens=3)
        assert (r.text, r.finish_reason) == ("one two three ", "length")
        assert stub.requests[-1][2]["max_tokens"] == 3
        stub.default = "forever"  # "la la la ...", until the client goes away
        r = await k.complete("x", max_tokens=500, stop=["la la la"])
        assert (r.text, r.finish_reason) == ("", "stop")
        with anyio.fail_after(5):
            while stub.disconnects < 1:  # the stop string closed the stream: the server stopped
                await anyio.sleep(0.02)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_connections_are_kept_across_requests(stub: Stub) -> None:
    """A request that ends at its token limit still reads its stream to the end, so the next
    request reuses the connection (a new one per request costs a connect on every call)."""
    stub.reply = lambda body: "one two three four five six"
    async with kernel(stub) as k:
        for n in (2, 3, 50, 1):
            r = await k.complete("x", max_tokens=n)
            assert r.finish_reason == ("eos" if n == 50 else "length")
    assert len(stub.peers) == 4 and len(set(stub.peers)) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_kill_closes_the_stream(stub: Stub) -> None:
    stub.default = "forever"
    async with kernel(stub) as k:
        pid = await k.spawn("llm.complete", [json.dumps({"prompt": "go", "max_tokens": 100000})])
        with anyio.fail_after(5):
            while stub.in_flight < 1:
                await anyio.sleep(0.02)
        await anyio.sleep(0.1)
        await k.kill(pid)
        w = await k.wait(pid)
        assert w.exit_status != 0
        with anyio.fail_after(5):
            while stub.disconnects < 1:
                await anyio.sleep(0.02)
        assert stub.in_flight == 0


async def test_a_stopped_process_sees_its_result_only_when_continued(stub: Stub) -> None:
    stub.delay = 0.2
    async with kernel(stub) as k:
        pid = await k.spawn("llm.complete", [json.dumps({"prompt": "x"})])
        with anyio.fail_after(5):
            while stub.in_flight < 1:
                await anyio.sleep(0.01)
        await k.signal(pid, "STOP")
        with anyio.fail_after(5):
            while len(stub.requests) < 1 or stub.in_flight:  # the request ran to its end
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        assert [p.state for p in await k.ps() if p.pid == pid] == ["stopped"]
        await k.signal(pid, "CONT")
        w = await k.wait(pid)
        assert w.exit_status == 0 and w.result["text"] == "hello from the stub"


async def test_in_flight_limit_and_the_kernels_order(stub: Stub) -> None:
    """max_in_flight bounds the server's load; the kernel's policy (priority) picks who goes next."""
    stub.reply = lambda body: f"done {_last_user(body)}"
    stub.script = ["slow"]
    stub.slow_seconds = 1.5
    async with kernel(stub, policy="priority", max_in_flight=1) as k:
        first = await k.spawn("llm.complete", [json.dumps({"prompt": "first", "max_tokens": 8})])
        with anyio.fail_after(5):
            while len(stub.requests) < 1:
                await anyio.sleep(0.01)
        pids = [await k.spawn("llm.complete", [json.dumps({"prompt": name, "max_tokens": 8})], priority=nice)
                for name, nice in (("low", 10), ("mid", 0), ("high", -5))]
        for pid in [first, *pids]:
            assert (await k.wait(pid)).exit_status == 0
        assert [_last_user(b) for _, _, b in stub.requests] == ["first", "high", "mid", "low"]
        assert stub.max_in_flight == 1
    stub.script, stub.requests, stub.max_in_flight = [], [], 0
    stub.delay = 0.02
    async with kernel(stub, max_in_flight=3) as k:
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(k.complete, f"p{i}")
        assert stub.max_in_flight == 3 and len(stub.requests) == 8


async def test_models_on_one_server_share_its_in_flight_limit() -> None:
    """The limit is the server's, not each model's: two models behind one base URL never have more
    than max_in_flight requests on it together (the smaller of their tables' limits), while a
    model on another server has its own."""
    with running(Stub(models=("a", "b"))) as one, running(Stub(models=("c",))) as other:
        for s in (one, other):
            s.delay = 0.03
        cfg = load_config(env={}, state_dir=":memory:", models={
            "a": {"url": one.url, "model": "a", "max_in_flight": 3, "timeout": 5.0},
            "b": {"url": one.url + "/", "model": "b", "max_in_flight": 2, "timeout": 5.0},
            "c": {"url": other.url, "model": "c", "max_in_flight": 2, "timeout": 5.0}})
        async with lmos.Kernel(model="a", config=cfg) as k:
            await k.load_model("b", "b")
            await k.load_model("c", "c")
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(partial(k.complete, f"p{i}", model=(None, "b", "c")[i % 3]))  # None: a
        assert len(one.requests) == 8 and {b["model"] for _, _, b in one.requests} == {"a", "b"}
        assert one.max_in_flight == 2  # not 2 + 3: the two models' requests were counted together
        assert len(other.requests) == 4 and other.max_in_flight == 2


async def test_tool_calls_go_through_lmos_agent_loop(stub: Stub) -> None:
    stub.script = ["tool"]
    stub.tool_preamble = "Let me work that out."  # text before the call: left out of the turn
    stub.reply = lambda body: f"the answer is {body['messages'][-1]['content']}"
    async with kernel(stub) as k:
        r = await k.chat([{"role": "user", "content": "what is 6 * 7?"}], ["calc"], max_tokens=64)
    assert r.calls == [{"tool": "calc", "args": {"expr": "6 * 7"}, "result": "42", "ok": True}]
    assert r.text == "the answer is 42"
    first = stub.requests[0][2]
    # the tools the agent declared in its system turn go to the server as OpenAI tools
    assert [t["function"]["name"] for t in first["tools"]] == ["calc"]
    assert "Tools:" not in first["messages"][0]["content"]
    second = stub.requests[1][2]["messages"]
    call = second[-2]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"] == {
        "name": "calc", "arguments": json.dumps({"expr": "6 * 7"})}
    assert second[-1] == {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "42"}


async def test_context_window_comes_from_the_server(stub: Stub) -> None:
    stub.window = 64
    async with kernel(stub) as k:
        assert _driver(k).limits.max_model_len == 64
        with pytest.raises(SyscallError) as e:
            await k.complete("x" * 100)
        assert e.value.errno is Errno.E2BIG

        async def pinned(sys: Any, argv: list[str]) -> Any:
            return await sys.llm_generate(prompt="y" * 80, page=True, pin=True, max_tokens=4)

        w = await k.wait(await k.spawn(pinned))
        assert w.exit_status != 0 and w.errno == Errno.ENOSPC
        # given at spawn, pinned pages that cannot fit the server's window are refused there:
        # no process is made (64 tokens, 8 kept for the reply)
        with pytest.raises(SyscallError) as e:
            await k.spawn("llm.complete", [json.dumps({"prompt": "x"})], pin=["y" * 57])
        assert e.value.errno is Errno.ENOSPC and "56" not in e.value.message
        assert "64 tokens" in e.value.message and not await k.ps()
    assert not stub.requests  # refused by the kernel, never sent


async def test_transient_failures_are_retried(stub: Stub) -> None:
    stub.script = ["500", "drop0", "500"]
    async with kernel(stub, retries=3) as k:
        r = await k.complete("x")
        assert r.text == "hello from the stub" and len(stub.requests) == 4
        stub.script = ["500"] * 3
        stub.requests.clear()
        k2_err = None
        try:
            await k.complete("x")
        except SyscallError as exc:
            k2_err = exc
        assert k2_err is None and len(stub.requests) == 4
    stub.script = ["500"] * 10
    stub.requests.clear()
    async with kernel(stub, retries=2) as k:
        with pytest.raises(SyscallError) as e:
            await k.complete("x")
        assert e.value.errno is Errno.EIO and "500" in e.value.message and len(stub.requests) == 3


async def test_slow_server_times_out_then_eio(stub: Stub) -> None:
    stub.default = "slow"
    stub.slow_seconds = 1.0
    async with kernel(stub, timeout=0.3, retries=1) as k:
        t0 = time.monotonic()
        with pytest.raises(SyscallError) as e:
            await k.complete("x")
        assert e.value.errno is Errno.EIO and "0.3s" in e.value.message
        assert len(stub.requests) == 2 and time.monotonic() - t0 < 5
    async with kernel(stub, timeout=3.0) as k:  # slow but within the timeout: fine
        assert (await k.complete("x")).text == "hello from the stub"


async def test_a_drop_after_tokens_in_chat_mode_is_eio(stub: Stub) -> None:
    stub.script = ["drop"]
    async with kernel(stub, retries=3) as k:
        with pytest.raises(SyscallError) as e:
            await k.complete("x")
        assert e.value.errno is Errno.EIO and "connection lost" in e.value.message
        assert len(stub.requests) == 1  # half an answer cannot be continued over chat: not retried


async def test_a_drop_in_completions_mode_continues_where_it_stopped(stub: Stub) -> None:
    """With token-id prompts a lost stream is resumed: the context so far, the tokens left."""
    stub.token_prompts = True
    async with kernel(stub, tokenizer="builtin", retries=2) as k:
        assert _driver(k).api == "completions"
        stub.requests.clear()
        stub.script = ["drop"]  # two pieces, then the connection is cut
        r = await k.complete("x", max_tokens=40)
        first, again = stub.requests[0][2], stub.requests[1][2]
        tok = _driver(k).tokenizer
        assert tok is not None
        sent = tok.encode("hello from ")
        assert again["prompt"] == first["prompt"] + sent
        assert again["max_tokens"] == first["max_tokens"] - len(sent)
        assert r.text == "hello from hello from the stub"  # (a real server continues, not restarts)


async def test_429_backs_off_the_whole_driver(stub: Stub) -> None:
    stub.script = ["429"]
    stub.retry_after = 0.5
    stub.delay = 0.01
    async with kernel(stub, max_in_flight=4) as k:
        first = await k.spawn("llm.complete", [json.dumps({"prompt": "a"})])
        with anyio.fail_after(5):
            while not _driver(k).http.rate_limited:  # the 429 is in: the driver's gate is closed
                await anyio.sleep(0.005)
        limited_at = stub.requests[0][0]
        others = [await k.spawn("llm.complete", [json.dumps({"prompt": f"b{i}"})]) for i in range(3)]
        for pid in [first, *others]:
            assert (await k.wait(pid)).exit_status == 0
        later = [t for t, _, _ in stub.requests[1:]]
        assert len(later) == 4 and min(later) - limited_at >= 0.45  # nobody sent during the pause
        assert _driver(k).http.rate_limited == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_bad_input_at_load_is_one_line(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    async def load(model: str, **cfg: Any) -> SyscallError:
        config = load_config(env={}, state_dir=":memory:", **cfg)
        with anyio.fail_after(15), pytest.raises(SyscallError) as e:
            async with lmos.Kernel(model=model, config=config):
                pass
        assert "\n" not in e.value.message
        return e.value

    port = _closed_port()
    e = await load(f"openai+http://127.0.0.1:{port}/v1#x")
    assert e.errno is Errno.EIO and "unreachable" in e.message
    e = await load(f"openai+{stub.url}#nope")
    assert e.errno is Errno.ENOENT and "'nope'" in e.message and "stub" in e.message
    assert (await load("openai+ftp://host/v1#m")).errno is Errno.EINVAL
    assert (await load(f"openai+{stub.url}")).errno is Errno.EINVAL  # no model name
    stub.key = "sk-right"
    monkeypatch.setenv("MY_KEY", "sk-wrong")
    e = await load("m", models={"m": {"url": stub.url, "model": "stub", "api_key_env": "MY_KEY"}})
    assert e.errno is Errno.EACCES and "API key" in e.message
    monkeypatch.setenv("MY_KEY", "sk-right")
    cfg = load_config(env={}, state_dir=":memory:",
                      models={"m": {"url": stub.url, "model": "stub", "api_key_env": "MY_KEY"}})
    async with lmos.Kernel(model="m", config=cfg) as k:
        assert (await k.complete("x")).text == "hello from the stub"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SyscallError) as e:
        load_config(env={}, models={"m": {"url": "http://x/v1", "model": "m", "max_in_flight": 0}})
    assert e.value.errno is Errno.EINVAL and "max_in_flight" in e.value.message
    with pytest.raises(SyscallError):
        load_config(env={}, models={"m": {"url": "http://x/v1", "model": "m", "colour": "red"}})
