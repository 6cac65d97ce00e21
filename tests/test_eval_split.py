"""The honest evaluation: the corpus split shares no phrasing family, key name, small-talk prompt,
calc expression or value between train and held-out, and the hand-written set is frozen by its hash."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from lmos.errors import SyscallError
from lmos.train import handwritten as H
from lmos.train import phrasings as P
from lmos.train import split as S
from lmos.train.corpus import generate
from lmos.train.data import Conversation
from lmos.train.smalltalk import SMALL_TALK

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "builtin_model.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("builtin_model_bench", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{\w+\}", template)
    return re.compile("^" + "(.+)".join(re.escape(p) for p in parts) + "$", re.S)


def _axes(convs: list[Conversation]) -> dict[str, set[str]]:
    """What each split uses, read off the generated conversations themselves."""
    out: dict[str, set[str]] = {"families": set(), "keys": set(), "prompts": set(), "exprs": set(),
                                "requests": set()}
    talk = {a for asks, _ in SMALL_TALK.values() for a in asks}
    for c in convs:
        users = [m["content"] for m in c.messages if m["role"] == "user"]
        used = c.meta["templates"]
        # the recorded templates are the ones the user turns were written from, in order
        assert len(used) == len(users), (used, users)
        for t, u in zip(used, users, strict=True):
            assert _pattern(t).match(u), (t, u)
            (out["prompts"] if t in talk else out["families"]).add(S.family(t))
        out["requests"] |= set(users)
        out["keys"] |= {S.family(k) for k in c.meta["kv"]}
        for m in c.messages:
            for call in m.get("tool_calls") or []:
                a = call["arguments"]
                if "key" in a:
                    out["keys"].add(S.family(a["key"]))
                if "expr" in a:
                    out["exprs"].add(S.normalize_expr(a["expr"]))
    return out


@pytest.fixture(scope="module")
def axes() -> dict[str, dict[str, set[str]]]:
    train = generate(1500, seed=11) + generate(600, seed=12, profile="broad")
    held = generate(600, seed=13, split="heldout") + generate(300, seed=14, split="heldout", profile="broad")
    return {"train": _axes(train), "heldout": _axes(held)}


@pytest.mark.parametrize("axis", ["families", "keys", "prompts", "exprs", "requests"])
def test_heldout_shares_nothing_with_training(axes: dict[str, dict[str, set[str]]], axis: str) -> None:
    train, held = axes["train"][axis], axes["heldout"][axis]
    assert held, f"no held-out {axis}"
    assert not train & held, sorted(train & held)[:10]


def test_every_axis_is_split_by_its_fixed_rule(axes: dict[str, dict[str, set[str]]]) -> None:
    held = axes["heldout"]
    assert held["families"] <= S.HELDOUT_TEMPLATES
    assert held["prompts"] <= S.HELDOUT_PROMPTS
    assert all(S.key_heldout(k) for k in held["keys"])
    assert all(S.in_heldout(e) for e in held["exprs"])
    assert not axes["train"]["families"] & S.HELDOUT_TEMPLATES


def test_every_list_and_intent_has_both_sides() -> None:
    lists = [P.CALC_ASK, P.SET_ASK, P.GET_ASK, P.CLOCK_ASK, P.REPEAT_ASK, [a for a, _ in P.CALC_WORDED],
             P.SET_MORE, P.GET_MORE]
    for templates in lists:
        sides = {S.template_heldout(t) for t in templates}
        assert sides == {True, False}, templates[:3]
    for asks, _ in SMALL_TALK.values():
        assert {S.prompt_heldout(a) for a in asks} == {True, False}, asks[:3]


def test_variants_of_one_family_and_one_expression_fall_together() -> None:
    assert S.family("What's {e}?") == S.family("what is {e}") == "what is {e}"
    assert S.family("{e} = ?") == S.family("{e}") == S.family("{e}?")
    assert S.normalize_expr("12 * 7") == S.normalize_expr("7*12") == S.normalize_expr(" 12*  7 ")
    assert S.normalize_expr("12 - 7") != S.normalize_expr("7 - 12")


def test_the_committed_handwritten_set_matches_its_recorded_hash() -> None:
    bench = _bench()
    items, resources = H.load(bench.HANDWRITTEN, bench.HANDWRITTEN_SHA256)
    assert set(resources) == {"faq", "catalogue"}
    for task in H.TASKS:
        assert sum(i["task"] == task for i in items) >= H.MIN_PER_TASK
    assert len({i["id"] for i in items}) == len(items)


def test_a_changed_handwritten_set_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    copy = tmp_path / "handwritten_eval.jsonl"
    shutil.copy(bench.HANDWRITTEN, copy)
    copy.write_text(copy.read_text().replace("what's 15% of 200?", "what's 15% of 300?"))
    with pytest.raises(SyscallError, match="SHA-256"):
        H.load(copy, bench.HANDWRITTEN_SHA256)
    monkeypatch.setattr(bench, "HANDWRITTEN", copy)  # the benchmark refuses to start, before any model
    monkeypatch.setattr(sys, "argv", ["builtin_model.py", "--limit", "1"])
    assert bench.main() == 2


def test_unknown_tasks_and_thin_tasks_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text('{"task": "weather", "id": "w1", "ask": "is it sunny?"}\n')
    with pytest.raises(SyscallError, match="unknown task 'weather'"):
        H.load(path)
    path.write_text('{"task": "calc", "id": "c1", "ask": "1+1", "tool": "calc", "args": {}, "answer": "2"}\n')
    with pytest.raises(SyscallError, match="fewer than 30"):
        H.load(path)


def test_scoring_helpers() -> None:
    assert H.contains("It comes to 30.", "30") and not H.contains("It comes to 300.", "30")
    assert H.contains("Refunds are paid back to your original payment method within 5 business days.",
                      "refunds are paid back to your original payment method within 5 business days")
    assert H.keys_compatible("locker", "gym locker") and H.keys_compatible("Gym_Locker", "gym locker")
    assert not H.keys_compatible("wifi", "gym locker")
    assert H.same_value("the chicken wrap", "chicken wrap") and H.same_value("Luigi's", "luigi's")
    assert not H.same_value("X1234567 on file", "X1234567") and not H.same_value("Luigi", "Luigi's")
    assert H.clock_part("2026-11-29 17:50:49 UTC", "datetime") == ["2026-11-29", "17:50"]
    assert H.macro_f1([("a", "a"), ("b", "b"), ("b", "a")], ("a", "b")) == pytest.approx(0.6667, abs=1e-4)


# ---- the v2 evaluation (lmos.train.bench_v2, benchmarks/builtin_model.py) -------------------------


@pytest.fixture(scope="module")
def v2_heldout() -> list[Conversation]:
    from lmos.train import bench_v2 as B

    return B.heldout_set(2, 7)


def _oracle(convs: list[Conversation]) -> Any:
    """A generator that writes the reference assistant turns (what a perfect model says)."""
    from lmos.chatformat import assistant_text, render, with_tools

    table = {render(with_tools(c.messages[:k], c.tools)): assistant_text(m)
             for c in convs for k, m in enumerate(c.messages) if m["role"] == "assistant"}
    return lambda prompts: [table.get(render(p), "I don't know.") for p in prompts]


def test_v2_heldout_scoring_passes_the_reference_and_fails_a_silent_model(
    v2_heldout: list[Conversation],
) -> None:
    from lmos.train import bench_v2 as B

    kinds = {c.meta["kind"] for c in v2_heldout}
    assert {"declared", "parallel", "followup", "calc_percent", "kv_fuzzy", *B.APPS} <= kinds
    perfect = B.score_heldout(v2_heldout, _oracle(v2_heldout), {})
    assert set(perfect) == kinds and all(all(v) for v in perfect.values()), perfect
    silent = B.score_heldout(v2_heldout, lambda prompts: ["" for _ in prompts], {})
    tool_kinds = {"calc", "calc_percent", "calc_power", "calc_words", "calc_multi", "kv_pair", "kv_get",
                  "clock", "declared", "parallel", "followup", "support", "recommend"}  # "" reads as neutral
    assert not any(any(silent[k]) for k in tool_kinds), {k: silent[k] for k in tool_kinds}


def test_v2_heldout_is_the_heldout_split(v2_heldout: list[Conversation]) -> None:
    from lmos.train.corpus_v2 import generate as generate_v2

    train_requests = {m["content"] for c in generate_v2(600, seed=7, workers=1) for m in c.messages
                      if m["role"] == "user"}
    held_requests = {m["content"] for c in v2_heldout for m in c.messages if m["role"] == "user"}
    assert not train_requests & held_requests


def test_a_changed_v2_or_headline_set_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    for name in ("HANDWRITTEN_V2", "HEADLINES"):
        copy = tmp_path / f"{name}.jsonl"
        shutil.copy(getattr(bench, name), copy)
        with copy.open("ab") as f:  # one more byte: never read the set, only change its hash
            f.write(b"\n")
        monkeypatch.setattr(bench, name, copy)
        monkeypatch.setattr(sys, "argv", ["builtin_model.py", "--quick"])
        assert bench.main() == 2
        monkeypatch.undo()


def test_benchmark_reports_the_targets_it_misses() -> None:
    bench = _bench()
    figures = {"heldout": {"calc": {"n": 40, "acc": 0.95}, "declared": {"n": 40, "acc": 0.8}},
               "handwritten": {"declared": {"n": 30, "acc": 0.72}, "calc": {"n": 30, "acc": 0.8},
                               "support_retrieval": {"n": 30, "acc": 0.5}},
               "headlines_sentiment_macro_f1": 0.9}
    got = bench.targets(figures)
    assert got["missed"] == {"handwritten.calc": 0.8} and not got["met"]
    figures["handwritten"]["calc"]["acc"] = 0.9
    assert bench.targets(figures)["met"]
