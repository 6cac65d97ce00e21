"""Function tools on ``/v1/chat/completions`` for an lmos-format model, through the official SDK.

The client's ``tools`` become the chat format's tool declarations (the signature block in the
system turn), calls come back as ``tool_calls`` and results go back as ``tool`` messages in
call order.  The scripted model reads its window the way the built-in model does: it calls
only tools declared in the system turn, answers from the ``<|tool|>`` turns it sees, and
continues a prefilled call (``tool_choice``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

import lmos
from lmos.chatformat import DEFAULT_SYSTEM_PROMPT
from lmos.drivers.scripted import ScriptedDriver
from lmos.server.wire import HTTPError
from tests.httputil import served, sse_events

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.anyio

TOOLS: Any = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city.\nMore text the block leaves out.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                        "unit": {"enum": ["c", "f"]}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "The time in a zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]
BLOCK = 'Tools:\nget_weather(city: string, unit?: "c"|"f") - Weather in a city.\nget_time(tz?: string) - ' \
        'The time in a zone'
WINDOWS: list[str] = []


def call(tool: str, **args: Any) -> str:
    return "<|call|>" + json.dumps({"tool": tool, "args": args})


def model(window: str) -> str:
    """A model that calls only what its system turn declares, and answers from tool results."""
    WINDOWS.append(window)
    system = window.split("<|end|>", 1)[0]
    block = system.split("Tools:\n", 1)[1] if "Tools:\n" in system else ""
    declared = re.findall(r"^([\w.-]+)\(", block, re.M)
    if window.endswith('"args": '):  # a named tool_choice: the call is prefilled up to its arguments
        return '{"tz": "UTC"}}' if window.endswith('"get_time", "args": ') else '{"city": "Rome"}}'
    if window.endswith("<|call|>"):  # tool_choice "required": the turn starts with the call marker
        return json.dumps({"tool": declared[0], "args": {"city": "Oslo"}})
    turn = window.rsplit("<|assistant|>", 2)[-2]
    results = re.findall(r"<\|tool\|>(.*?)<\|end\|>", turn, re.S)
    if results:
        return "Results: " + " | ".join(results)
    user = re.findall(r"<\|user\|>(.*?)<\|end\|>", window, re.S)[-1]
    if "stubborn" in user:  # calls even without a declaration: the server must not pass it on
        return call("get_weather", city="X")
    if "weather" in user and "get_weather" in declared:
        cities = re.findall(r"[A-Z][a-z]+", user.split("weather", 1)[1])
        return "".join(call("get_weather", city=c) for c in cities)
    return "No tool needed."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with lmos.Kernel(model=ScriptedDriver(model, max_model_len=4096), state_dir=":memory:") as k, \
            served(k, token="sk-t") as url:
        yield url + "/v1"


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def run_tools(calls: Any) -> list[Any]:
    """The client side of a round trip: run each call, answer in *reverse* order (ids match them)."""
    weather = {"Paris": "sunny", "Lima": "rain"}
    out = [{"role": "tool", "tool_call_id": tc.id,
            "content": f"{weather[json.loads(tc.function.arguments)['city']]} in "
                       f"{json.loads(tc.function.arguments)['city']}"} for tc in calls]
    return out[::-1]


async def test_declarations_are_rendered_in_the_system_turn(base: str) -> None:
    c = openai.AsyncOpenAI(base_url=base, api_key="sk-t", max_retries=0)
    WINDOWS.clear()
    await c.chat.completions.create(model="default", messages=ask("hi"), tools=TOOLS)
    await c.chat.completions.create(model="default", messages=[{"role": "developer", "content": "be brief"},
                                                               *ask("hi")], tools=TOOLS)
    await c.chat.completions.create(model="default", messages=ask("hi"), tools=TOOLS, tool_choice="none")
    await c.chat.completions.create(model="default", messages=ask("hi"))
    with_default, with_dev, none, plain = WINDOWS
    assert with_default.startswith(f"<|system|>{DEFAULT_SYSTEM_PROMPT}\n{BLOCK}<|end|>\n")
    assert with_dev.startswith(f"<|system|>be brief\n{BLOCK}<|end|>\n<|user|>hi<|end|>\n")
    assert "Tools:" not in none and "Tools:" not in plain  # "none": no declaration
    assert none == plain
    await c.close()


async def test_parallel_calls_round_trip_sync_and_async(base: str) -> None:
    """Two calls in one turn; results sent back out of order come to the model in call order."""
    question = ask("what is the weather in Paris and Lima?")

    def sync_run() -> tuple[Any, Any, Any]:
        c = openai.OpenAI(base_url=base, api_key="sk-t", max_retries=0)
        first = c.chat.completions.create(model="default", messages=question, tools=TOOLS)
        with c.chat.completions.stream(model="default", messages=question, tools=TOOLS) as s:
            streamed = s.get_final_completion()
        msgs = [*question, first.choices[0].message.model_dump(exclude_none=True),
                *run_tools(first.choices[0].message.tool_calls)]
        return first, streamed, c.chat.completions.create(model="default", messages=msgs, tools=TOOLS)

    first, streamed, second = await anyio.to_thread.run_sync(sync_run)
    for got in (first, streamed):
        ch = got.choices[0]
        assert ch.finish_reason == "tool_calls" and not ch.message.content
        assert [(t.function.name, json.loads(t.function.arguments)) for t in ch.message.tool_calls] == [
            ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lima"})]
        assert all(t.id.startswith("call_") and t.type == "function" for t in ch.message.tool_calls)
    assert second.choices[0].message.content == "Results: sunny in Paris | rain in Lima"
    assert second.choices[0].finish_reason == "stop"

    c = openai.AsyncOpenAI(base_url=base, api_key="sk-t", max_retries=0)
    first = await c.chat.completions.create(model="default", messages=question, tools=TOOLS)
    stream = await c.chat.completions.create(model="default", messages=question, tools=TOOLS, stream=True)
    deltas = [ch async for ch in stream]
    assert deltas[-1].choices[0].finish_reason == "tool_calls"
    parts = [t for ch in deltas if ch.choices for t in ch.choices[0].delta.tool_calls or []]
    heads = [t for t in parts if t.id]  # OpenAI's shape: id, type and name first, then the arguments
    assert [(t.index, t.type, t.function.name, t.function.arguments) for t in heads] == [
        (0, "function", "get_weather", ""), (1, "function", "get_weather", "")]
    args = {t.index: t.function.arguments for t in parts if not t.id}
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"city": "Paris"}, 1: {"city": "Lima"}}
    msgs = [*question, first.choices[0].message.model_dump(exclude_none=True),
            *run_tools(first.choices[0].message.tool_calls)]
    stream = await c.chat.completions.create(model="default", messages=msgs, tools=TOOLS, stream=True)
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "Results: sunny in Paris | rain in Lima"
    await c.close()


async def test_tool_choice(base: str) -> None:
    c = openai.AsyncOpenAI(base_url=base, api_key="sk-t", max_retries=0)

    async def choice(text: str, **kw: Any) -> Any:
        r = await c.chat.completions.create(model="default", messages=ask(text), tools=TOOLS, **kw)
        return r.choices[0]

    auto = await choice("hello there")
    assert auto.message.content == "No tool needed." and auto.message.tool_calls is None
    required = await choice("hello there", tool_choice="required")
    assert required.finish_reason == "tool_calls"
    assert [(t.function.name, json.loads(t.function.arguments)) for t in required.message.tool_calls] == [
        ("get_weather", {"city": "Oslo"})]
    get_time = {"type": "function", "function": {"name": "get_time"}}
    named = await choice("weather in Paris", tool_choice=get_time)
    assert [(t.function.name, json.loads(t.function.arguments)) for t in named.message.tool_calls] == [
        ("get_time", {"tz": "UTC"})]
    none = await choice("stubborn weather in Paris", tool_choice="none")
    assert none.message.tool_calls is None and none.finish_reason == "stop"
    undeclared = await c.chat.completions.create(model="default", messages=ask("stubborn"))
    assert undeclared.choices[0].message.tool_calls is None  # no declaration: never a call
    one = await choice("weather in Paris and Lima", parallel_tool_calls=False)
    assert len(one.message.tool_calls) == 1
    streamed = await c.chat.completions.create(model="default", messages=ask("hi"), tools=TOOLS, stream=True,
                                               tool_choice=get_time)
    chunks = [x async for x in streamed]
    parts = [t for ch in chunks if ch.choices for t in ch.choices[0].delta.tool_calls or []]
    assert [t.function.name for t in parts if t.id] == ["get_time"]
    await c.close()


@pytest.mark.parametrize(("tools", "param", "words"), [
    ([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"city": {"type": "strng"}}}}}],
     "tools[0].function.parameters.properties.city.type", "unknown type 'strng'"),
    ([TOOLS[0], {"type": "function", "function": {"name": "g", "parameters": {
        "type": "object", "properties": {}, "required": ["x"]}}}],
     "tools[1].function.parameters.required[0]", "'x' is not one of the properties"),
    ([{"type": "function", "function": {"name": "bad name!"}}], "tools[0].function.name", "bad tool name"),
    ([{"type": "retrieval"}], "tools[0].type", "function"),
])
async def test_an_invalid_schema_is_a_400_naming_the_field(base: str, tools: Any, param: str,
                                                            words: str) -> None:
    c = openai.AsyncOpenAI(base_url=base, api_key="sk-t", max_retries=0)
    for kw in ({}, {"tool_choice": "none"}, {"stream": True}):
        with pytest.raises(openai.BadRequestError) as e:
            await c.chat.completions.create(model="default", messages=ask("hi"), tools=tools, **kw)
        body: Any = e.value.body
        assert body["param"] == param and words in body["message"], body
        assert body["type"] == "invalid_request_error" and body["errno"] == "EINVAL"
    await c.close()


async def test_results_must_answer_the_calls(base: str) -> None:
    turn = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}
    async with httpx.AsyncClient(base_url=base, headers={"authorization": "Bearer sk-t"}) as h:
        stray = {"role": "tool", "tool_call_id": "zz", "content": "x"}
        for results, param in (([stray], "messages[2].tool_call_id"), ([], "messages[1]")):
            r = await h.post("/chat/completions", json={"messages": [*ask("time?"), turn, *results],
                                                        "tools": TOOLS})
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        ok = await h.post("/chat/completions", json={"messages": [
            *ask("time?"), turn, {"role": "tool", "tool_call_id": "c1", "content": "noon"}], "tools": TOOLS})
        assert ok.json()["choices"][0]["message"]["content"] == "Results: noon"
        # the raw stream: role first, then the call's head and arguments, then the finish
        async with h.stream("POST", "/chat/completions", json={"messages": ask("weather in Paris"),
                                                               "tools": TOOLS, "stream": True}) as resp:
            events = [json.loads(d) for _, d in await sse_events(resp) if d != "[DONE]"]
        deltas = [e["choices"][0]["delta"] for e in events]
        assert deltas[0] == {"role": "assistant", "content": ""}
        head, args = deltas[-3]["tool_calls"][0], deltas[-2]["tool_calls"][0]
        assert head["function"] == {"name": "get_weather", "arguments": ""} and head["type"] == "function"
        assert args == {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
        assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_responses_function_tools(base: str) -> None:
    c = openai.AsyncOpenAI(base_url=base, api_key="sk-t", max_retries=0)
    flat = [{"type": "function", "name": t["function"]["name"], "description": t["function"]["description"],
             "parameters": t["function"]["parameters"]} for t in TOOLS]
    r = await c.responses.create(model="default", input="weather in Paris and Lima", tools=flat)
    calls = [o for o in r.output if o.type == "function_call"]
    assert [json.loads(o.arguments)["city"] for o in calls] == ["Paris", "Lima"]
    with pytest.raises(openai.BadRequestError) as e:
        await c.responses.create(model="default", input="hi", tools=[
            {"type": "function", "name": "f",
             "parameters": {"type": "object", "properties": {"a": {"type": "x"}}}}])
    body: Any = e.value.body
    assert body["param"] == "tools[0].parameters.properties.a.type"
    assert body["message"].startswith("tools[0].parameters.properties.a.type: unknown type")
    await c.close()


def test_optional_arguments_as_sdks_spell_them() -> None:
    """``x: str | None = None`` comes as anyOf-with-null (openai-agents) or a type list."""
    from lmos.chatformat import tool_block
    from lmos.server.openai_format import declarations

    decls = declarations([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "additionalProperties": False, "required": ["a"],
        "properties": {"a": {"type": "string"}, "b": {"anyOf": [{"type": "integer"}, {"type": "null"}],
                                                       "default": None},
                       "c": {"type": ["number", "null"]}}}}}])
    assert tool_block(decls) == "Tools:\nf(a: string, b?: integer, c?: number)"
    with pytest.raises(HTTPError) as e:  # a real union stays refused, naming the field
        declarations([{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"u": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}}}])
    assert getattr(e.value, "param", None) == "tools[0].function.parameters.properties.u"
