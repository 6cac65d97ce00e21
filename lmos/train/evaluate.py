"""End-to-end task evaluation: replay conversations with the model acting and real tools.

A reference conversation supplies the user turns and what a correct assistant
does.  The model writes every assistant turn itself (its own calls and answers
stay in the history), its calls run on a :class:`~lmos.train.toolbox.ToolBox`
seeded with the conversation's key-value store and clock, and each user turn
is scored:

* ``call_ok``: the first assistant turn is a call to the reference tool with
  exactly the reference arguments;
* ``answer_ok``: the final answer contains what the tool's result demands
  (:func:`~lmos.train.toolbox.answer_must_contain`);
* ``no_tool_ok``: a turn whose reference uses no tool is answered without one
  (and ``repeat_ok``: a repeat request is answered with exactly the text).

An episode is a generator that yields prompts (message lists) and receives the
model's text, so any generation backend can drive it: :func:`hf_generate_fn`
batches ``model.generate`` here; the kernel's agent loop can drive the same
episodes through syscalls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmos.chatformat import END, PAD, calls_message, calls_of, parse_calls, render, with_tools
from lmos.train.data import Conversation
from lmos.train.toolbox import DEFAULT_NOW, TOOLS, ToolBox, answer_must_contain

Message = dict[str, Any]
GenerateFn = Callable[[list[list[Message]]], list[str]]
MAX_HOPS = 3


@dataclass
class TurnScore:
    """How the model did on one user turn."""

    kind: str
    uses_tool: bool
    call_ok: bool = False
    answer_ok: bool = False
    no_tool_ok: bool = False
    repeat_ok: bool | None = None
    transcript: list[Message] = field(default_factory=list)


Call = tuple[str, dict[str, Any]]


@dataclass
class RefTurn:
    """What a correct assistant does after one user turn of a reference conversation."""

    user: Message
    calls: list[Call]  # the first assistant turn's calls ([]: answer without a tool)
    answer: str  # the final answer
    must: list[str]  # facts the final answer must contain (the last tool turn's results)


def reference(conv: Conversation) -> list[RefTurn]:
    """The reference turns of a conversation (parallel calls and several hops included)."""
    out: list[RefTurn] = []
    msgs = conv.messages
    for i, m in enumerate(msgs):
        if m["role"] != "user":
            continue
        calls: list[Call] = []
        last: list[Call] = []
        results: list[str] = []
        answer = ""
        for later in msgs[i + 1 :]:
            if later["role"] == "user":
                break
            if later["role"] == "assistant":
                found = calls_of(later)
                if found:
                    calls = calls or found
                    last, results = found, []
                else:
                    answer = str(later.get("content") or "")
            elif later["role"] == "tool":
                results.append(str(later.get("content") or ""))
        must = [answer_must_contain(t, a, r) for (t, a), r in zip(last, results, strict=False)]
        out.append(RefTurn(m, calls, answer, must))
    return out


def _reference_turns(conv: Conversation) -> list[tuple[Message, Call | None, str]]:
    """(user message, first reference call or None, final answer) per user turn (the v1 view)."""
    return [(t.user, t.calls[0] if t.calls else None, t.answer) for t in reference(conv)]


def same_calls(got: list[Call], want: list[Call]) -> bool:
    """The same calls, in any order (parallel calls are independent)."""
    key = lambda c: json.dumps(c, sort_keys=True, ensure_ascii=False)  # noqa: E731
    return sorted(map(key, got)) == sorted(map(key, want))


def turn_kind(calls: list[Call], answer: str, user: Message) -> str:
    """``calc``/``kv_get``/... for lmos tools, ``declared`` for others, ``parallel`` for several calls."""
    if len(calls) > 1:
        return "parallel"
    if calls:
        return calls[0][0] if calls[0][0] in TOOLS else "declared"
    return "repeat" if answer and answer in str(user["content"]) else "chat"


def episode(conv: Conversation) -> Generator[list[Message], str, list[TurnScore]]:
    """Replay one conversation; yields prompts, receives generated text, returns turn scores.

    Prompts carry the conversation's tool declarations (in the system turn), and
    the model's calls run on a ToolBox with the conversation's store, clock and
    the recorded results of its synthetic tools.
    """
    box = ToolBox(conv.meta.get("kv") or {}, conv.meta.get("now") or DEFAULT_NOW, conv.meta.get("fixed"))
    history: list[Message] = [m for m in conv.messages[:1] if m["role"] == "system"]
    scores: list[TurnScore] = []
    for ref in reference(conv):
        history.append(ref.user)
        kind = turn_kind(ref.calls, ref.answer, ref.user)
        score = TurnScore(kind=kind, uses_tool=bool(ref.calls))
        start = len(history)
        first = True
        for _hop in range(MAX_HOPS):
            text = yield with_tools(list(history), conv.tools)
            try:
                calls = parse_calls(text)
            except ValueError:
                calls = []  # an invalid call counts as a (wrong) plain answer
            if calls:
                if first and ref.calls:
                    score.call_ok = same_calls(calls, ref.calls)
                history.append(calls_message(calls))
                history += [{"role": "tool", "content": box.run(*c)} for c in calls]
                first = False
                continue
            answer = text.strip()
            history.append({"role": "assistant", "content": answer})
            if not ref.calls:
                score.no_tool_ok = first
                if kind == "repeat":
                    score.repeat_ok = answer == ref.answer
            else:
                score.answer_ok = bool(ref.must) and all(f and f in answer for f in ref.must)
            break
        score.transcript = history[start:]
        scores.append(score)
    return scores


def _reference_result(conv: Conversation, user: Message) -> str:
    """The reference tool result of the turn that ``user`` opens.

    The corpus computed it with the same ToolBox code, so it is what the real tool
    returns for the reference call in that state.
    """
    msgs = conv.messages
    i = next(j for j, m in enumerate(msgs) if m is user)
    for later in msgs[i + 1 :]:
        if later["role"] == "user":
            break
        if later["role"] == "tool":
            return str(later.get("content") or "")
    return ""


def run_episodes(
    convs: Sequence[Conversation],
    generate: GenerateFn,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> list[list[TurnScore]]:
    """Drive all episodes together, batching the prompts of each round."""
    running: dict[int, tuple[Generator[list[Message], str, list[TurnScore]], list[Message]]] = {}
    results: dict[int, list[TurnScore]] = {}
    for i, conv in enumerate(convs):
        gen = episode(conv)
        try:
            running[i] = (gen, next(gen))
        except StopIteration as stop:
            results[i] = stop.value
    while running:
        ids = sorted(running)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            texts = generate([running[i][1] for i in chunk])
            for i, text in zip(chunk, texts, strict=True):
                gen = running[i][0]
                try:
                    running[i] = (gen, gen.send(text))
                except StopIteration as stop:
                    results[i] = stop.value
                    del running[i]
                    if progress:
                        progress(1)
    return [results[i] for i in range(len(convs))]


def summarize(all_scores: Sequence[Sequence[TurnScore]]) -> dict[str, Any]:
    """Accuracy figures over all turns, overall and per kind."""
    flat = [s for scores in all_scores for s in scores]
    tool = [s for s in flat if s.uses_tool]
    plain = [s for s in flat if not s.uses_tool]
    repeats = [s for s in plain if s.repeat_ok is not None]

    def rate(xs: Sequence[bool]) -> float:
        return round(sum(xs) / len(xs), 4) if xs else 0.0

    out: dict[str, Any] = {
        "conversations": len(all_scores),
        "tool_turns": len(tool),
        "plain_turns": len(plain),
        "tool_call_acc": rate([s.call_ok for s in tool]),
        "answer_acc": rate([s.answer_ok for s in tool]),
        "end_to_end_acc": rate([s.call_ok and s.answer_ok for s in tool]),
        "no_tool_acc": rate([s.no_tool_ok for s in plain]),
        "repeat_exact_acc": rate([bool(s.repeat_ok) for s in repeats]),
    }
    for kind in sorted({s.kind for s in tool}):
        group = [s for s in tool if s.kind == kind]
        out[f"{kind}_call_acc"] = rate([s.call_ok for s in group])
        out[f"{kind}_answer_acc"] = rate([s.answer_ok for s in group])
    return out


def hf_generate_fn(model: Any, tokenizer: Any, max_new_tokens: int = 96) -> GenerateFn:
    """A greedy, batched ``model.generate`` backend for :func:`run_episodes`."""
    import torch

    end_id = tokenizer.convert_tokens_to_ids(END)
    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    device = next(model.parameters()).device

    def generate(prompts: list[list[Message]]) -> list[str]:
        texts = [render(p, add_generation_prompt=True) for p in prompts]
        encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):  # left padding: every prompt ends at the last column
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = 1
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=end_id,
                pad_token_id=pad_id,
            )
        replies = []
        for row in out[:, width:].tolist():
            if end_id in row:
                row = row[: row.index(end_id)]
            replies.append(tokenizer.decode([t for t in row if t != pad_id], skip_special_tokens=False))
        return replies

    return generate


def task_metrics(
    model: Any, tokenizer: Any, convs: Sequence[Conversation], batch_size: int = 64
) -> dict[str, Any]:
    """Run the episodes of ``convs`` with greedy ``model.generate`` and summarize."""
    was_training = model.training
    model.eval()
    try:
        return summarize(run_episodes(convs, hf_generate_fn(model, tokenizer), batch_size))
    finally:
        model.train(was_training)
