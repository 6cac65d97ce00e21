"""``/v1/chat/completions`` through the official ``openai`` SDK (sync and async), against a real socket.

The model is the scripted driver with a responder that answers from the
rendered conversation, so tool calls, stops and streams are deterministic:
it emits lmos's call format (``<|call|>{"tool": ..., "args": ...}``) exactly as
the built-in model does, and the server must turn that into ``tool_calls``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

import lmos
from lmos.drivers.scripted import ScriptedDriver
from tests.httputil import served

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.anyio

WEATHER: Any = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


def call(tool: str, **args: Any) -> str:
    return "<|call|>" + json.dumps({"tool": tool, "args": args})


def respond(window: str) -> str:
    """The scripted model: reads the last turn of the rendered conversation."""
    if window.endswith('"args": '):  # tool_choice named a function: the call is prefilled up to its args
        return '{"city": "Rome"}}'
    if window.endswith("<|call|>"):  # tool_choice required
        return json.dumps({"tool": "get_weather", "args": {"city": "Oslo"}})
    last = window.rsplit("<|assistant|>", 2)
    turns = re.findall(r"<\|(user|tool)\|>(.*?)<\|end\|>", window, re.S)
    role, text = turns[-1] if turns else ("user", "")
    if role == "tool":
        return f"The tool said: {text}"
    if "<|system|>be brief<|end|>" in window:
        return "dev:ok"
    if "undeclared" in text:  # one of lmos's own tools, which the client never declared
        return call("calc", expr="1 + 1")
    if "weather in two" in text:
        return call("get_weather", city="Paris") + call("get_weather", city="Lima")
    if "weather" in text:
        return call("get_weather", city="Paris")
    if "count" in text:
        return "one two three four"
    del last
    return "  hello from lmos, token by token  "


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with lmos.Kernel(model=ScriptedDriver(respond, max_model_len=2048), state_dir=":memory:") as k:
        await k.load_model("cycle", ScriptedDriver("cycle", step_delay=0.005))
        async with served(k, token="sk-test") as url:
            yield url + "/v1"


def sync_client(base: str) -> Any:
    return openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0)


async def in_thread(fn: Any) -> Any:
    return await anyio.to_thread.run_sync(fn)


USER: Any = [{"role": "user", "content": "hi"}]


async def test_sync_plain_and_streamed_are_the_same_text(base: str) -> None:
    def run() -> tuple[Any, list[Any]]:
        c = sync_client(base)
        plain = c.chat.completions.create(model="default", messages=USER, max_tokens=64)
        chunks = list(c.chat.completions.create(model="default", messages=USER, max_tokens=64, stream=True))
        return plain, chunks

    plain, chunks = await in_thread(run)
    text = plain.choices[0].message.content
    assert text == "hello from lmos, token by token" and plain.choices[0].finish_reason == "stop"
    deltas = [ch.choices[0].delta.content or "" for ch in chunks if ch.choices]
    assert "".join(deltas) == text
    assert sum(1 for d in deltas if d) > 10  # token by token, not one chunk
    assert "<|end|>" not in "".join(deltas)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert plain.usage.completion_tokens > 0 and plain.usage.prompt_tokens > 0


async def test_completions_stream_equals_plain(base: str) -> None:
    def run() -> tuple[str, str]:
        c = sync_client(base)
        plain = c.completions.create(model="default", prompt="hi", max_tokens=200)
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(
            model="default", prompt="hi", max_tokens=200, stream=True) if ch.choices)
        return plain.choices[0].text, streamed

    plain, streamed = await in_thread(run)
    assert plain == streamed and plain


async def test_tool_call_round_trip(base: str) -> None:
    """The model asks for a function; the client runs it and sends the result; the model answers."""
    def run() -> tuple[Any, Any, list[Any]]:
        c = sync_client(base)
        msgs: list[Any] = [{"role": "user", "content": "what is the weather in Paris?"}]
        first = c.chat.completions.create(model="default", messages=msgs, tools=WEATHER, max_tokens=100)
        calls = first.choices[0].message.tool_calls
        msgs.append(first.choices[0].message.model_dump(exclude_none=True))
        for tc in calls:
            city = json.loads(tc.function.arguments)["city"]
            msgs.append({"role": "tool", "tool_call_id": tc.id, "content": f"sunny in {city}"})
        second = c.chat.completions.create(model="default", messages=msgs, tools=WEATHER, max_tokens=100)
        streamed = list(c.chat.completions.create(model="default", messages=msgs[:1], tools=WEATHER,
                                                  max_tokens=100, stream=True))
        return first, second, streamed

    first, second, streamed = await in_thread(run)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (tc,) = choice.message.tool_calls
    assert tc.type == "function" and tc.function.name == "get_weather" and tc.id.startswith("call_")
    assert json.loads(tc.function.arguments) == {"city": "Paris"}
    assert second.choices[0].message.content == "The tool said: sunny in Paris"
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    # streamed: no call text leaks as content; the call arrives as a tool_calls delta
    assert not "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices)
    deltas = [d for ch in streamed if ch.choices for d in ch.choices[0].delta.tool_calls or []]
    assert [d.function.name for d in deltas if d.id] == ["get_weather"]  # the head, then the arguments
    assert json.loads("".join(d.function.arguments for d in deltas)) == {"city": "Paris"}
    assert streamed[-1].choices[0].finish_reason == "tool_calls"


async def test_several_calls_and_tool_choice(base: str) -> None:
    def run() -> dict[str, Any]:
        c = sync_client(base)

        def ask(text: str, **kw: Any) -> Any:
            return c.chat.completions.create(model="default", messages=[{"role": "user", "content": text}],
                                             tools=WEATHER, max_tokens=300, **kw).choices[0]

        return {"two": ask("weather in two cities"), "required": ask("hi", tool_choice="required"),
                "named": ask("hi", tool_choice={"type": "function", "function": {"name": "get_weather"}}),
                "none": ask("weather please", tool_choice="none"),
                "one": ask("weather in two cities", parallel_tool_calls=False),
                "undeclared": ask("call something undeclared")}

    got = await in_thread(run)
    two = got["two"].message.tool_calls
    assert [json.loads(t.function.arguments)["city"] for t in two] == ["Paris", "Lima"]
    assert len({t.id for t in two}) == 2 and got["two"].finish_reason == "tool_calls"
    assert json.loads(got["required"].message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert json.loads(got["named"].message.tool_calls[0].function.arguments) == {"city": "Rome"}
    assert got["none"].message.tool_calls is None and got["none"].finish_reason == "stop"
    assert len(got["one"].message.tool_calls) == 1
    assert got["undeclared"].message.tool_calls is None  # only declared functions come back


async def test_stop_developer_n_seed_usage(base: str) -> None:
    def run() -> dict[str, Any]:
        c = sync_client(base)
        count: Any = [{"role": "user", "content": "count"}]
        out = {"stop": c.chat.completions.create(model="default", messages=count, stop=["three"]),
               "stop_stream": list(c.chat.completions.create(model="default", messages=count, stop="three",
                                                             stream=True)),
               "dev": c.chat.completions.create(model="default", messages=[
                   {"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]),
               "n": c.chat.completions.create(model="default", messages=count, n=3, seed=7,
                                              max_completion_tokens=50),
               "n_stream": list(c.chat.completions.create(model="default", messages=count, n=2, stream=True,
                                                          stream_options={"include_usage": True}))}
        return out

    got = await in_thread(run)
    stop = got["stop"].choices[0]
    assert stop.message.content == "one two" and stop.finish_reason == "stop"
    assert "".join(ch.choices[0].delta.content or "" for ch in got["stop_stream"] if ch.choices) == "one two"
    assert got["dev"].choices[0].message.content == "dev:ok"
    n = got["n"]
    assert [ch.index for ch in n.choices] == [0, 1, 2]
    assert all(ch.message.content == "one two three four" for ch in n.choices)
    assert n.usage.completion_tokens == 3 * (len("one two three four") + 1)  # a byte a token, and EOS
    chunks = got["n_stream"]
    texts = {i: "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices
                        and ch.choices[0].index == i) for i in (0, 1)}
    assert texts == {0: "one two three four", 1: "one two three four"}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2 * (len(texts[0]) + 1)
    assert all(ch.usage is None for ch in chunks[:-1])


async def test_refusals_use_the_openai_error_shape(base: str) -> None:
    def run() -> list[Any]:
        c = sync_client(base)
        errors = []
        for kw in ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
                   {"messages": [{"role": "user", "content": "x" * 5000}]},
                   {"model": "gpt-4o"},
                   {"messages": [{"role": "user", "content": "x" * 2040}], "stream": True}):
            try:
                c.chat.completions.create(**{"model": "default", "messages": USER, **kw})
            except openai.APIStatusError as exc:
                errors.append(exc)
        try:
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        except openai.AuthenticationError as exc:
            errors.append(exc)
        return errors

    fmt, long, model, streamed, auth = await in_thread(run)
    assert isinstance(fmt, openai.BadRequestError) and fmt.body["param"] == "response_format"
    assert isinstance(long, openai.BadRequestError) and long.body["code"] == "context_length_exceeded"
    assert "2048" in long.body["message"] and re.search(r"\d{4} tokens", long.body["message"])
    assert isinstance(model, openai.NotFoundError) and model.body["param"] == "model"
    # streamed too: the window is checked before the stream starts, so it is a 400, not an error event
    assert isinstance(streamed, openai.BadRequestError) and streamed.body["errno"] == "E2BIG"
    assert auth.status_code == 401
    for e in (fmt, long, model, streamed, auth):
        assert set(e.body) >= {"message", "type", "param", "code", "errno"}, e.body


async def test_lower_case_bearer_and_lmos_tools(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as h:
        r = await h.post("/chat/completions", headers={"authorization": "bearer sk-test"},
                         json={"messages": USER, "lmos_tools": ["calc"], "max_tokens": 64})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["role"] == "assistant" and "lmos_calls" in r.json()
        bad = await h.post("/chat/completions", headers={"authorization": "bearer sk-test"},
                           json={"messages": USER, "lmos_tools": ["no_such_tool"]})
        assert bad.status_code == 404 and bad.json()["error"]["errno"] == "ENOENT"


async def test_async_client(base: str) -> None:
    c = openai.AsyncOpenAI(base_url=base, api_key="sk-test", max_retries=0)
    plain = await c.chat.completions.create(model="default", messages=USER, max_tokens=64)
    stream = await c.chat.completions.create(model="default", messages=USER, max_tokens=64, stream=True)
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == plain.choices[0].message.content == "hello from lmos, token by token"
    msgs: list[Any] = [{"role": "user", "content": "weather?"}]
    first = await c.chat.completions.create(model="default", messages=msgs, tools=WEATHER)
    tc = first.choices[0].message.tool_calls[0]
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": tc.id, "content": "rain"}]
    second = await c.chat.completions.create(model="default", messages=msgs, tools=WEATHER)
    assert second.choices[0].message.content == "The tool said: rain"
    await c.close()


CLIENT = """
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="sk-test", max_retries=0)
for ch in c.chat.completions.create(model="cycle", messages=[{"role": "user", "content": "go"}],
                                    max_tokens=100000, stream=True):
    print("chunk", flush=True)
