"""Model-level evaluation of the v2 tasks, driven by ``benchmarks/builtin_model.py``.

The model writes every assistant turn (greedy, batched ``model.generate``), on
exactly the rendering the agent sends (:func:`lmos.chatformat.with_tools`: the
declaration block in the system turn) and, for the seed apps, exactly the
prompts the apps build (:mod:`lmos.taskprompts`).  Its calls run on real tool
code (:class:`~lmos.train.toolbox.ToolBox`: calc's core, the kv closest-key
lookup) or on the stand-in results a conversation or item records.

* **held-out** (:func:`heldout_set`, :func:`score_heldout`): conversations of
  the v2 corpus's held-out split, so many per kind.  Tool and chat kinds are
  replayed turn by turn (:func:`lmos.train.evaluate.episode`); a conversation
  is right when every turn is (right calls and an answer holding the result;
  no call where none is due; a recalled earlier question or result).  App
  kinds: support / sentiment / recommend / team plan / giving up are scored on
  the model's reply to the app's prompt (giving up after the recorded failed
  calls), team combine as an episode.
* **hand-written v2** (:func:`score_declared`, :func:`score_multiturn`,
  :func:`score_giveup`) and the **headlines** (:func:`score_headlines`), as
  :mod:`lmos.train.handwritten` defines the items.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from lmos.chatformat import DEFAULT_SYSTEM_PROMPT, MalformedCall, calls_message, parse_calls, with_tools
from lmos.taskprompts import is_handoff, parse_plan, parse_sentiment, sentiment_messages
from lmos.train import handwritten as H
from lmos.train.corpus_v2 import STANDARD, V2Generator, lmos_declarations
from lmos.train.data import Conversation
from lmos.train.evaluate import TurnScore, run_episodes
from lmos.train.toolbox import ToolBox

Message = dict[str, Any]
Generate = Callable[[list[list[Message]]], list[str]]
Scores = dict[str, list[bool]]
APPS = ("support", "sentiment", "recommend", "team", "giveup")
MAX_TURNS = 4
DETAILS: list[dict[str, Any]] = []  # one record per scored item (the benchmark's --details)


def _record(scores: Scores, task: str, ok: bool, **info: Any) -> None:
    scores[task].append(ok)
    DETAILS.append({"task": task, "ok": ok, **info})


def heldout_set(per_kind: int, seed: int) -> list[Conversation]:
    """``per_kind`` held-out conversations of every v2 kind (apps included when present)."""
    gen = V2Generator(seed, "heldout")
    return [gen.conversation(kind) for kind in gen.kinds for _ in range(per_kind)]


def _calls(text: str) -> list[tuple[str, dict[str, Any]]] | None:
    try:
        return parse_calls(text)
    except (MalformedCall, ValueError):
        return None  # malformed


def _turn_ok(s: TurnScore) -> bool:
    if s.uses_tool:
        return s.call_ok and s.answer_ok
    return s.no_tool_ok and s.repeat_ok is not False


def _prompt(conv: Conversation) -> list[Message]:
    """The conversation up to its last assistant turn (what the model answers)."""
    last = max(i for i, m in enumerate(conv.messages) if m["role"] == "assistant")
    return with_tools(conv.messages[:last], conv.tools)


def _app_ok(conv: Conversation, text: str) -> bool:
    meta, kind = conv.meta, conv.meta["kind"]
    if kind == "support":
        return H.contains(text, meta["key"]) if meta.get("covered") else is_handoff(text)
    if kind == "sentiment":
        return parse_sentiment(text) == meta["label"]
    if kind == "recommend":
        return H.contains(text, meta["top"]) and any(H.contains(text, str(a)) for a in meta["attributes"])
    if kind == "team":  # the plan stage (combine is an episode)
        ref = str(conv.messages[-1].get("content") or "")
        return parse_plan(text) == parse_plan(ref)
    # giveup: after the recorded failures, an honest short answer (or the result when it recovered)
    tools = [m for m in conv.messages if m["role"] == "tool"]
    ask = next(str(m["content"]) for m in conv.messages if m["role"] == "user")
    last = str(tools[-1]["content"]) if tools else ""
    if meta.get("outcome") == "recovered":
        return not last.startswith("error") and H.contains(text, last.split("\n")[0][:60])
    return H.gave_up(text, ask, last)


def score_heldout(convs: list[Conversation], generate: Generate, extra: dict[str, Any]) -> Scores:
    """Per-kind end-to-end results of the held-out conversations."""
    scores: Scores = defaultdict(list)
    episodic = [c for c in convs if c.meta["kind"] not in APPS
                or (c.meta["kind"] == "team" and c.meta.get("stage") == "combine")]
    single = [c for c in convs if c not in episodic]
    for conv, turns in zip(episodic, run_episodes(episodic, generate), strict=True):
        ok = all(_turn_ok(t) for t in turns)
        expect = conv.meta.get("expect")
        if expect and turns:
            last = turns[-1].transcript[-1]["content"] if turns[-1].transcript else ""
            ok = ok and H.contains(str(last), str(expect))
        said = [m.get("content") or m.get("tool_calls") for t in turns for m in t.transcript]
        asks = [m["content"] for m in conv.messages if m["role"] == "user"]
        _record(scores, conv.meta["kind"], ok, set="heldout", asks=asks, model=said)
    texts = generate([_prompt(c) for c in single]) if single else []
    pairs = []
    for conv, text in zip(single, texts, strict=True):
        _record(scores, conv.meta["kind"], _app_ok(conv, text), set="heldout",
                asks=[m["content"] for m in conv.messages if m["role"] == "user"], model=[text])
        if conv.meta["kind"] == "sentiment":
            pairs.append((conv.meta["label"], parse_sentiment(text)))
    if pairs:
        extra["heldout_sentiment_macro_f1"] = H.macro_f1(pairs, H.SENTIMENT_LABELS)
    return scores


def standard_tools() -> list[dict[str, Any]]:
    """The declarations the benchmark's chats allow (the agent's, for calc, kv and clock)."""
    return [d for d in lmos_declarations() if d["name"] in STANDARD]


Call = tuple[str, dict[str, Any]]


def _act(prompts: list[list[Message]], generate: Generate,
         run: Callable[[int, str, dict[str, Any]], str]) -> list[tuple[list[list[Call]], str]]:
    """Let the model act on every prompt (at most MAX_TURNS turns): (its call turns, its final text)."""
    state: list[tuple[list[Message], list[list[Call]], str]] = [(list(p), [], "") for p in prompts]
    live = list(range(len(prompts)))
    for _ in range(MAX_TURNS):
        if not live:
            break
        texts = generate([state[i][0] for i in live])
        still = []
        for i, text in zip(live, texts, strict=True):
            msgs, turns, _ = state[i]
            calls = _calls(text)
            if not calls:
                state[i] = (msgs, turns, text.strip())
                continue
            turns.append(calls)
            msgs += [calls_message(calls), *({"role": "tool", "content": run(i, n, a)} for n, a in calls)]
            still.append(i)
        live = still
    return [(turns, final) for _, turns, final in state]


def score_declared(
    items: list[dict[str, Any]], res: dict[str, Any], generate: Generate, scores: Scores
) -> None:
    """Hand-written declared-tool requests: the right call (name, arguments), then the fact in the answer."""
    prompts = [with_tools([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                           {"role": "user", "content": i["ask"]}], H.declared_tools(i, res) or None)
               for i in items]

    def run(i: int, name: str, args: dict[str, Any]) -> str:
        item = items[i]
        return str(item.get("result", "ok")) if name == item.get("tool") else "error: unknown tool"

    for item, (turns, final) in zip(items, _act(prompts, generate, run), strict=True):
        if item.get("tool") is None:
            ok = not turns and bool(final)
        else:
            decl = {t["name"]: t for t in H.declared_tools(item, res)}.get(item["tool"], {})
            first = turns[0] if turns else []
            ok = len(first) >= 1 and first[0][0] == item["tool"] and H.args_match(
                first[0][1], item["args"], decl.get("parameters"))
            if item.get("answer"):
                ok = ok and H.mentions(final, item["answer"])
        _record(scores, "declared", ok, set="handwritten", id=item["id"], calls=turns, text=final)


def score_multiturn(items: list[dict[str, Any]], generate: Generate, scores: Scores) -> None:
    """Hand-written follow-ups replayed after their history, with the standard tools declared."""
    prompts = [with_tools([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *i["history"],
                           {"role": "user", "content": i["ask"]}], standard_tools()) for i in items]
    box = ToolBox()

    def run(i: int, name: str, args: dict[str, Any]) -> str:
        return box.run(name, args)

    for item, (turns, final) in zip(items, _act(prompts, generate, run), strict=True):
        if item.get("tool") == "calc":
            results = [box.run(n, a) for t in turns[:1] for n, a in t if n == "calc"]
            ok = bool(results) and results[-1] == str(item["answer"]) and H.mentions(final, item["answer"])
        else:
            ok = not turns and H.mentions(final, item["answer"])
        _record(scores, "multiturn", ok, set="handwritten", id=item["id"], calls=turns, text=final)


def score_giveup(
    items: list[dict[str, Any]], res: dict[str, Any], generate: Generate, scores: Scores
) -> None:
    """Every call of the item's tool fails with its error: right when the model stops and says so."""
    builtin = {d["name"]: d for d in lmos_declarations()}

    def tools_of(item: dict[str, Any]) -> list[dict[str, Any]]:
        if item.get("declare"):
            return H.declared_tools(item, res)
        return [builtin[n] for n in builtin if n in STANDARD or n == item["tool"]]

    prompts = [with_tools([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                           {"role": "user", "content": i["ask"]}], tools_of(i)) for i in items]

    def run(i: int, name: str, args: dict[str, Any]) -> str:
        item = items[i]
        return f"error: {item['error']}" if name == item["tool"] else ToolBox().run(name, args)

    for item, (turns, final) in zip(items, _act(prompts, generate, run), strict=True):
        ok = bool(final) and H.gave_up(final, item["ask"], item["error"])
        _record(scores, "giveup", ok, set="handwritten", id=item["id"], calls=turns, text=final)


def score_headlines(items: list[dict[str, Any]], generate: Generate, scores: Scores,
                    extra: dict[str, Any]) -> None:
    """The sentiment task on the hand-written headlines (the app's exact prompt), with macro-F1."""
    texts = generate([sentiment_messages(i["ask"]) for i in items])
    pairs = [(i["answer"], parse_sentiment(t)) for i, t in zip(items, texts, strict=True)]
    for item, (e, p) in zip(items, pairs, strict=True):
        _record(scores, "sentiment_headlines", e == p, set="handwritten", id=item["id"], text=p)
    extra["headlines_sentiment_macro_f1"] = H.macro_f1(pairs, H.SENTIMENT_LABELS)
    extra["headlines_sentiment_predicted"] = {lab: sum(p == lab for _, p in pairs)
                                              for lab in H.SENTIMENT_LABELS}


def sample(items: list[dict[str, Any]], limit: int, seed: int = 0) -> list[dict[str, Any]]:
    """At most ``limit`` items per task (all when 0), the same ones every run."""
    if not limit:
        return items
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in items:
        by[i["task"]].append(i)
    rng = random.Random(seed)
    return [i for task in sorted(by) for i in rng.sample(by[task], min(limit, len(by[task])))]
