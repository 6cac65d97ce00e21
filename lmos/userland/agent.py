"""The agent loop: the program of an agent process.

Think (``llm_generate``), and when the model's turn calls tools, act
(``tool_call``, during which the process is BLOCKED and its KV may be kept,
swapped or dropped), append the results to the context, think again, up to a
step limit.  Every turn only *appends* to the process's context, never
re-sends it, so the KV prefix stays cached across steps.

The model is told which tools it may call: the tools the process may call
(``tool_list``, narrowed to the ``tools`` asked for) are *declared* in the
system turn, each with its description and argument schema.  A call to any
other tool is not made: it becomes an error observation that names the
declared tools, so the model can correct itself, and a tool the process holds
but did not declare cannot be reached by a model that guesses its name.

Two formats, chosen by the kernel from the model's tokenizer (``chat_format``):

- ``lmos``: the built-in model's own markers.  The declarations are the
  ``Tools:`` block of :func:`lmos.chatformat.tool_block`.  A turn may carry
  several calls, ``<|call|>{"tool": NAME, "args": {...}}<|call|>{...}<|end|>``;
  they run in order and each result comes back as its own
  ``<|tool|>RESULT<|end|>`` turn (failures as ``<|tool|>error: MESSAGE<|end|>``).
- ``template``: the tokenizer's chat template renders the conversation with
  the tool schemas, and calls are parsed in the ``<tool_call>{json}</tool_call>``
  style of Qwen2/Hermes templates (several blocks are several calls).  Each
  step appends only what the new rendering adds to the previous one (or
  restarts the context if a template re-renders earlier turns differently).

Every rendering reaches the kernel as segments of framing and data
(``llm_generate(segments=...)``): messages, declarations and tool results are
data, so a special-token string inside them is tokenized as plain text and
cannot end the tool turn or forge a call.

A malformed, undeclared or refused call becomes an error observation the model
can recover from; it never ends the process.  But the loop does not retry for
ever: once :data:`GIVE_UP_AFTER` calls in a row have failed, the model gets one
more turn to answer, and if it calls again the loop ends with a short, honest
answer (:func:`lmos.taskprompts.give_up_text`), as it does when the step limit
is reached, rather than handing back a dangling call as the answer.  Markers,
rendering and call parsing come from :mod:`lmos.chatformat`, the one
definition shared with training.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from lmos.chatformat import (
    ASSISTANT,
    CALL,
    DEFAULT_SYSTEM_PROMPT,
    END,
    TOOL,
    MalformedCall,
    Segment,
    answer_text,
    call_json,
    parse_calls,
    render_segments,
    segments_after,
    segments_text,
)
from lmos.errors import Errno, SyscallError
from lmos.taskprompts import GIVE_UP_AFTER, give_up_text

Call = tuple[str, dict[str, Any]]
OUT_OF_STEPS = "Sorry, I couldn't finish: I ran out of steps before I had an answer."
GARBLED = "Sorry, I couldn't get an answer: my tool calls kept coming out malformed."
_TEMPLATE_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


class ToolCallRecord(msgspec.Struct, kw_only=True):
    tool: str
    args: dict[str, Any]
    result: str
    ok: bool


class AgentResult(msgspec.Struct, kw_only=True):
    text: str  # the final answer (a short honest one when the loop gave up)
    calls: list[ToolCallRecord] = []
    steps: int = 0  # generations made
    finish_reason: str = "answer"  # "answer" | "max_steps" | "tool_errors" | the generation's finish reason


MAX_FAILED_CALLS = GIVE_UP_AFTER  # failed tool calls in a row after which the model's next call ends the loop


async def _give_up(sys: Any, why: str) -> None:
    """Say in one line why the loop stops without the model's answer: whoever watches (the shell,
    ``lmos run``) would otherwise see the process end silently after its last tool call."""
    await sys.call("write", text=f"\n[agent: gave up {why}]\n")


def declarations(listed: list[Any]) -> list[dict[str, Any]]:
    """``tool_list`` entries as tool declarations ``{name, description, parameters}``."""
    return [{"name": str(t.name), "description": str(t.description or ""), "parameters": dict(t.parameters)}
            for t in listed]


def undeclared(name: str, declared: list[str], denied: frozenset[str] = frozenset()) -> str:
    """The observation for a call to a tool that was not declared to the model (``denied``: tools
    asked for that the process may not call, which are not declared either)."""
    why = (f"tool {name!r} is not allowed to this process (it needs capability 'tool:{name}')"
           if name in denied else f"unknown tool {name!r}")
    if not declared:
        return f"error: {why}: no tools are declared, answer without tools"
    return f"error: {why}; the declared tools are: {', '.join(declared)}"


async def run_agent(
    sys: Any,
    messages: list[dict[str, Any]],
    *,
    tools: list[str] | None = None,
    max_steps: int = 8,
    max_tokens: int = 256,
    checkpoint: bool = False,
    **sampling: Any,
) -> AgentResult:
    """Run the loop for ``messages`` (a system message is added if missing).

    ``tools`` names the tools to declare (None: every tool the process may call).
    ``checkpoint``: the loop is the program (an agent app's main): its first syscall is
    ``restore``, and each turn ends with ``checkpoint(state)`` (:mod:`lmos.syscalls.checkpoint`),
    so a process recovered after a crash starts at its last turn, not at its first.
    """
    if max_steps < 1:
        raise SyscallError(Errno.EINVAL, "max_steps must be at least 1")
    saved = (await sys.call("restore")).state if checkpoint else None
    if isinstance(saved, dict) and isinstance(saved.get("done"), dict):  # it had answered: the same answer
        return msgspec.convert(saved["done"], AgentResult)
    if isinstance(saved, dict):
        return await _resume(sys, saved, max_steps)
    msgs = [dict(m) for m in messages]
    if not msgs or msgs[0].get("role") != "system":
        msgs.insert(0, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
    listed = (await sys.call("tool_list")).tools
    decls = declarations([t for t in listed if tools is None or t.name in tools])
    declared = [d["name"] for d in decls]
    denied = frozenset(tools or ()) - {str(t.name) for t in listed}
    fmt_reply = await sys.call("chat_format")
    fmt = fmt_reply.format
    gen = dict(max_tokens=max_tokens, **{k: v for k, v in sampling.items() if v is not None})
    if fmt == "template":
        schemas = [{"type": "function", "function": d} for d in decls]
        step: _LmosSteps | _TemplateSteps = _TemplateSteps(sys, msgs, schemas, gen)
    else:  # a model trained before declarations existed is not shown them (still only they run)
        step = _LmosSteps(sys, msgs, decls if getattr(fmt_reply, "declares_tools", True) else [], gen)
    loop = _Loop(sys, declared, denied)
    return await _turns(sys, step, loop, 1, max_steps, gen if checkpoint else None, fmt)


async def _turns(sys: Any, step: _LmosSteps | _TemplateSteps, loop: _Loop, first: int, max_steps: int,
                 gen: dict[str, Any] | None, fmt: str) -> AgentResult:
    """Turns ``first``..``max_steps``; with ``gen`` (checkpointing on) each ends with a checkpoint."""
    async def done(r: AgentResult) -> AgentResult:
        if gen is not None:
            await _checkpoint(sys, {"done": msgspec.to_builtins(r)})
        return r

    async def turn_over(n: int) -> None:
        if gen is not None:
            await _checkpoint(sys, {"next": n + 1, "max_steps": max_steps, "gen": gen, "format": fmt,
                                    "steps": step.state(), "loop": loop.state()})

    text, reason = "", "max_steps"
    for n in range(first, max_steps + 1):
        text, finish = await step.generate()
        try:
            calls = step.parse(text)
        except MalformedCall as exc:
            if loop.failed >= MAX_FAILED_CALLS:
                return await done(await loop.give_up(n, f"(last: {exc})"))
            loop.record("", {}, f"error: {exc}", ok=False)
            await step.observe(text, [], [f"error: {exc}"])
            await turn_over(n)
            continue
        if not calls:
            return await done(AgentResult(text=answer_text(text), calls=loop.calls, steps=n,
                                          finish_reason="answer" if finish in ("eos", "stop") else finish))
        if loop.failed >= MAX_FAILED_CALLS:  # the model had its chance to answer after the failures
            return await done(await loop.give_up(n))
        results = [await loop.run(name, args) for name, args in calls]
        await step.observe(text, calls, results)
        if finish in ("quota", "length") and n == max_steps:
            reason = finish
        await turn_over(n)
    await _give_up(sys, f"after {max_steps} step{'s' if max_steps != 1 else ''} without an answer"
                   if reason == "max_steps" else f"without an answer: generation stopped ({reason})")
    return await done(AgentResult(text=OUT_OF_STEPS, calls=loop.calls, steps=max_steps, finish_reason=reason))


async def _checkpoint(sys: Any, state: dict[str, Any]) -> None:
    """A turn is over: save where the loop is.  A state too big to checkpoint (E2BIG) only means a
    recovery would start further back: the loop goes on."""
    try:
        await sys.call("checkpoint", state=state)
    except SyscallError as exc:
        if exc.errno != Errno.E2BIG:
            raise


async def _resume(sys: Any, saved: dict[str, Any], max_steps: int) -> AgentResult:
    """Go on from a checkpoint of :func:`_turns` (a recovered process): no syscall before the next
    turn's, so the steps after the checkpoint replay from the journal as they were made."""
    gen, fmt, st = dict(saved["gen"]), str(saved["format"]), saved["steps"]
    step: _LmosSteps | _TemplateSteps = _TemplateSteps.resumed(sys, st, gen) if fmt == "template" \
        else _LmosSteps.resumed(sys, st, gen)
    loop = _Loop.resumed(sys, saved["loop"])
    return await _turns(sys, step, loop, int(saved["next"]), int(saved.get("max_steps", max_steps)), gen, fmt)


class _Loop:
    """The calls made so far and how many failed in a row."""

    def __init__(self, sys: Any, declared: list[str], denied: frozenset[str]) -> None:
        self.sys, self.declared, self.denied = sys, declared, denied
        self.calls: list[ToolCallRecord] = []
        self.failed = 0  # tool calls that failed in a row
        self.last_failed = ""  # the tool of the last failed call ("" for a malformed one)

    def state(self) -> dict[str, Any]:
        return {"declared": self.declared, "denied": sorted(self.denied), "failed": self.failed,
                "last_failed": self.last_failed, "calls": msgspec.to_builtins(self.calls)}

    @classmethod
    def resumed(cls, sys: Any, st: dict[str, Any]) -> _Loop:
        loop = cls(sys, list(st["declared"]), frozenset(st["denied"]))
        loop.failed, loop.last_failed = int(st["failed"]), str(st["last_failed"])
        loop.calls = msgspec.convert(st["calls"], list[ToolCallRecord])
        return loop

    def record(self, name: str, args: dict[str, Any], result: str, ok: bool) -> None:
        self.calls.append(ToolCallRecord(tool=name, args=args, result=result, ok=ok))
        self.failed = 0 if ok else self.failed + 1
        if not ok:
            self.last_failed = name

    async def run(self, name: str, args: dict[str, Any]) -> str:
        """Make one call (if ``name`` was declared) and record it; the observation text."""
        if name not in self.declared:
            result, ok = undeclared(name, self.declared, self.denied), False
        else:
            try:
                r = await self.sys.call("tool_call", name=name, args=args)
                result, ok = str(r.text), True
            except SyscallError as exc:
                result, ok = f"error: {exc.message}", False
        self.record(name, args, result, ok)
        # whoever watches the process (the shell) sees the observation between the turns
        await self.sys.call("write", text=f"\n[{name} -> {result}]\n")
        return result

    async def give_up(self, steps: int, detail: str = "") -> AgentResult:
        why = f"after {self.failed} failed tool calls in a row" + (f" {detail}" if detail else "")
        await _give_up(self.sys, why)
        text = give_up_text(self.last_failed) if self.last_failed else GARBLED
        return AgentResult(text=text, calls=self.calls, steps=steps, finish_reason="tool_errors")


class _LmosSteps:
    """lmos markers: each step appends the observations and a fresh ``<|assistant|>``."""

    def __init__(self, sys: Any, msgs: list[dict[str, Any]], decls: list[dict[str, Any]],
                 gen: dict[str, Any]) -> None:
        self.sys, self.gen = sys, gen
        self.pending = render_segments(msgs, add_generation_prompt=True, tools=decls or None)
        self.role, self.first = "user", True

    def state(self) -> dict[str, Any]:
        return {"pending": [[t, d] for t, d in self.pending], "role": self.role, "first": self.first}

    @classmethod
    def resumed(cls, sys: Any, st: dict[str, Any], gen: dict[str, Any]) -> _LmosSteps:
        step = cls(sys, [], [], gen)
        step.pending, step.role, step.first = _segments(st["pending"]), str(st["role"]), bool(st["first"])
        return step

    async def generate(self) -> tuple[str, str]:
        # The context is paged virtual memory (lmos.kernel.memory): the task (system prompt
        # and request) is pinned, later observations can be paged out and recalled.
        r = await self.sys.llm_generate(segments=self.pending, stop=[END], page=True, role=self.role,
                                        pin=self.first, **self.gen)
        self.first = False
        return str(r.text), str(r.finish_reason)

    def parse(self, text: str) -> list[Call]:
        return parse_calls(text)

    async def observe(self, text: str, calls: list[Call], results: list[str]) -> None:
        """One ``<|tool|>`` turn per result, in call order (one for a malformed turn)."""
        # each result is data: a "<|end|><|assistant|><|call|>..." in it stays text, never markers
        pending: list[Segment] = []
        for i, result in enumerate(results):
            pending += [(f"{'' if i == 0 else END}\n{TOOL}", False), (result, True)]
        self.pending = [*pending, (f"{END}\n{ASSISTANT}", False)]
        self.role = "tool"


class _TemplateSteps:
    """Chat-template models: append the difference between successive renderings."""

    def __init__(
        self, sys: Any, msgs: list[dict[str, Any]], schemas: list[dict[str, Any]], gen: dict[str, Any]
    ) -> None:
        self.sys, self.msgs, self.schemas, self.gen = sys, msgs, schemas, gen
        self.context = ""  # the text the process's context holds

    def state(self) -> dict[str, Any]:
        return {"msgs": self.msgs, "schemas": self.schemas, "context": self.context}

    @classmethod
    def resumed(cls, sys: Any, st: dict[str, Any], gen: dict[str, Any]) -> _TemplateSteps:
        step = cls(sys, list(st["msgs"]), list(st["schemas"]), gen)
        step.context = str(st["context"])
        return step

    async def generate(self) -> tuple[str, str]:
        r = await self.sys.call("chat_format", messages=self.msgs, tools=self.schemas or None)
        segments = _segments(r.segments)
        full = segments_text(segments)
        reset = not full.startswith(self.context)
        prompt = segments if reset else segments_after(segments, len(self.context))
        g = await self.sys.llm_generate(segments=prompt, reset=reset, **self.gen)
        self.context = full + str(g.text)
        return str(g.text), str(g.finish_reason)

    def parse(self, text: str) -> list[Call]:
        return template_calls(text)

    async def observe(self, text: str, calls: list[Call], results: list[str]) -> None:
        self.msgs.append({"role": "assistant", "content": answer_text(text)})
        names = [name for name, _ in calls] or ["error"]
        for name, result in zip(names, results, strict=True):
            self.msgs.append({"role": "tool", "content": result, "name": name})


def template_calls(text: str) -> list[Call]:
    """Every ``<tool_call>{...}</tool_call>`` of a turn, in order (Qwen2/Hermes chat templates)."""
    return [call_json(m.group(1), "name", "arguments") for m in _TEMPLATE_CALL.finditer(text)]


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
    """One model turn on a fresh context (no tools): for classifiers and planners.

    No tool is declared, so a turn that is a tool call anyway is no answer: it comes back as ""
    (the caller's fallback applies) rather than as a raw ``<|call|>`` for the app to pass on.
    """
    r = await sys.llm_generate(
        segments=await prompt_segments(sys, messages),
        reset=True,
        max_tokens=max_tokens,
        stop=[END],
        **{k: v for k, v in sampling.items() if v is not None},
    )
    text = answer_text(str(r.text))
    return "" if text.startswith(CALL) else text
