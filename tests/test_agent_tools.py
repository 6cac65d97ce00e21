"""Declared tools in the agent loop: the declaration block, undeclared calls, parallel calls, giving up;
built-in tools' declarations; the forgiving ``kv_get``; task prompts for sandboxed apps."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kutil import kernel
from test_agent import TemplateTokenizer, call, last_tool_result

import lmos
from lmos.chatformat import tool_block, validate_tools
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.tool import Tool, ToolCtx
from lmos.taskprompts import GIVE_UP_AFTER, give_up_text
from lmos.userland.agent import GARBLED, OUT_OF_STEPS
from lmos.userland.tools import basic, builtin_tools
from lmos.userland.tools.kvmatch import closest_key, stored_under

pytestmark = pytest.mark.anyio


def calls(*pairs: tuple[str, dict[str, Any]]) -> str:
    """One assistant turn carrying several calls (parallel calls)."""
    return "".join(call(name, **args) for name, args in pairs)


def tool_turns(window: str) -> list[str]:
    return re.findall(r"<\|tool\|>(.*?)<\|end\|>", window, re.S)


async def test_the_allowed_tools_are_declared_in_the_system_turn() -> None:
    windows: list[str] = []

    def model(window: str) -> str:
        windows.append(window)
        return "Hi."

    async with kernel(ScriptedDriver(model)) as k:
        await k.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                     tools=["kv_get", "calc"])
        listed = {t.name: t for t in builtin_tools()}
        # declared in tool_list's order (by name)
        block = tool_block([{"name": n, "description": listed[n].description,
                             "parameters": listed[n].parameters} for n in ("calc", "kv_get")])
        assert windows[0] == f"<|system|>Be brief.\n{block}<|end|>\n<|user|>hi<|end|>\n<|assistant|>"
        assert block.splitlines()[1:] == [
            "calc(expr: string) - Exact arithmetic, e.g. 15 / 100 * 200 or sqrt(144).",
            "kv_get(key: string) - Recall the value stored under a key."]
        # no tools: exactly the old rendering, no block
        await k.chat([{"role": "user", "content": "hi"}])
        assert windows[1] == ("<|system|>You are lmos, a helpful assistant with tools.<|end|>\n"
                              "<|user|>hi<|end|>\n<|assistant|>")


async def test_an_undeclared_tool_is_refused_naming_the_declared_ones() -> None:
    """Granted every tool but declared only calc: a call to clock is never made."""

    def model(window: str) -> str:
        result = last_tool_result(window)
        if result is None:
            return call("clock")
        return "ok" if "calc" in result else call("clock")

    async with kernel(ScriptedDriver(model)) as k:
        r = await k.chat([{"role": "user", "content": "time?"}], tools=["calc"], caps=["llm", "tool"])
        assert r.text == "ok" and r.calls == [{"tool": "clock", "args": {}, "ok": False,
                                               "result": "error: unknown tool 'clock'; the declared tools "
                                                         "are: calc"}]
        names = [e.name for e in (await k.syscall("trace", pid=r.pid)).entries]
        assert "tool_call" not in names


async def test_parallel_calls_run_in_order_with_one_tool_turn_each() -> None:
    windows: list[str] = []
    order: list[str] = []

    async def record(ctx: ToolCtx, args: dict[str, Any]) -> str:
        order.append(args["x"])
        return f"got {args['x']}"

    def model(window: str) -> str:
        windows.append(window)
        if "<|tool|>" not in window:
            return calls(("rec", {"x": "a"}), ("calc", {"expr": "2 + 3"}), ("rec", {"x": "b"}))
        return "done: " + "; ".join(tool_turns(window))

    async with kernel(ScriptedDriver(model)) as k:
        k.tools.register(Tool("rec", "Record x.", {"type": "object", "properties": {"x": {"type": "string"}},
                                                     "required": ["x"]}, record))
        r = await k.chat([{"role": "user", "content": "go"}], tools=["rec", "calc"])
        assert order == ["a", "b"]
        assert [(c["tool"], c["result"]) for c in r.calls] == [("rec", "got a"), ("calc", "5"),
                                                               ("rec", "got b")]
        assert r.text == "done: got a; 5; got b" and r.steps == 2
        # appended, not re-rendered: the call turn (the scripted driver ends it with EOS, a model with
        # <|end|>), then one tool turn per call in call order, then the assistant's turn
        assert windows[1].startswith(windows[0])
        assert windows[1][len(windows[0]):] == (
            calls(("rec", {"x": "a"}), ("calc", {"expr": "2 + 3"}), ("rec", {"x": "b"}))
            + "\n<|tool|>got a<|end|>\n<|tool|>5<|end|>\n<|tool|>got b<|end|>\n<|assistant|>")


async def test_parallel_template_calls() -> None:
    def model(window: str) -> str:
        if "<tool_response>" in window:
            return "Both: " + ", ".join(re.findall(r"<tool_response>\n(.*?)\n</tool_response>", window))
        return ('<tool_call>{"name": "calc", "arguments": {"expr": "6 * 7"}}</tool_call>\n'
                '<tool_call>{"name": "calc", "arguments": {"expr": "1 + 1"}}</tool_call>')

    drv = ScriptedDriver(model)
    drv.tokenizer = TemplateTokenizer()  # type: ignore[assignment]
    async with kernel(drv) as k:
        r = await k.chat([{"role": "user", "content": "two sums"}], tools=["calc"])
        assert r.text == "Both: 42, 2" and [c["result"] for c in r.calls] == ["42", "2"]


async def test_repeated_failures_end_with_a_short_honest_answer() -> None:
    """After GIVE_UP_AFTER failures in a row the model may still answer; calling again ends the loop."""
    seen: list[str] = []

    def stubborn(window: str) -> str:
        seen.append(window)
        return call("calc", expr="1/0")

    async with kernel(ScriptedDriver(stubborn)) as k:
        r = await k.chat([{"role": "user", "content": "divide"}], tools=["calc"], max_steps=8)
        assert r.text == give_up_text("calc") and r.finish_reason == "tool_errors"
        assert len(r.calls) == GIVE_UP_AFTER and not any(c["ok"] for c in r.calls)
        assert r.steps == GIVE_UP_AFTER + 1 and "<|call|>" not in r.text

    def gives_up_itself(window: str) -> str:
        failed = sum(1 for t in tool_turns(window) if t.startswith("error:"))
        return give_up_text("calc") if failed >= GIVE_UP_AFTER else call("calc", expr="1/0")

    async with kernel(ScriptedDriver(gives_up_itself)) as k:
        r = await k.chat([{"role": "user", "content": "divide"}], tools=["calc"])
        assert (r.text, r.finish_reason) == (give_up_text("calc"), "answer")

    async with kernel(ScriptedDriver('<|call|>{"tool": ')) as k:  # malformed every time
        r = await k.chat([{"role": "user", "content": "x"}], tools=["calc"])
        assert r.finish_reason == "tool_errors" and r.text == GARBLED


async def test_the_step_limit_ends_with_an_answer_not_a_dangling_call() -> None:
    async with kernel(ScriptedDriver(call("calc", expr="1+1"))) as k:
        r = await k.chat([{"role": "user", "content": "loop"}], tools=["calc"], max_steps=2)
        assert (r.text, r.finish_reason, r.steps) == (OUT_OF_STEPS, "max_steps", 2)


# -- declarations ---------------------------------------------------------------------
def test_every_builtin_tool_has_a_description_and_a_valid_schema() -> None:
    tools = builtin_tools()
    decls = validate_tools([{"name": t.name, "description": t.description, "parameters": t.parameters}
                            for t in tools])
    assert [d["name"] for d in decls] == [t.name for t in tools]
    for t, d in zip(tools, decls, strict=True):
        assert t.description and len(t.description) <= 120, t.name
        for key, schema in d["parameters"]["properties"].items():
            assert schema.get("description"), f"{t.name}.{key} has no description"
    assert basic.declarations() == [{"name": t.name, "description": t.description, "parameters": t.parameters}
                                    for t in basic.TOOLS]


async def _noop(ctx: ToolCtx, args: dict[str, Any]) -> str:
    return ""


@pytest.mark.parametrize(("parameters", "field"), [
    ({"type": "object", "properties": {"city": {"type": "strng"}}},
     "tool weather: parameters.properties.city.type"),
    ({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["town"]},
     "tool weather: parameters.required[0]"),
    ({"type": "array"}, "tool weather: parameters.type"),
    ({"type": "object", "properties": {"unit": {"enum": []}}},
     "tool weather: parameters.properties.unit.enum"),
])
def test_a_declaration_with_a_bad_schema_is_refused_naming_the_field(parameters: dict[str, Any],
                                                                      field: str) -> None:
    with pytest.raises(SyscallError) as e:
        Tool("weather", "The weather.", parameters, _noop)
    assert e.value.errno == Errno.EINVAL and e.value.message.startswith(field + ": "), e.value.message


async def test_tool_list_gives_descriptions_and_schemas() -> None:
    async with kernel() as k:
        async def lister(sys: Sys, argv: list[str]) -> Any:
            return [[t.name, t.description, t.parameters] for t in (await sys.call("tool_list")).tools]

        w = await k.wait(await k.spawn(lister, caps=["tool"]))
        got = {name: (desc, params) for name, desc, params in w.result}
        for t in builtin_tools():
            assert got[t.name] == (t.description, t.parameters)


# -- kv_get forgives the key ------------------------------------------------------------
def test_closest_key() -> None:
    keys = ["favorite_color", "wifi password", "Dentist-Appointment", "car"]
    assert closest_key("Favorite Color", keys) == "favorite_color"  # case/space/underscore first
    assert closest_key("dentist appointment", keys) == "Dentist-Appointment"
    assert closest_key("favourite colour", keys) == "favorite_color"  # difflib ratio >= 0.6
    assert closest_key("wifi pasword", keys) == "wifi password"
    assert closest_key("bank pin", keys) is None and closest_key("x", []) is None
    assert stored_under("blue", "favorite_color") == 'blue (stored under "favorite_color")'


async def test_kv_get_answers_from_the_closest_key_of_the_same_user() -> None:
    async def prog(sys: Sys, argv: list[str]) -> Any:
        out = []
        for name, args in json.loads(argv[0]):
            try:
                out.append((await sys.call("tool_call", name=name, args=args)).text)
            except SyscallError as e:
                out.append(f"{e.errno.name}: {e.message}")
        return out

    async def run(k: lmos.Kernel, steps: list[Any], uid: int) -> list[str]:
        w = await k.wait(await k.spawn(prog, [json.dumps(steps)], caps=["tool", "kv"], uid=uid))
        assert w.exit_status == 0, w.error
        return list(w.result)

    async with kernel() as k:
        assert await run(k, [("kv_set", {"key": "favorite_color", "value": "blue"}),
                             ("kv_set", {"key": "wifi password", "value": "hunter2"}),
                             ("kv_get", {"key": "favorite_color"}),
                             ("kv_get", {"key": "Favorite Color"}),
                             ("kv_get", {"key": "favourite colour"}),
                             ("kv_get", {"key": "wifi pass"}),
                             ("kv_get", {"key": "shoe size"})], uid=7) == [
            "ok", "ok", "blue", 'blue (stored under "favorite_color")',
            'blue (stored under "favorite_color")',
            'hunter2 (stored under "wifi password")', "ENOENT: no such key: shoe size"]
        # another user's keys are never candidates
        assert await run(k, [("kv_get", {"key": "favorite color"})], uid=8) == [
            "ENOENT: no such key: favorite color"]


# -- task prompts in sandboxed apps --------------------------------------------------------
PROBE = """name = "prompts-probe"
version = "1.0"
capabilities = ["llm"]
[entry]
kind = "code"
source = "main.py"
"""


async def test_code_apps_get_the_task_prompts_as_plain_functions() -> None:
    from lmos import taskprompts

    main = ("result = {'support': support_messages('where is my parcel?', ['Parcels arrive in 3 days.']),\n"
            "          'plan': parse_plan('1. a\\n2. b'), 'label': parse_sentiment('Negative.'),\n"
            "          'handoff': SUPPORT_HANDOFF,\n"
            "          'combine': team_combine_messages('sum', [('a', '1'), ('b', '2')])}\n")
    async with kernel(ScriptedDriver("x")) as k:
        await k.syscall("app_install", files={"app.toml": PROBE, "main.py": main}, grant=True)
        w = await k.wait(await k.spawn("prompts-probe", []))
        assert w.exit_status == 0, w.error
        assert w.result["support"] == taskprompts.support_messages("where is my parcel?",
                                                                   ["Parcels arrive in 3 days."])
        assert w.result["plan"] == ["a", "b"] and w.result["label"] == "negative"
        assert w.result["handoff"] == taskprompts.SUPPORT_HANDOFF
        assert w.result["combine"] == taskprompts.team_combine_messages("sum", [("a", "1"), ("b", "2")])
        for bad, errno, reason in [
            ("x = getattr(parse_plan, '__glo' + 'bals__')\n", Errno.EPERM, "blocked by the sandbox"),
            ("x = one_line('a', 3)\n", Errno.EIO, "NameError"),  # only the chosen functions
            ("x = support_messages(object(), [])\n", Errno.EIO, "must be JSON values"),
        ]:
            await k.syscall("app_install", files={"app.toml": PROBE, "main.py": bad}, grant=True, force=True)
            w = await k.wait(await k.spawn("prompts-probe", []))
            assert w.errno == errno and reason in (w.error or ""), w.error


async def test_ask_never_hands_back_a_raw_call() -> None:
    """``ask`` declares no tools: a call turn is no answer, so a planner falls back to the request."""
    async with kernel(ScriptedDriver(call("kv_get", key="x"))) as k:
        r = await k.wait(await k.spawn("team", ["what is 2 + 3"]))
        assert r.exit_status == 0, r.error
        assert r.result["plan"] == ["what is 2 + 3"] and "<|call|>" not in r.result["plan"][0]
