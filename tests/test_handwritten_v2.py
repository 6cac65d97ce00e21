"""The frozen hand-written additions: declared/multiturn/team/giveup items and the sentiment headlines.

Checks their recorded hashes, that the loader refuses unknown tasks and broken
items with the line number, and the scoring helpers the benchmark uses on them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lmos.chattools import validate_tools
from lmos.errors import SyscallError
from lmos.train import handwritten as H

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    name = "builtin_model_bench_b1"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "builtin_model.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def test_v2_set_is_frozen_and_covers_each_task() -> None:
    bench = _bench()
    items, resources = H.load(bench.HANDWRITTEN_V2, bench.HANDWRITTEN_V2_SHA256, tasks=H.V2_TASKS)
    for task in H.V2_TASKS:
        assert sum(i["task"] == task for i in items) >= H.MIN_PER_TASK
    decls = validate_tools(resources["tools"]["tools"])  # every declaration is valid chat-format v2
    assert len(decls) == len(resources["tools"]["tools"])
    for item in items:
        if item["task"] == "declared" and item["tool"]:
            [decl] = [d for d in H.declared_tools(item, resources) if d["name"] == item["tool"]]
            assert H.args_match(item["args"], item["args"], decl["parameters"])


def test_headlines_are_frozen_balanced_and_labelled() -> None:
    bench = _bench()
    items, _ = H.load(
        bench.HEADLINES, bench.HEADLINES_SHA256, tasks=("sentiment",), min_per_task=H.MIN_HEADLINES
    )
    counts = {lab: sum(i["answer"] == lab for i in items) for lab in H.SENTIMENT_LABELS}
    assert len(items) >= 150 and min(counts.values()) >= 45, counts
    assert len({i["ask"].lower() for i in items}) == len(items)


def test_changed_or_foreign_files_are_refused(tmp_path: Path) -> None:
    bench = _bench()
    copy = tmp_path / "v2.jsonl"
    copy.write_text(bench.HANDWRITTEN_V2.read_text().replace("Lisbon", "Porto"))
    with pytest.raises(SyscallError, match="SHA-256"):
        H.load(copy, bench.HANDWRITTEN_V2_SHA256, tasks=H.V2_TASKS)
    # the v1 file's tasks are unknown to a v2 load, and the other way round
    with pytest.raises(SyscallError, match=r"line \d+: unknown task 'calc'"):
        H.load(bench.HANDWRITTEN, tasks=H.V2_TASKS)
    with pytest.raises(SyscallError, match="unknown task 'declared'"):
        H.load(bench.HANDWRITTEN_V2)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", "line 2: not JSON"),
        ('["team"]', "line 2: not a JSON object"),
        ('{"task": "team", "id": "t1", "ask": "x", "answer": "3"}', "line 2: missing or repeated id 't1'"),
        ('{"task": "team", "id": "t2", "ask": "", "answer": "3"}', "line 2: t2: 'ask' must be"),
        ('{"task": "team", "id": "t2", "ask": "x", "answer": 3}', "needs the final number"),
    ],
)
def test_broken_items_are_refused_with_their_line(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text('{"task": "team", "id": "t1", "ask": "a", "answer": "1"}\n' + line + "\n")
    with pytest.raises(SyscallError, match=error):
        H.load(path, tasks=("team",), min_per_task=1)


def test_declared_items_must_name_declared_tools(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    tools = '{"resource": "tools", "tools": [{"name": "ping"}]}\n'
    path.write_text(
        tools + '{"task": "declared", "id": "d", "declare": ["pong"], "ask": "x", "tool": null}\n'
    )
    with pytest.raises(SyscallError, match="line 2: d: declares unknown tools"):
        H.load(path, tasks=("declared",), min_per_task=1)
    path.write_text(
        tools + '{"task": "declared", "id": "d", "declare": ["ping"], "ask": "x", "tool": "pang",'
        ' "args": {}}\n'
    )
    with pytest.raises(SyscallError, match="must name a declared tool"):
        H.load(path, tasks=("declared",), min_per_task=1)


def test_args_match() -> None:
    params = {"properties": {"city": {}, "unit": {}}}
    assert H.args_match({"city": "lisbon"}, {"city": "Lisbon"}, params)
    assert H.args_match({"city": "Lisbon", "unit": "c"}, {"city": "Lisbon"}, params)  # a declared extra
    assert not H.args_match({"city": "Lisbon", "country": "PT"}, {"city": "Lisbon"}, params)  # undeclared
    assert not H.args_match({"town": "Lisbon"}, {"city": "Lisbon"}, params)
    assert not H.args_match({"city": "Porto"}, {"city": "Lisbon"}, params)
    assert H.args_match({"flight": "ua931"}, {"flight": "UA 931"})
    assert H.args_match({"query": "my workout playlist"}, {"query": "workout playlist"})
    assert H.args_match({"amount": "250"}, {"amount": 250}) and H.args_match(
        {"amount": 250.0}, {"amount": 250}
    )
    assert not H.args_match({"amount": "251"}, {"amount": 250}) and not H.args_match(
        {"amount": True}, {"amount": 1}
    )


def test_gave_up_and_mentions() -> None:
    ask = "what's 12 times 7?"
    assert H.gave_up("Sorry, the calculator isn't working, so I couldn't work out 12 times 7.", ask)
    assert not H.gave_up("Sorry, the tool failed, but it's 84.", ask)  # claims a result
    assert not H.gave_up("12 * 7 = 84.", ask)
    assert not H.gave_up("", ask) and not H.gave_up("Sorry. " * 50, ask)  # empty or long
    assert H.mentions("You asked about 9 * 14.", ["9 times 14", "9 * 14"]) and H.mentions(
        "Hi Priya!", "priya"
    )
    assert not H.mentions("You asked about 9 * 15.", ["9 times 14", "9 * 14"])
