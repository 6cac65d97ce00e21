"""Streaming on the OpenAI routes, through the official ``openai`` SDK: streamed text is the plain
text (stop strings, multi-byte characters, marker-like text), token by token, and ``n`` choices
stream from forks of one context, each with its index."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import lmos
from lmos.drivers.scripted import ScriptedDriver, _Seq
from tests.httputil import served

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.anyio

REPLIES = {
    "plain": "  hello wörld — 日本語 🎉 done  ",
    "stop": "before STOP after",
    "wide-stop": "一二三語四五",
    "marker-like": "a <| b <|end and |> c",
    "newlines": "line one\n\nline two\n",
    "emoji-edge": "🎉🎉🎉",
}
STOPS: dict[str, list[str]] = {"stop": ["STOP"], "wide-stop": ["語"], "emoji-edge": ["🎉🎉"]}


class ForkingDriver(ScriptedDriver):
    """Replies name the sampling seed of the sequence (so forked choices differ) and the
    driver counts its forks and prefills (so a test sees the prompt computed once)."""

    def __init__(self) -> None:
        super().__init__(self.reply, step_delay=0.0005)
        self.forks = 0
        self.adds = 0

    @staticmethod
    def reply(window: str) -> str:
        case = re.findall(r"case:([\w-]+)", window)
        return REPLIES.get(case[-1], "?") if case else "?"

    def add(self, seq_id: int, token_ids: list[int], sampling: Any) -> None:
        self.adds += 1
        super().add(seq_id, token_ids, sampling)

    def fork(self, seq_id: int, child_id: int) -> None:
        self.forks += 1
        super().fork(seq_id, child_id)

    def _respond(self, s: _Seq) -> str:
        text = super()._respond(s)
        return f"seed {s.sampling.seed}: {text}" if "case:seeded" in self.tokenizer.decode(s.tokens) else text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def env() -> AsyncIterator[tuple[Any, ForkingDriver, lmos.Kernel]]:
    drv = ForkingDriver()
    async with lmos.Kernel(model=drv, state_dir=":memory:") as k, served(k, token="sk-t") as url:
        c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-t", max_retries=0)
        yield c, drv, k
        await c.close()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_streamed_text_is_the_plain_text(env: tuple[Any, ForkingDriver, lmos.Kernel]) -> None:
    c, _, _ = env
    for case, reply in REPLIES.items():
        stop = STOPS.get(case)
        kw: dict[str, Any] = {"model": "default", "max_tokens": 200, **({"stop": stop} if stop else {})}
        plain = await c.chat.completions.create(messages=user(f"case:{case}"), **kw)
        stream = await c.chat.completions.create(messages=user(f"case:{case}"), stream=True, **kw)
        deltas = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
        text = plain.choices[0].message.content
        expected = (reply.split(stop[0])[0] if stop else reply).strip()
        assert text == expected and "".join(deltas) == text, case
        assert sum(1 for d in deltas if d) >= min(5, len(text) // 3), (case, deltas)  # token by token

        cplain = await c.completions.create(prompt=f"case:{case}", **kw)
        cstream = await c.completions.create(prompt=f"case:{case}", stream=True, **kw)
        cdeltas = [ch.choices[0].text async for ch in cstream if ch.choices]
        expected = reply.split(stop[0])[0] if stop else reply  # completions keep whitespace
        assert cplain.choices[0].text == expected and "".join(cdeltas) == expected, case
        assert sum(1 for d in cdeltas if d) >= min(5, len(expected) // 3), (case, cdeltas)
        assert all("\ufffd" not in d for d in deltas + cdeltas)  # never half a character


async def test_streamed_n_forks_one_context(env: tuple[Any, ForkingDriver, lmos.Kernel]) -> None:
    c, drv, _ = env
    for seed in (7, None):  # seeded choices differ; greedy ones are the same text
        kw: dict[str, Any] = {"model": "default", "messages": user("case:seeded case:plain"), "n": 3,
                              "max_tokens": 200, **({"seed": seed} if seed is not None else {})}
        plain = await c.chat.completions.create(**kw)
        adds, forks = drv.adds, drv.forks
        stream = await c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
        chunks = [ch async for ch in stream]
        assert (drv.adds - adds, drv.forks - forks) == (1, 2)  # one prefill, two forks
        texts = {i: "".join(ch.choices[0].delta.content or "" for ch in chunks
                            if ch.choices and ch.choices[0].index == i) for i in range(3)}
        assert texts == {ch.index: ch.message.content for ch in plain.choices}
        want = [f"seed {None if seed is None else seed + i}: {REPLIES['plain']}".strip() for i in range(3)]
        assert [texts[i] for i in range(3)] == want
        for i in range(3):
            mine = [ch for ch in chunks if ch.choices and ch.choices[0].index == i]
            assert sum(1 for ch in mine if ch.choices[0].delta.content) > 10  # each streams token by token
            assert mine[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


async def test_a_streamed_n_client_that_leaves_frees_the_forks(
        env: tuple[Any, ForkingDriver, lmos.Kernel]) -> None:
    c, _, k = env
    await k.load_model("cycle", ScriptedDriver("cycle", step_delay=0.002))
    assert k.core is not None
    cycle = k.core.scheduler("cycle").driver
    assert isinstance(cycle, ScriptedDriver)
    stream = await c.chat.completions.create(model="cycle", messages=user("go"), n=2, max_tokens=100000,
                                             stream=True)
    seen: set[int] = set()
    async for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            seen.add(ch.choices[0].index)
        if seen == {0, 1}:
            break
    await stream.close()
    with anyio.fail_after(10):
        while cycle.seqs:  # the process and its fork are gone with the client
            await anyio.sleep(0.02)
    assert set(k.core.events.subs) <= set(k.core.procs)  # no relay of a fork is left behind
