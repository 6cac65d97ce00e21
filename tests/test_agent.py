"""The agent loop and Kernel.chat on the scripted driver with a tool-using responder."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.chatformat import MalformedCall, parse_call, parse_template_call, render
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.tool import Tool, ToolCtx

pytestmark = pytest.mark.anyio


def call(tool: str, **args: Any) -> str:
    return "<|call|>" + json.dumps({"tool": tool, "args": args})


def last_tool_result(window: str) -> str | None:
    found = re.findall(r"<\|tool\|>(.*?)<\|end\|>", window, re.S)
    return found[-1] if found else None


def calc_model(window: str) -> str:
    """Behaves like the built-in model: call calc for the question, then answer from the result."""
    result = last_tool_result(window)
    if result is not None:
        return f"The answer is {result}."
    question = re.findall(r"<\|user\|>what is (.*?)\?<\|end\|>", window)[-1]
    return call("calc", expr=question)


async def test_tool_call_blocks_then_result_is_appended_then_answer() -> None:
    windows: list[str] = []
    gate, started = anyio.Event(), anyio.Event()

    def model(window: str) -> str:
        windows.append(window)
        return calc_model(window) if "<|tool|>" in window else call("slowcalc", expr="12 * 7")

    async def slowcalc(ctx: ToolCtx, args: dict[str, Any]) -> str:
        started.set()
        await gate.wait()
        return "84"

    async with kernel(ScriptedDriver(model)) as k:
        k.tools.register(
            Tool(
                "slowcalc",
                "calc, slowly",
                {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]},
                slowcalc,
            )
        )
        out: dict[str, Any] = {}

        async def run() -> None:
            out["r"] = await k.chat([{"role": "user", "content": "what is 12 * 7?"}], tools=["slowcalc"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await started.wait()
            [p] = [p for p in await k.ps() if p.app.startswith("chat#")]
            assert (p.state, p.blocked_on) == ("blocked", "tool:slowcalc")
            gate.set()
        r = out["r"]
        assert r.text == "The answer is 84."
        assert r.calls == [{"tool": "slowcalc", "args": {"expr": "12 * 7"}, "result": "84", "ok": True}]
        assert (r.steps, r.finish_reason) == (2, "answer")
        assert r.usage.completion_tokens > 0
        # the context only grew: the second window extends the first (KV prefix kept)
        assert len(windows) == 2 and windows[1].startswith(windows[0])
        assert windows[0].startswith(  # the allowed tool is declared in the system turn
            "<|system|>You are lmos, a helpful assistant with tools.\nTools:\nslowcalc(expr: string) - calc, "
            "slowly<|end|>\n<|user|>"
        )
        assert windows[1].endswith("<|tool|>84<|end|>\n<|assistant|>")


async def test_malformed_and_denied_calls_become_observations() -> None:
    def model(window: str) -> str:
        result = last_tool_result(window)
        if result is None:
            return '<|call|>{"tool": "calc", "args": {'
        if result.startswith("error: malformed"):
            return call("clock")  # not declared (nor granted): refused without a tool_call
        if "declared tools" in result:
            return call("calc", expr="2+3")
        return f"done: {result}"

    async with kernel(ScriptedDriver(model)) as k:
        r = await k.chat([{"role": "user", "content": "hi"}], tools=["calc"])
        assert r.text == "done: 5" and r.finish_reason == "answer"
        assert [c["ok"] for c in r.calls] == [False, False, True]
        assert r.calls[0]["result"].startswith("error: malformed tool call (invalid JSON")
        assert r.calls[1]["result"] == "error: unknown tool 'clock'; the declared tools are: calc"


async def test_step_limit() -> None:
    async with kernel(ScriptedDriver(call("calc", expr="1+1"))) as k:
        r = await k.chat([{"role": "user", "content": "loop"}], tools=["calc"], max_steps=3)
        assert (r.steps, r.finish_reason, len(r.calls)) == (3, "max_steps", 3)
        assert all(c["result"] == "2" for c in r.calls)
        with pytest.raises(SyscallError) as e:
            await k.chat([{"role": "user", "content": "x"}], tools=["no_such_tool"])
        assert e.value.errno == Errno.ENOENT


async def test_chat_without_tools_and_multi_turn_messages() -> None:
    async with kernel(ScriptedDriver(lambda w: "Hello!" if w.count("<|user|>") == 2 else "?")) as k:
        msgs = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hey"},
            {"role": "user", "content": "again"},
        ]
        r = await k.chat(msgs, max_steps=1)
        assert (r.text, r.calls, r.steps) == ("Hello!", [], 1)


def test_parsers() -> None:
    """The agent loop parses and renders with lmos.chatformat, the module training uses."""
    assert parse_call("plain answer") is None
    assert parse_call('<|call|>{"tool": "calc", "args": {"expr": "1"}}<|end|>') == ("calc", {"expr": "1"})
    for bad in ['<|call|>{"tool": 3}', "<|call|>[1]", '<|call|>{"tool": "x", "args": []}', "<|call|>{"]:
        with pytest.raises(MalformedCall):
            parse_call(bad)
    text = 'Let me check.\n<tool_call>\n{"name": "calc", "arguments": {"expr": "2*3"}}\n</tool_call>'
    assert parse_template_call(text) == ("calc", {"expr": "2*3"})
    assert parse_template_call('<tool_call>{"name": "c", "arguments": "{\\"a\\": 1}"}</tool_call>') == (
        "c",
        {"a": 1},
    )
    assert parse_template_call("no call here") is None
    with pytest.raises(MalformedCall):
        parse_template_call("<tool_call>{oops</tool_call>")
    assert (
        render([{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}])
        == "<|user|>x<|end|>\n<|tool|>y<|end|>\n"
    )
    with pytest.raises(SyscallError) as e:
        render([{"role": "robot", "content": "x"}])
    assert e.value.errno == Errno.EINVAL


HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{{ messages[0].content if messages[0].role == 'system' else '' }}\n# Tools\n<tools>"
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools><|im_end|>\n{% endif %}"
    "{%- for m in messages %}{%- if m.role == 'system' and tools %}"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}"
    "\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TemplateTokenizer:
    """Bytes as ids (what the scripted driver speaks) plus a real transformers tokenizer
    carrying a Hermes-style tool template, which is what the kernel inspects and renders with."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        from lmos.drivers.scripted import ByteTokenizer

        self.bytes = ByteTokenizer()
        self.hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, "[UNK]")))
        self.hf.chat_template = HERMES_TEMPLATE

    def encode(self, text: str) -> list[int]:
        return self.bytes.encode(text)

    def decode(self, token_ids: list[int]) -> str:
        return self.bytes.decode(token_ids)


