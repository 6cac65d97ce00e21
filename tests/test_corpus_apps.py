"""The seed apps' task corpus (lmos.train.corpus_apps): valid chat data, disjoint splits, right answers."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from lmos.chatformat import calls_of, render, validate_tools
from lmos.taskprompts import (
    MAX_PASSAGE_CHARS,
    SENTIMENT_LABELS,
    SUPPORT_HANDOFF,
    admits_failure,
    parse_plan,
    parse_sentiment,
)
from lmos.train import corpus_sentiment, corpus_support
from lmos.train.corpus_apps import APP_TASKS, generate_apps
from lmos.train.corpus_apps_split import Pool
from lmos.train.data import Conversation, check_record
from lmos.userland.tools.calc import evaluate, format_result

N = 300


def _draw(task: str, split: str, n: int = N, seed: int = 11) -> list[Conversation]:
    return generate_apps(n, seed=seed, split=split, task=task)


def _answer(conv: Conversation) -> str:
    return str(conv.messages[-1]["content"])


@pytest.mark.parametrize("task", sorted(APP_TASKS))
def test_every_conversation_is_valid_chat_data_and_renders(task: str) -> None:
    for split in ("train", "heldout"):
        for conv in _draw(task, split, 80):
            assert check_record(json.loads(conv.to_json())) is None
            tools = conv.tools
            declared = {t["name"] for t in validate_tools(tools)} if tools else set()
            text = render(conv.messages, tools=tools)
            assert text.count("<|assistant|>") >= 1
            if tools:
                assert "Tools:\n" in text
            for m in conv.messages:
                for name, _ in calls_of(m) if m["role"] == "assistant" else []:
                    assert name in declared, (task, name, declared)
            assert conv.messages[-1]["role"] == "assistant" and _answer(conv).strip()


@pytest.mark.parametrize("task", sorted(APP_TASKS))
def test_train_and_heldout_share_no_family(task: str) -> None:
    train = {f for c in _draw(task, "train") for f in c.meta["families"]}
    held = {f for c in _draw(task, "heldout") for f in c.meta["families"]}
    assert train and held
    assert not train & held, sorted(train & held)[:5]


def test_every_split_list_holds_something_out() -> None:
    pools = [
        corpus_support.FACT_POOL,
        *corpus_support.QUESTION_POOLS.values(),
        corpus_sentiment.STRUCTURES,
        *corpus_sentiment.PREDICATES.values(),
        *corpus_sentiment.EVENTS.values(),
    ]
    for pool in pools:
        assert isinstance(pool, Pool)
        assert pool.sides[True] and pool.sides[False], pool.tag
        assert not {pool.label(i) for i in pool.sides[True]} & {pool.label(i) for i in pool.sides[False]}


def test_same_seed_same_corpus() -> None:
    a = [c.to_json() for c in generate_apps(60, seed=5)]
    b = [c.to_json() for c in generate_apps(60, seed=5)]
    c = [c.to_json() for c in generate_apps(60, seed=6)]
    assert a == b and a != c


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_support_restates_the_key_sentence_or_hands_off(split: str) -> None:
    convs = _draw("support", split)
    uncovered = 0
    for conv in convs:
        system, _, answer = (m["content"] for m in conv.messages)
        assert "…" not in system  # no passage was cut by the app's MAX_PASSAGE_CHARS
        assert all(len(line) <= MAX_PASSAGE_CHARS + 4 for line in system.splitlines()[1:])
        if conv.meta["covered"]:
            key = conv.meta["key"]
            assert key in answer and key in system
            assert answer != SUPPORT_HANDOFF
        else:
            uncovered += 1
            assert answer == SUPPORT_HANDOFF
            assert conv.meta["key"] is None
    assert 0.2 < uncovered / len(convs) < 0.4


def test_recommend_names_item_one_and_one_of_its_attributes() -> None:
    for conv in _draw("recommend", "train") + _draw("recommend", "heldout"):
        system, _, answer = (m["content"] for m in conv.messages)
        items = system.splitlines()[1:]
        top = conv.meta["top"]
        assert items[0].startswith(f"[1] {top}")
        assert top in answer
        assert any(a in answer for a in conv.meta["attributes"]), (answer, conv.meta["attributes"])
        for other in items[1:]:  # lower-ranked items never carry the profile's (item 1's) tags
            head = other.split(":")[0]
            assert not any(f"({t}" in head or f", {t}" in head for t in conv.meta["attributes"][:-1])


def _calc(expr: str) -> str:
    return format_result(evaluate(expr))


def test_team_plans_and_final_numbers_match_calc() -> None:
    stages: Counter[str] = Counter()
    for conv in _draw("team", "train") + _draw("team", "heldout"):
        meta = conv.meta
        stages[meta["stage"]] += 1
        assert [_calc(e) for e in meta["subtasks"]] == meta["results"]
        if meta["stage"] == "plan":
            plan = parse_plan(_answer(conv))
            assert plan == [f"what is {e}?" for e in meta["subtasks"]]
            assert 2 <= len(plan) <= 4
            continue
        calls = [c for m in conv.messages if m["role"] == "assistant" for c in calls_of(m)]
        if meta["final"] is None:  # listing the parts, or a failed worker: no combining call
            assert not calls
            continue
        assert len(calls) == 1 and calls[0][0] == "calc"
        result = conv.messages[-2]["content"]
        assert result == _calc(calls[0][1]["expr"]) == meta["final"]
        assert meta["final"] in _answer(conv)
        for value in meta["results"]:  # the combining call uses the workers' numbers
            assert value in calls[0][1]["expr"]
    assert stages["plan"] > 100 and stages["combine"] > 100


def test_sentiment_labels_are_balanced_and_parse_back() -> None:
    convs = _draw("sentiment", "train", 900) + _draw("sentiment", "heldout", 300)
    counts = Counter(c.meta["label"] for c in convs)
    assert set(counts) == set(SENTIMENT_LABELS)
    assert all(0.27 < n / len(convs) < 0.40 for n in counts.values()), counts
    for conv in convs:
        assert parse_sentiment(_answer(conv)) == conv.meta["label"] == _answer(conv)


def test_sentiment_headlines_are_varied() -> None:
    heads = [c.messages[1]["content"] for c in _draw("sentiment", "train", 600)]
    assert len(set(heads)) > 570
    structures = {f for c in _draw("sentiment", "train", 600) for f in c.meta["families"] if "structure" in f}
    assert len(structures) >= 15


def test_giveup_is_short_honest_and_invents_nothing() -> None:
    outcomes: Counter[str] = Counter()
    for conv in _draw("giveup", "train") + _draw("giveup", "heldout"):
        outcomes[conv.meta["outcome"]] += 1
        answer = _answer(conv)
        results = [m["content"] for m in conv.messages if m["role"] == "tool"]
        errors = [r for r in results if r.startswith("error: ")]
        if conv.meta["outcome"] == "recovered":
            assert len(errors) == 1 and not results[-1].startswith("error: ")
            continue
        assert admits_failure(answer) and len(answer) < 300
        assert errors[-1][len("error: "):] in answer  # names the problem
        if conv.meta["outcome"] == "transient":
            assert len(errors) in (2, 3)
        context = " ".join(f"{m['content']} {json.dumps(m.get('tool_calls'))}" for m in conv.messages[:-1])
        for number in re.findall(r"\d+", answer):  # every number in the answer came from the conversation
            assert number in context, (number, answer)
    assert all(outcomes[k] > 20 for k in ("transient", "permanent", "recovered")), outcomes


def test_registry_generators_take_rng_and_split() -> None:
    rng = random.Random(0)
    for name, gen in APP_TASKS.items():
        assert gen(rng, "train").meta["kind"] == name
    with pytest.raises(ValueError, match="split"):
        APP_TASKS["support"](rng, "test")


def test_wordings_shared_with_the_base_corpus_keep_its_side() -> None:
    import gc

    from lmos.train.split import template_heldout

    base_wordings = 0
    for pool in [o for o in gc.get_objects() if isinstance(o, Pool)]:
        for side, items in pool.sides.items():
            for item in items:
                key = pool.key(item)
                if template_heldout(key) and not side:  # a held-out base template never trains here
                    raise AssertionError((pool.tag, key))
                base_wordings += template_heldout(key)
    assert base_wordings  # the check looked at something ("what's my {key}?" is held out in both)
