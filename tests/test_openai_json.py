"""JSON mode (``response_format: {"type": "json_object"}``), enforced by constrained decoding.

The automaton is checked against ``json.loads`` (every prefix of a JSON object is accepted, and
whatever it accepts as complete parses as an object), the constraint against token streams, and
the whole path through the SDK on the scripted driver (a "model" that wraps its JSON in chatter)
and on the built-in model's real driver (whose sampling the mask must steer).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmos
from lmos.drivers.scripted import EOS, ByteTokenizer, ScriptedDriver
from lmos.syscalls.jsonmode import MAX_WS, START, JsonObjectConstraint, TokenTable, feed
from tests.httputil import served

openai = pytest.importorskip("openai")

scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
           | st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=8)
objects = st.dictionaries(st.text(max_size=6), values, max_size=4)
layouts = st.sampled_from([{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False}])


@settings(max_examples=300, deadline=None)
@given(objects, layouts)
def test_every_prefix_of_an_object_is_accepted(obj: dict[str, Any], layout: dict[str, Any]) -> None:
    text = json.dumps(obj, **layout)
    state: Any = START
    for ch in text:
        state = feed(state, ch)
        assert state is not None, (text, ch)
    assert state is not None and state[0] == "done"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='{}[]":,0123456789.-+eEtrufalsn \\x', max_size=24))
def test_what_it_accepts_as_complete_is_an_object(text: str) -> None:
    state = feed(START, text)
    if state is not None and state[0] == "done":
        assert isinstance(json.loads(text), dict)
    if state is None:  # a rejected text is no prefix of any object: it does not parse as one either
        try:
            assert not isinstance(json.loads(text), dict), text
        except json.JSONDecodeError:
            pass


def test_the_automaton_refuses_what_json_refuses() -> None:
    for bad in ("[1]", '"x"', "{,}", '{"a" 1}', '{"a": 01}', '{"a": 1,}', '{"a": tru }', '{"a": "\x01"}',
                '{"a": "\\q"}', "{} {}", '{"a": 1.}', '{"a": -}', "{'a': 1}", "x{}"):
        assert feed(START, bad) is None or feed(START, bad)[0] != "done", bad  # type: ignore[index]
    assert feed(START, " ") is None  # the reply starts with the object
    assert feed(START, "{" + " " * MAX_WS) is not None and feed(START, "{" + " " * (MAX_WS + 1)) is None


@settings(max_examples=100, deadline=None)
@given(objects)
def test_the_constraint_allows_each_next_byte_and_eos_only_at_the_end(obj: dict[str, Any]) -> None:
    tok = ByteTokenizer()
    table = TokenTable.of(tok, 257)
    c = JsonObjectConstraint(table, [EOS])
    prompt = tok.encode("prompt")
    ids = tok.encode(json.dumps(obj, ensure_ascii=False))
    for i, t in enumerate(ids):
        allowed = c(prompt + ids[:i])
        assert allowed is not None and t in allowed and EOS not in allowed
    final = c(prompt + ids)
    assert final is not None and EOS in final and ord("{") not in final


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CHATTY = 'Sure! Here it is: {"city": "Paris", "temp": [21.5, -3e2], "ok": true, "note": "a \\"q\\" é"} Enjoy!'


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with lmos.Kernel(model=ScriptedDriver(CHATTY), state_dir=":memory:") as k, served(k) as url:
        yield url + "/v1"


@pytest.mark.anyio
async def test_json_mode_through_the_sdk(base: str) -> None:
    c = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
    msgs: Any = [{"role": "user", "content": "weather as JSON"}]
    free = await c.chat.completions.create(model="default", messages=msgs, max_tokens=300)
    assert free.choices[0].message.content == CHATTY  # the model, left alone, is chatty
    kw: Any = {"model": "default", "messages": msgs, "max_tokens": 300}
    fmt: Any = {"type": "json_object"}
    plain = await c.chat.completions.create(**kw, response_format=fmt)
    content = plain.choices[0].message.content
    assert json.loads(content) == {"city": "Paris", "temp": [21.5, -300.0], "ok": True, "note": 'a "q" é'}
    assert plain.choices[0].finish_reason == "stop"
    stream = await c.chat.completions.create(**kw, response_format=fmt, stream=True)
    assert "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices]) == content
    n = await c.chat.completions.create(**kw, response_format=fmt, n=2)
    assert [ch.message.content for ch in n.choices] == [content, content]  # each fork constrained
    r = await c.responses.create(model="default", input="weather as JSON", max_output_tokens=300,
                                 text={"format": {"type": "json_object"}})
    assert r.output_text == content
    for bad in ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
                {"response_format": fmt, "tools": [{"type": "function", "function": {"name": "f"}}]}):
        with pytest.raises(openai.BadRequestError) as e:
            await c.chat.completions.create(model="default", messages=msgs, **bad)
        assert e.value.body["param"] == "response_format"  # type: ignore[index]
    await c.close()


@pytest.mark.anyio
async def test_json_mode_steers_the_builtin_model() -> None:
    """The real driver's sampling is masked: greedy output of the built-in model becomes an object."""
    from lmos.drivers.hf import HFDriver
    from lmos.models import builtin_model_path

    drv = HFDriver.from_pretrained(str(builtin_model_path()), device="cpu", kv_memory="16MiB")
    async with lmos.Kernel(model=drv, state_dir=":memory:") as k, served(k) as url:
        c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        msgs: Any = [{"role": "user", "content": "hi"}]
        free = await c.chat.completions.create(model="default", messages=msgs, max_tokens=12, temperature=0)
        assert not (free.choices[0].message.content or "").startswith("{")  # left alone: no JSON
        got = await c.chat.completions.create(model="default", messages=msgs, max_tokens=80, temperature=0,
                                              response_format={"type": "json_object"})
        content, finish = got.choices[0].message.content or "", got.choices[0].finish_reason
        assert content.startswith("{"), content
        if finish == "stop":
            assert isinstance(json.loads(content), dict), content
        else:  # cut by max_tokens: still a prefix of an object
            assert finish == "length" and feed(START, content) is not None, content
        await c.close()
