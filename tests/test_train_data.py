"""Training data: the JSONL loader and its errors, the corpus, the tokenizer and the loss mask."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lmos.chatformat import CALL, END, call_message, parse_call, render
from lmos.errors import Errno, SyscallError
from lmos.train import phrasings as P
from lmos.train.corpus import KINDS, generate, in_heldout
from lmos.train.data import Conversation, load_jsonl, parse_lines, write_jsonl
from lmos.train.encode import IGNORE, encode, encode_all
from lmos.train.toolbox import ToolBox, answer_must_contain
from lmos.userland.tools.calc import evaluate, format_result

GOOD: dict[str, list[dict[str, Any]]] = {
    "messages": [
        {"role": "system", "content": "You are lmos, a helpful assistant with tools."},
        {"role": "user", "content": "what is 12 * 7?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": "calc", "arguments": {"expr": "12 * 7"}}],
        },
        {"role": "tool", "content": "84"},
        {"role": "assistant", "content": "12 * 7 = 84."},
    ]
}
EXPECTED_TEXT = (
    "<|system|>You are lmos, a helpful assistant with tools.<|end|>\n"
    "<|user|>what is 12 * 7?<|end|>\n"
    '<|assistant|><|call|>{"tool": "calc", "args": {"expr": "12 * 7"}}<|end|>\n'
    "<|tool|>84<|end|>\n"
    "<|assistant|>12 * 7 = 84.<|end|>\n"
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from lmos.train.tokenizer import train_tokenizer

    return train_tokenizer(generate(600, seed=3), vocab_size=400)


def test_render_matches_the_fixed_format() -> None:
    assert render(GOOD["messages"]) == EXPECTED_TEXT
    assert render(GOOD["messages"][:2], add_generation_prompt=True).endswith(
        "<|user|>what is 12 * 7?<|end|>\n<|assistant|>"
    )


def test_loader_reads_valid_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "meta": {"kind": "calc"}}) + "\n")
    convs = load_jsonl(path)
    assert [c.line for c in convs] == [1, 3]
    assert convs[1].meta == {"kind": "calc"}


def test_loader_lists_every_bad_line_with_its_number(tmp_path: Path) -> None:
    bad_role = {"messages": [{"role": "bot", "content": "hi"}]}
    no_assistant = {"messages": [{"role": "user", "content": "hi"}]}
    two_calls = {  # parallel calls are fine (chat format v2); calls not in a list are not
        "messages": [{"role": "assistant", "content": "", "tool_calls": {"name": "a"}}]
    }
    bad_args = {"messages": [{"role": "assistant", "tool_calls": [{"name": "calc", "arguments": "1+1"}]}]}
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps(bad_role),
        json.dumps(GOOD),
        json.dumps(no_assistant),
        "[1, 2]",
        json.dumps(two_calls),
        json.dumps(bad_args),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SyscallError) as info:
        load_jsonl(path)
    msg = info.value.message
    assert info.value.errno == Errno.EINVAL
    assert "6 bad lines" in msg and "\n" not in msg
    for n, fragment in [
        (2, "malformed JSON"),
        (3, "unknown role 'bot'"),
        (5, "no assistant message"),
        (6, "not a JSON object"),
        (7, "must be a list of calls"),
        (8, "'arguments' must be an object"),
    ]:
        assert re.search(rf"line {n}: [^;]*{re.escape(fragment)}", msg), (n, msg)
    assert "line 1:" not in msg and "line 4:" not in msg


def test_loader_errors_for_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(SyscallError) as info:
        load_jsonl(tmp_path / "nope.jsonl")
    assert info.value.errno == Errno.ENOENT
    with pytest.raises(SyscallError) as info:
        parse_lines(["", "  "])
    assert info.value.errno == Errno.ENODATA


def test_corpus_is_seeded_and_round_trips_through_jsonl(tmp_path: Path) -> None:
    a, b = generate(300, seed=7), generate(300, seed=7)
    assert [c.to_json() for c in a] == [c.to_json() for c in b]
    assert [c.to_json() for c in a] != [c.to_json() for c in generate(300, seed=8)]
    assert {c.meta["kind"] for c in a} == set(KINDS)
    path = tmp_path / "c.jsonl"
    write_jsonl(path, a)
    assert [c.messages for c in load_jsonl(path)] == [c.messages for c in a]


@pytest.mark.parametrize("profile", ["base", "broad"])
def test_corpus_results_come_from_the_real_tools(profile: str) -> None:
    for conv in generate(400, seed=11, profile=profile):
        box = ToolBox(conv.meta["kv"], conv.meta["now"])
        msgs = conv.messages
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and m.get("tool_calls"):
                call = m["tool_calls"][0]
                result = box.run(call["name"], call["arguments"])
                assert msgs[i + 1] == {"role": "tool", "content": result}
                if call["name"] == "calc" and not result.startswith("error"):
                    assert result == format_result(evaluate(call["arguments"]["expr"]))
                final = msgs[i + 2]["content"]
                assert answer_must_contain(call["name"], call["arguments"], result) in final


@pytest.mark.parametrize("profile", ["base", "broad"])
def test_heldout_values_never_appear_in_train_split(profile: str) -> None:
    train = generate(500, seed=1, profile=profile)
    train_values = {c.messages[-1]["content"] for c in train if c.meta["kind"] == "repeat"}
    held = generate(300, seed=1, split="heldout", profile=profile)
    held_values = {c.messages[-1]["content"] for c in held if c.meta["kind"] == "repeat"}
    assert held_values and all(in_heldout(v) for v in held_values)
    assert not any(in_heldout(v) for v in train_values)
    for c in held:
        for m in c.messages:
            if m.get("tool_calls") and m["tool_calls"][0]["name"] == "kv_set":
                assert in_heldout(m["tool_calls"][0]["arguments"]["value"])


def test_chat_template_renders_like_training(tokenizer: Any) -> None:
    for conv in generate(50, seed=5):
        assert tokenizer.apply_chat_template(conv.messages, tokenize=False) == render(conv.messages)
        prompt = conv.messages[:2]
        assert tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) == render(
            prompt, add_generation_prompt=True
        )


def test_markers_are_single_tokens_and_values_tokenize_alike(tokenizer: Any) -> None:
    for marker in ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", CALL, END, "<|pad|>"]:
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1
    value = "zq7Xkw 4821"
    alone = tokenizer(value, add_special_tokens=False)["input_ids"]
    in_user = tokenizer(f"remember that my pin is {value}", add_special_tokens=False)["input_ids"]
    in_call = tokenizer(json.dumps({"value": value}), add_special_tokens=False)["input_ids"]
    for ids in (in_user, in_call):
        assert any(ids[i : i + len(alone)] == alone for i in range(len(ids)))


def test_loss_mask_covers_exactly_the_assistant_turns(tokenizer: Any) -> None:
    conv = Conversation(messages=GOOD["messages"])
    ex = encode(tokenizer, conv)
    assert list(ex.input_ids) == tokenizer(EXPECTED_TEXT, add_special_tokens=False)["input_ids"]
    trained = tokenizer.decode([int(t) for t in ex.labels if t != IGNORE], skip_special_tokens=False)
    assert trained == '<|call|>{"tool": "calc", "args": {"expr": "12 * 7"}}<|end|>12 * 7 = 84.<|end|>'


def test_over_long_conversations_are_reported_by_line(tokenizer: Any) -> None:
    long_user = {"role": "user", "content": "word " * 200}
    convs = [
        Conversation(GOOD["messages"], line=1),
        Conversation([long_user, *GOOD["messages"][2:]], line=2),
        Conversation(GOOD["messages"], line=3),
        Conversation([long_user, *GOOD["messages"][2:]], line=4),
    ]
    with pytest.raises(SyscallError) as info:
        encode_all(tokenizer, convs, max_length=128, source="x.jsonl")
    assert "x.jsonl: 2 bad lines: line 2:" in info.value.message and "line 4:" in info.value.message


def test_parse_call() -> None:
    text = CALL + json.dumps({"tool": "kv_get", "args": {"key": "pin"}}) + END
    assert parse_call(text) == ("kv_get", {"key": "pin"})
    assert parse_call("just text") is None
    with pytest.raises(ValueError):
        parse_call(CALL + '{"tool": ')
    assert call_message("clock", {})["tool_calls"][0] == {"name": "clock", "arguments": {}}


def test_toolbox_semantics() -> None:
    box = ToolBox(now="2026-11-22 22:30:05 UTC")
    assert box.run("kv_get", {"key": "k"}) == "error: no such key: k"
    assert box.run("kv_set", {"key": "k", "value": "v w"}) == "ok"
    assert box.run("kv_get", {"key": "k"}) == "v w"
    assert box.run("clock", {}) == "2026-11-22 22:30:05 UTC"
    assert box.run("calc", {"expr": "1/0"}) == "error: division by zero"
    assert box.run("nope", {}) == "error: unknown tool: nope"


def test_corpus_of_the_builtin_model_is_unchanged() -> None:
    """Seed 1234 of this generator is the built-in model's stage-1 corpus: a wording change needs a retrain.

    If this fails on purpose, rebuild lmos/models/builtin (see its train.toml) and update the digest.
    The digest below is the corpus after the family split (lmos.train.split, issue 14); the shipped
    weights predate it (they were trained on the value-only split, digest c03ca74e...) until the
    model is retrained.
    """
    import hashlib

    text = "".join(c.to_json() for c in generate(2000, seed=1234))
    assert (
        hashlib.sha256(text.encode()).hexdigest()
        == "918ae4bcd8c6c8275f9569594c6cc041a53c6bebfe1dc837141e4592b810db8d"
    )


def test_broad_profile_is_seeded_and_widens_the_vocabulary() -> None:
    a = generate(400, seed=2, profile="broad")
    assert [c.to_json() for c in a] == [c.to_json() for c in generate(400, seed=2, profile="broad")]

    def unseen_share(convs: list[Conversation]) -> float:
        """Share of alphabetic words in repeat requests that are not from the base word lists."""
        words = [w for c in convs if c.meta["kind"] == "repeat" for w in c.messages[-1]["content"].split()]
        alpha = [w for w in words if w.isalpha()]
        return sum(w not in P.WORDS and w not in P.NAMES for w in alpha) / len(alpha)

    assert unseen_share(generate(400, seed=2)) < 0.3 < 0.5 < unseen_share(a)
    with pytest.raises(ValueError, match="unknown corpus profile"):
        generate(1, profile="huge")