async def test_template_format_hermes_tool_calls() -> None:
    windows: list[str] = []

    def model(window: str) -> str:
        windows.append(window)
        if "<tool_response>" in window:
            result = window.rsplit("<tool_response>\n", 1)[1].split("\n</tool_response>", 1)[0]
            return f"It is {result}."
        assert '"name": "calc"' in window  # the tool schema was rendered by the template
        return '<tool_call>\n{"name": "calc", "arguments": {"expr": "6 * 7"}}\n</tool_call>'

    drv = ScriptedDriver(model)
    drv.tokenizer = TemplateTokenizer()  # type: ignore[assignment]
    async with kernel(drv) as k:
        r = await k.chat([{"role": "user", "content": "what is 6 * 7?"}], tools=["calc"])
        assert r.text == "It is 42." and r.calls[0]["result"] == "42"
        assert windows[0].startswith("<|im_start|>system\n") and windows[0].endswith(
            "<|im_start|>assistant\n"
        )
        assert windows[1].startswith(windows[0])
        # appended, not re-sent: the prompts add up to the final context minus the generated call
        gen = len(b'<tool_call>\n{"name": "calc", "arguments": {"expr": "6 * 7"}}\n</tool_call>')
        assert r.usage.prompt_tokens == len(windows[1].encode()) - gen