"""


async def test_a_client_killed_mid_stream(base: str) -> None:
    """The SDK process dies while streaming: its generation is killed and the server keeps serving."""
    async with await anyio.open_process([sys.executable, "-c", CLIENT, base]) as proc:
        assert proc.stdout is not None
        with anyio.fail_after(20):
            got = b""
            async for data in proc.stdout:
                got += data
                if got.count(b"chunk") >= 5:
                    break
        proc.kill()
    async with httpx.AsyncClient(base_url=base, timeout=10,
                                 headers={"authorization": "Bearer sk-test"}) as h:
        with anyio.fail_after(10):
            while True:
                procs = (await h.get("/processes")).json()["procs"]
                if not [p for p in procs if p["app"] == "llm.complete"]:
                    break
                await anyio.sleep(0.05)
        r = await h.post("/chat/completions", json={"messages": USER})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


async def test_a_template_model_gets_tools_through_its_template() -> None:
    """A Hermes-style chat template renders ``tools``; ``<tool_call>`` turns come back as tool_calls."""
    from tests.test_agent import TemplateTokenizer

    def model(window: str) -> str:
        if "<tool_response>" in window:
            return "It is " + window.rsplit("<tool_response>\n", 1)[1].split("\n</tool_response>", 1)[0]
        assert '"name": "get_weather"' in window  # the schema was rendered by the template
        if window.endswith('"arguments": '):  # tool_choice named it: prefilled up to the arguments
            return '{"city": "Rome"}}\n</tool_call>'
        return 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

    drv = ScriptedDriver(model)
    drv.tokenizer = TemplateTokenizer()  # type: ignore[assignment]
    async with lmos.Kernel(model=drv, state_dir=":memory:") as k, served(k) as url:
        c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        msgs: list[Any] = [{"role": "user", "content": "weather?"}]
        first = await c.chat.completions.create(model="default", messages=msgs, tools=WEATHER, max_tokens=200)
        msg = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls" and msg.content == "Checking."
        assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Oslo"}
        msgs += [msg.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "snowing"}]
        second = await c.chat.completions.create(model="default", messages=msgs, tools=WEATHER)
        assert second.choices[0].message.content == "It is snowing"
        named = await c.chat.completions.create(
            model="default", messages=msgs[:1], tools=WEATHER, max_tokens=200,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {"city": "Rome"}
        await c.close()


async def test_an_openai_agents_tool_loop(base: str) -> None:
    """The ``openai-agents`` SDK runs its own tool loop against lmos: call, run the tool, answer."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # its tracer would export to api.openai.com
    ran: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=base, api_key="sk-test", max_retries=0)
    agent = agents.Agent(name="weather", instructions="be helpful", tools=[get_weather],
                         model=agents.OpenAIChatCompletionsModel(model="default", openai_client=client))
    result = await agents.Runner.run(agent, "what is the weather in Paris?")
    assert ran == ["Paris"] and result.final_output == "The tool said: sunny in Paris"
    streamed = agents.Runner.run_streamed(agent, "what is the weather in Paris?")
    async for _ in streamed.stream_events():
        pass
    assert ran == ["Paris", "Paris"] and streamed.final_output == "The tool said: sunny in Paris"
    await client.close()
