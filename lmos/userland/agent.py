"""The agent loop: the program of an agent process.

Think (``llm_generate``), and when the model's turn is a tool call, act
(``tool_call``, during which the process is BLOCKED and its KV may be kept,
swapped or dropped), append the result to the context, think again, up to a
step limit.  Every turn only *appends* to the process's context, never
re-sends it, so the KV prefix stays cached across steps.

Two formats, chosen by the kernel from the model's tokenizer (``chat_format``):

- ``lmos``: the built-in model's own markers.  A call is an assistant turn
  ``<|call|>{"tool": NAME, "args": {...}}``; results come back as
  ``<|tool|>RESULT<|end|>`` and failures as ``<|tool|>error: MESSAGE<|end|>``.
- ``template``: the tokenizer's chat template renders the conversation with
  the tool schemas, and calls are parsed in the ``<tool_call>{json}</tool_call>``
  style of Qwen2/Hermes templates.  Each step appends only what the new
  rendering adds to the previous one (or restarts the context if a template
  re-renders earlier turns differently).

Every rendering reaches the kernel as segments of framing and data
(``llm_generate(segments=...)``): messages and tool results are data, so a
special-token string inside them is tokenized as plain text and cannot end the
tool turn or forge a call.

A malformed, unknown or refused call becomes an error observation the model
can recover from; it never ends the process.  Markers, rendering and call
parsing come from :mod:`lmos.chatformat`, the one definition shared with
training.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lmos.chatformat import (
    ASSISTANT,
    DEFAULT_SYSTEM_PROMPT,
    END,
    TOOL,
    MalformedCall,
    Segment,
    answer_text,
    parse_call,
    parse_template_call,
    render_segments,
    segments_after,
    segments_text,
)
from lmos.errors import Errno, SyscallError


class ToolCallRecord(msgspec.Struct, kw_only=True):
    tool: str
    args: dict[str, Any]
    result: str
    ok: bool


class AgentResult(msgspec.Struct, kw_only=True):
    text: str  # the final answer (or the last turn, when the step limit ended the loop)
    calls: list[ToolCallRecord] = []
    steps: int = 0  # generations made
    finish_reason: str = "answer"  # "answer" | "max_steps" | "tool_errors" | the generation's finish reason


MAX_FAILED_CALLS = 3  # failed tool calls in a row after which the loop gives up


async def _give_up(sys: Any, why: str) -> None:
    """Say in one line why the loop stops without an answer: whoever watches (the shell, ``lmos
    run``) would otherwise see the process end silently after its last tool call."""
    await sys.call("write", text=f"\n[agent: gave up {why}]\n")


async def run_agent(
    sys: Any,
    messages: list[dict[str, Any]],
    *,
    tools: list[str] | None = None,
    max_steps: int = 8,
    max_tokens: int = 256,
    **sampling: Any,
) -> AgentResult:
    """Run the loop for ``messages`` (a system message is added if missing)."""
    if max_steps < 1:
        raise SyscallError(Errno.EINVAL, "max_steps must be at least 1")
    msgs = [dict(m) for m in messages]
    if not msgs or msgs[0].get("role") != "system":
        msgs.insert(0, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
    listed = (await sys.call("tool_list")).tools
    allowed = [t for t in listed if tools is None or t.name in tools]
    fmt = (await sys.call("chat_format")).format
    gen = dict(max_tokens=max_tokens, **{k: v for k, v in sampling.items() if v is not None})
    calls: list[ToolCallRecord] = []
    if fmt == "template":
        schemas = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in allowed
        ]
        step: _LmosSteps | _TemplateSteps = _TemplateSteps(sys, msgs, schemas, gen)
    else:
        step = _LmosSteps(sys, msgs, gen)
    text, reason = "", "max_steps"
    failed = 0  # tool calls that failed in a row
    for n in range(1, max_steps + 1):
        text, finish = await step.generate()
        try:
            call = step.parse(text)
        except MalformedCall as exc:
            calls.append(ToolCallRecord(tool="", args={}, result=f"error: {exc}", ok=False))
            failed += 1
            if failed >= MAX_FAILED_CALLS:
                await _give_up(sys, f"after {failed} failed tool calls in a row (last: {exc})")
                return AgentResult(text=answer_text(text), calls=calls, steps=n, finish_reason="tool_errors")
            await step.observe(text, None, f"error: {exc}")
            continue
        if call is None:
            return AgentResult(
                text=answer_text(text),
                calls=calls,
                steps=n,
                finish_reason="answer" if finish in ("eos", "stop") else finish,
            )
        name, args = call
        try:
            r = await sys.call("tool_call", name=name, args=args)
            result, ok = str(r.text), True
        except SyscallError as exc:
            result, ok = f"error: {exc.message}", False
        calls.append(ToolCallRecord(tool=name, args=args, result=result, ok=ok))
        # whoever watches the process (the shell) sees the observation between the turns
        await sys.call("write", text=f"\n[{name} -> {result}]\n")
        failed = 0 if ok else failed + 1
        if failed >= MAX_FAILED_CALLS:
            await _give_up(sys, f"after {failed} failed tool calls in a row")
            return AgentResult(text=answer_text(text), calls=calls, steps=n, finish_reason="tool_errors")
        await step.observe(text, call, result)
        if finish in ("quota", "length") and n == max_steps:
            reason = finish
    await _give_up(sys, f"after {max_steps} step{'s' if max_steps != 1 else ''} without an answer"
                   if reason == "max_steps" else f"without an answer: generation stopped ({reason})")
    return AgentResult(text=answer_text(text), calls=calls, steps=max_steps, finish_reason=reason)


class _LmosSteps:
    """lmos markers: each step appends the observation and a fresh ``<|assistant|>``."""

    def __init__(self, sys: Any, msgs: list[dict[str, Any]], gen: dict[str, Any]) -> None:
        self.sys, self.gen = sys, gen
        self.pending = render_segments(msgs, add_generation_prompt=True)
        self.role, self.first = "user", True

    async def generate(self) -> tuple[str, str]:
        # The context is paged virtual memory (lmos.kernel.memory): the task (system prompt
        # and request) is pinned, later observations can be paged out and recalled.
        r = await self.sys.llm_generate(segments=self.pending, stop=[END], page=True, role=self.role,
                                        pin=self.first, **self.gen)
        self.first = False
        return str(r.text), str(r.finish_reason)

    def parse(self, text: str) -> tuple[str, dict[str, Any]] | None:
        return parse_call(text)

    async def observe(self, text: str, call: tuple[str, dict[str, Any]] | None, result: str) -> None:
        # the result is data: a "<|end|><|assistant|><|call|>..." in it stays text, never markers
        self.pending = [(f"\n{TOOL}", False), (result, True), (f"{END}\n{ASSISTANT}", False)]
        self.role = "tool"


class _TemplateSteps:
    """Chat-template models: append the difference between successive renderings."""

    def __init__(
        self, sys: Any, msgs: list[dict[str, Any]], schemas: list[dict[str, Any]], gen: dict[str, Any]
    ) -> None:
        self.sys, self.msgs, self.schemas, self.gen = sys, msgs, schemas, gen
        self.context = ""  # the text the process's context holds

    async def generate(self) -> tuple[str, str]:
        r = await self.sys.call("chat_format", messages=self.msgs, tools=self.schemas or None)
        segments = _segments(r.segments)
        full = segments_text(segments)
        reset = not full.startswith(self.context)
        prompt = segments if reset else segments_after(segments, len(self.context))
        g = await self.sys.llm_generate(segments=prompt, reset=reset, **self.gen)
        self.context = full + str(g.text)
        return str(g.text), str(g.finish_reason)

    def parse(self, text: str) -> tuple[str, dict[str, Any]] | None:
        return parse_template_call(text)

    async def observe(self, text: str, call: tuple[str, dict[str, Any]] | None, result: str) -> None:
        self.msgs.append({"role": "assistant", "content": answer_text(text)})
        self.msgs.append({"role": "tool", "content": result, "name": call[0] if call else "error"})


def _segments(raw: Any) -> list[Segment]:
    """Segments from a reply: tuples in-process, ``[text, is_data]`` lists over JSON (the sandbox)."""
    return [(str(text), bool(data)) for text, data in raw]


async def prompt_segments(sys: Any, messages: list[dict[str, Any]]) -> list[Segment]:
    """The rendering that starts a fresh context for ``messages`` (framing and data apart)."""
    r = await sys.call("chat_format", messages=messages)
    if r.format == "template":
        return _segments(r.segments)
    return render_segments(messages, add_generation_prompt=True)


async def prompt_for(sys: Any, messages: list[dict[str, Any]]) -> str:
    """The text that starts a fresh context for ``messages``, ready for the model's turn."""
    return segments_text(await prompt_segments(sys, messages))


async def ask(sys: Any, messages: list[dict[str, Any]], *, max_tokens: int = 64, **sampling: Any) -> str:
    """One model turn on a fresh context (no tools): for classifiers and planners."""
    r = await sys.llm_generate(
        segments=await prompt_segments(sys, messages),
        reset=True,
        max_tokens=max_tokens,
        stop=[END],
        **{k: v for k, v in sampling.items() if v is not None},
    )
    return answer_text(str(r.text))
