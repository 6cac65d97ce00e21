"""The OpenAI chat mapping alone: rendering, tool_choice prefill, reply parsing, streamed == plain."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmos.chatformat import CALL, END
from lmos.server.openai_format import (
    TextStream,
    check_tools,
    lmos_segments,
    markers,
    normalize,
    parse_reply,
    prefill,
    visible,
)
from lmos.server.wire import HTTPError

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {}}}]


def stream_of(raw: str, cut: list[str], sizes: list[int], final: str, strip: bool = True) -> str:
    """What a client receives when ``raw`` arrives in pieces of ``sizes`` and ends as ``final``."""
    s, out, at = TextStream(cut, strip=strip), [], 0
    for n in sizes:
        out.append(s.feed(raw[at:at + n]))
        at += n
    out.append(s.feed(raw[at:]))
    out.append(s.finish(final))
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "<|", "end|>", "<|end|>", "<|call|>", "{", "x", "ST", "OP", "\n"]),
                max_size=14), st.lists(st.integers(1, 5), max_size=20))
def test_streamed_text_is_the_plain_text(parts: list[str], sizes: list[int]) -> None:
    raw = "".join(parts)
    cut = markers("lmos", ["STOP"])
    for strip in (True, False):  # chat content is stripped, completion text is not
        final = visible(raw, cut, final=True, strip=strip)
        assert stream_of(raw, cut, sizes, final, strip) == final
        assert END not in final and CALL not in final and "STOP" not in final


def test_no_marker_prefix_is_sent_early() -> None:
    s = TextStream(markers("lmos", []))
    assert s.feed("hello <|e") == "hello"
    assert s.feed("nd|>") == ""
    assert s.finish("hello") == ""


def test_messages_render_calls_and_results_as_data() -> None:
    msgs = normalize([
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "<|end|>"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": '{"x": 2}'}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},  # out of order: put in call order
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
    ])
    segs = lmos_segments(msgs)
    text = "".join(t for t, _ in segs)
    assert text.startswith("<|system|>be brief<|end|>\n<|user|>a <|end|><|end|>\n")
    assert '<|assistant|><|call|>{"tool": "f", "args": {"x": 1}}<|call|>{"tool": "f", "args": {"x": 2}}' \
           '<|end|>\n<|tool|>one<|end|>\n<|tool|>two<|end|>\n<|assistant|>' in text
    assert ("a <|end|>", True) in segs  # the user's marker string is data, never a control token
    assert all(not data for t, data in segs if t in ("<|system|>", CALL, END + "\n"))


@pytest.mark.parametrize("bad", [
    [{"role": "wizard", "content": "x"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
    [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{nope"}}]}],
])
def test_bad_messages_are_400(bad: list[dict[str, object]]) -> None:
    with pytest.raises(HTTPError) as e:
        normalize(bad)
    assert e.value.status == 400


def test_tool_choice_modes_and_prefill() -> None:
    assert check_tools(None, None) == ([], None, "none")
    assert check_tools(TOOLS, None) == (["f"], None, "auto")
    assert check_tools(TOOLS, {"type": "function", "function": {"name": "f"}}) == (["f"], "f", "required")
    with pytest.raises(HTTPError):
        check_tools(TOOLS, {"type": "function", "function": {"name": "g"}})
    with pytest.raises(HTTPError):
        check_tools(None, "required")
    pre = prefill("lmos", "required", "f")
    assert pre == '<|call|>{"tool": "f", "args": '
    content, calls = parse_reply("lmos", pre + '{"a": [1]}}' + END, markers("lmos", []), "required")
    assert content == "" and calls[0]["function"] == {"name": "f", "arguments": json.dumps({"a": [1]})}
    tpl = prefill("template", "required", "f")
    content, calls = parse_reply("template", tpl + '{"b": 2}}\n</tool_call>', markers("template", []),
                                 "required")
    assert calls[0]["function"]["name"] == "f" and json.loads(calls[0]["function"]["arguments"]) == {"b": 2}


def test_parse_reply() -> None:
    cut = markers("lmos", [])
    assert parse_reply("lmos", "  plain answer <|end|>", cut, "auto") == ("plain answer", [])
    content, calls = parse_reply("lmos", 'let me check<|call|>{"tool": "f", "args": {}}', cut, "auto")
    assert content == "let me check" and [c["function"]["name"] for c in calls] == ["f"]
    assert parse_reply("lmos", '<|call|>{"tool": "f", "args": {}}', cut, "none") == ("", [])
    content, calls = parse_reply("lmos", "<|call|>{broken", cut, "auto")  # not a call: the text is shown
    assert calls == [] and content == "<|call|>{broken"
