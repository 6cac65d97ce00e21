"""The v2 corpus: declared tools render through the chat format, the split shares nothing, the recipe loads,
and bad training data stops a run before it starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmos.chatformat import calls_of, render, tool_names
from lmos.errors import SyscallError
from lmos.train import split as S
from lmos.train.config import load_config
from lmos.train.corpus_v2 import KINDS, STANDARD, generate, lmos_declarations
from lmos.train.corpus_v2_kinds import number_words
from lmos.train.data import Conversation, parse_lines
from lmos.train.toolbox import ToolBox, answer_must_contain, call_key
from lmos.userland.tools.calc import evaluate, format_result

ROOT = Path(__file__).resolve().parent.parent
LMOS_TOOLS = {d["name"] for d in lmos_declarations()}
LABELS = ("object:", "head:", "coined:", "describe:")  # synthetic tools' split labels (not templates)


@pytest.fixture(scope="module")
def train() -> list[Conversation]:
    return generate(1500, seed=21, workers=1)


@pytest.fixture(scope="module")
def held() -> list[Conversation]:
    return generate(900, seed=22, split="heldout", workers=1)


def test_every_kind_occurs_and_calls_only_declared_tools(train: list[Conversation]) -> None:
    kinds = {c.meta["kind"] for c in train}
    assert set(KINDS) <= kinds
    for c in train:
        declared = set(tool_names(c.tools))
        called = {name for m in c.messages for name, _ in calls_of(m)}
        assert called <= declared, (c.meta["kind"], called, declared)
        text = render(c.messages, tools=c.tools)
        if c.tools:
            assert "\nTools:\n" in text.split("<|end|>")[0]
        else:
            assert "Tools:" not in text
        # what the JSONL file holds is what the loader accepts (declarations, parallel calls)
        (back,) = parse_lines([c.to_json()])
        assert back.tools == c.tools and back.messages == c.messages


def test_no_declaration_means_no_call(train: list[Conversation]) -> None:
    bare = [c for c in train if not c.tools]
    assert bare, "some conversations declare no tools"
    assert all(not m.get("tool_calls") for c in bare for m in c.messages)
    undeclared = [c for c in train if c.meta["kind"] == "undeclared"]
    assert undeclared and all(not m.get("tool_calls") for c in undeclared for m in c.messages)


def test_standard_and_full_declarations_match_what_the_agent_declares(train: list[Conversation]) -> None:
    blocks = [[d["name"] for d in c.tools] for c in train if c.tools]
    order = [d["name"] for d in lmos_declarations()]  # the agent declares in tool_list (boot) order
    assert [n for n in order if n in STANDARD] in blocks
    assert order in blocks


def test_results_come_from_the_real_tools(train: list[Conversation]) -> None:
    """calc results are the calc core's; kv recalls follow the real closest-key lookup."""
    seen = {"sqrt": 0, "percent": 0, "power": 0, "fuzzy": 0, "parallel": 0, "two_calls": 0}
    for c in train:
        msgs = c.messages
        for i, m in enumerate(msgs):
            calls = calls_of(m)
            results = [str(r["content"]) for r in msgs[i + 1 : i + 1 + len(calls)]]
            seen["parallel"] += len(calls) > 1
            for (tool, args), result in zip(calls, results, strict=True):
                if tool == "calc" and not result.startswith("error: "):
                    assert result == format_result(evaluate(args["expr"]))
                    seen["sqrt"] += "sqrt(" in args["expr"]
                    seen["percent"] += "/ 100 *" in args["expr"]
                    seen["power"] += "**" in args["expr"]
                if tool == "kv_get":
                    seen["fuzzy"] += "(stored under" in result
        call_turns = [m for m in msgs if calls_of(m)]
        seen["two_calls"] += c.meta["kind"] == "calc_multi" and len(call_turns) == 2
    assert all(n > 0 for n in seen.values()), seen


def test_fuzzy_recall_and_answers() -> None:
    box = ToolBox({"wifi_password": "hunter2"})
    result = box.run("kv_get", {"key": "wifi password"})
    assert result == 'hunter2 (stored under "wifi_password")'
    assert answer_must_contain("kv_get", {"key": "wifi password"}, result) == "hunter2"
    assert box.run("kv_get", {"key": "boat"}) == "error: no such key: boat"
    box = ToolBox(fixed={call_key("get_weather", {"city": "Oslo"}): "sunny"})
    assert box.run("get_weather", {"city": "Oslo"}) == "sunny"
    assert box.run("get_weather", {"city": "Rome"}) == "error: not found"


def test_numbers_in_words() -> None:
    assert [number_words(n) for n in (7, 12, 40, 42, 105, 999)] == [
        "seven", "twelve", "forty", "forty-two", "one hundred and five", "nine hundred and ninety-nine"]


