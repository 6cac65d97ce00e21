"""``/v1/responses`` through the official SDK and ``openai-agents``' default (Responses) model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_openai_sdk import anyio_backend, base, in_thread, sync_client  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.anyio

WEATHER: Any = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


async def test_plain_and_streamed_text(base: str) -> None:  # noqa: F811
    def run() -> tuple[Any, list[Any]]:
        c = sync_client(base)
        plain = c.responses.create(model="default", input="hi", max_output_tokens=64)
        return plain, list(c.responses.create(model="default", input="hi", max_output_tokens=64, stream=True))

    plain, events = await in_thread(run)
    assert plain.status == "completed" and plain.output_text == "hello from lmos, token by token"
    assert plain.usage.output_tokens > 0 and plain.store is False
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == plain.output_text and len(deltas) > 10
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output_text == plain.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_function_call_round_trip(base: str) -> None:  # noqa: F811
    def run() -> tuple[Any, Any, list[Any]]:
        c = sync_client(base)
        items: list[Any] = [{"role": "user", "content": "what is the weather in Paris?"}]
        first = c.responses.create(model="default", input=items, tools=WEATHER)
        calls = [o for o in first.output if o.type == "function_call"]
        items += [o.model_dump(exclude_none=True) for o in first.output]
        items += [{"type": "function_call_output", "call_id": fc.call_id,
                   "output": f"sunny in {json.loads(fc.arguments)['city']}"} for fc in calls]
        second = c.responses.create(model="default", input=items, tools=WEATHER)
        streamed = list(c.responses.create(model="default", input=items[:1], tools=WEATHER, stream=True))
        return first, second, streamed

    first, second, streamed = await in_thread(run)
    (fc,) = first.output
    assert fc.type == "function_call" and fc.name == "get_weather" and fc.call_id.startswith("call_")
    assert json.loads(fc.arguments) == {"city": "Paris"}
    assert second.output_text == "The tool said: sunny in Paris"
    done = streamed[-1].response
    assert [o.type for o in done.output] == ["function_call"] and done.output[0].name == "get_weather"
    assert not [e for e in streamed if e.type == "response.output_text.delta"]


async def test_state_is_refused_not_faked(base: str) -> None:  # noqa: F811
    def run() -> Any:
        try:
            sync_client(base).responses.create(model="default", input="hi", previous_response_id="resp_x")
        except openai.BadRequestError as exc:
            return exc
        return None

    exc = await in_thread(run)
    assert exc is not None and exc.body["param"] == "previous_response_id"


async def test_openai_agents_default_model(base: str) -> None:  # noqa: F811
    """``openai-agents`` with its default Responses model: the tool loop runs against lmos."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    ran: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=base, api_key="sk-test", max_retries=0)
    agent = agents.Agent(name="weather", instructions="be helpful", tools=[get_weather],
                         model=agents.OpenAIResponsesModel(model="default", openai_client=client))
    result = await agents.Runner.run(agent, "what is the weather in Paris?")
    assert ran == ["Paris"] and result.final_output == "The tool said: sunny in Paris"
    streamed = agents.Runner.run_streamed(agent, "what is the weather in Paris?")
    async for _ in streamed.stream_events():
        pass
    assert ran == ["Paris", "Paris"] and streamed.final_output == "The tool said: sunny in Paris"
    await client.close()