def _axes(convs: list[Conversation]) -> dict[str, set[str]]:
    """What a split uses, read off the generated conversations."""
    axes = ("families", "synthetic", "keys", "exprs", "requests", "apps")
    out: dict[str, set[str]] = {k: set() for k in axes}
    for c in convs:
        if "families" in c.meta:  # an app task: its own split bookkeeping
            out["apps"] |= set(c.meta["families"])
        for t in c.meta.get("templates", []):
            out["families"].add(t if t.startswith(LABELS) else S.family(t))
        out["keys"] |= {S.family(k) for k in c.meta.get("kv", {})}
        out["requests"] |= {m["content"] for m in c.messages if m["role"] == "user"}
        out["synthetic"] |= {d["name"] for d in c.tools or [] if d["name"] not in LMOS_TOOLS}
        app = "families" in c.meta
        for m in c.messages:
            for tool, args in calls_of(m):
                if tool in ("kv_get", "kv_set"):
                    out["keys"].add(S.family(args["key"]))
                if tool == "calc" and not app:
                    out["exprs"].add(S.normalize_expr(args["expr"]))
    return out


@pytest.mark.parametrize("axis", ["families", "synthetic", "keys", "exprs", "requests", "apps"])
def test_heldout_shares_nothing_with_training(train: list[Conversation], held: list[Conversation],
                                              axis: str) -> None:
    a, b = _axes(train)[axis], _axes(held)[axis]
    assert b, f"no held-out {axis}"
    assert not a & b, sorted(a & b)[:10]


def test_heldout_synthetic_tools_use_objects_training_never_declares(
    train: list[Conversation], held: list[Conversation]
) -> None:
    def objects(convs: list[Conversation]) -> set[str]:
        return {t for c in convs for t in c.meta.get("templates", []) if t.startswith(("object:", "head:"))}

    assert objects(held) and not objects(train) & objects(held)


def test_generation_is_seeded_and_the_same_for_any_number_of_workers() -> None:
    one = [c.to_json() for c in generate(2100, seed=5, workers=1)]
    assert one == [c.to_json() for c in generate(2100, seed=5, workers=2)]
    assert one != [c.to_json() for c in generate(2100, seed=6, workers=1)]


def test_the_v2_recipe_loads() -> None:
    cfg = load_config(ROOT / "lmos" / "train" / "configs" / "builtin_v2.toml")
    assert cfg.data.corpus == "v2" and cfg.train.steps > 0 and cfg.train.minutes == 0
    assert cfg.train.checkpoint_every > 0 and cfg.data.max_length <= cfg.model.max_position_embeddings
    builtin = load_config(ROOT / "lmos" / "models" / "builtin" / "train.toml")
    assert cfg.model == builtin.model  # same shape as v1: same size on disk, same CPU speed


def _record(**extra: Any) -> str:
    rec = {"messages": [{"role": "user", "content": "weather in Oslo?"},
                        {"role": "assistant", "content": "", "tool_calls": [
                            {"name": "get_weather", "arguments": {"city": "Oslo"}},
                            {"name": "get_weather", "arguments": {"city": "Rome"}}]},
                        {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "rain"},
                        {"role": "assistant", "content": "Oslo: sunny. Rome: rain."}]}
    rec.update(extra)
    return json.dumps(rec)


WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_loader_checks_declarations_and_calls_by_line() -> None:
    (ok,) = parse_lines([_record(tools=[WEATHER])])
    assert ok.tools == [WEATHER] and len(calls_of(ok.messages[1])) == 2
    bad_schema = {**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": "strng"}}}}
    lines = [_record(tools=[WEATHER]), _record(tools=[bad_schema]), "{not json", _record(tools=[
        {**WEATHER, "name": "get_time"}]), '{"messages": [{"role": "user", "content": "hi"}]}']
    with pytest.raises(SyscallError) as err:
        parse_lines(lines, "data.jsonl")
    msg = err.value.message
    assert "data.jsonl: 4 bad lines" in msg
    assert "line 2: tools[0].parameters.properties.city.type" in msg
    assert "line 3: malformed JSON" in msg
    assert "line 4: message 1: calls 'get_weather', which 'tools' does not declare" in msg
    assert "line 5: no assistant message" in msg


def test_training_on_bad_data_stops_before_it_starts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lmos.train.cli import app

    data = tmp_path / "bad.jsonl"
    data.write_text(_record(tools=[WEATHER]) + "\n" + _record(tools="nope") + "\n")
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--device", "cpu",
                                      "--quiet", "--steps", "1"])
    assert result.exit_code == 1
    assert "line 2: 'tools' must be a list" in result.output and "Traceback" not in result.output
    assert not (out / "model.safetensors").exists() and not (out / "checkpoints").exists()


def test_corpus_command_writes_the_v2_profile(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lmos.train.cli import app
    from lmos.train.data import load_jsonl

    out = tmp_path / "v2.jsonl"
    result = CliRunner().invoke(app, ["corpus", "-n", "30", "--profile", "v2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    convs = load_jsonl(out)
    assert len(convs) == 30 and any(c.tools for c in convs)
    result = CliRunner().invoke(app, ["corpus", "-n", "3", "--profile", "huge"])
    assert result.exit_code == 1 and "unknown profile" in result.output
