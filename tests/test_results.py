"""What lmosh and ``lmos run`` print for an app's result: tables, fields, JSON, and no repeats."""

from __future__ import annotations

import json
from types import SimpleNamespace

from lmos.errors import Errno
from lmos.userland.shell.render import failure, is_records, render_result, to_json, unstreamed

LABELS = [{"headline": "Acme beats estimates", "label": "positive"},
          {"headline": "Bank shares plunge", "label": "negative"},
          {"headline": "Oil falls 5%", "label": "negative"}]
ALERT = {"type": "alert", "index": 2, "headline": "Oil falls 5%", "negative_share": 0.6667,
         "window": ["positive", "negative", "negative"]}


def rows(text: str) -> list[list[str]]:
    """The table's lines as cells (split on runs of 2+ spaces)."""
    import re

    return [re.split(r"\s{2,}", ln.strip()) for ln in text.splitlines() if ln.strip()]


def test_records_become_a_table_with_every_row() -> None:
    out = render_result(LABELS)
    lines = rows(out)
    assert lines[0] == ["headline", "label"]
    assert set(lines[1][0]) == {"─"}  # the rule under the header
    assert lines[2:] == [[r["headline"], r["label"]] for r in LABELS]
    assert "\x1b[" not in out  # no colour unless asked for


def test_records_with_mostly_the_same_keys_fill_the_gaps() -> None:
    out = render_result([{"id": 1, "title": "Boots", "score": 1.5}, {"id": 2, "title": "Tent"}])
    lines = rows(out)
    assert lines[0] == ["id", "title", "score"]
    assert lines[2] == ["1", "Boots", "1.5"] and lines[3] == ["2", "Tent"]
    assert not is_records([{"a": 1}, {"b": 2, "c": 3, "d": 4}])  # too different: not a table
    assert not is_records([]) and not is_records([1, 2]) and not is_records([{}])


def test_a_dict_of_record_lists_gives_titled_tables_and_its_other_fields() -> None:
    out = render_result({"labels": LABELS, "alerts": [ALERT], "seen": 3, "note": "two\nlines"})
    lines = out.splitlines()
    assert lines[0] == "labels" and lines[1].split() == ["headline", "label"]
    assert "alerts" in lines
    at = lines.index("alerts")
    assert lines[at + 1].split() == ["type", "index", "headline", "negative_share", "window"]
    assert '["positive", "negative", "negative"]' in lines[at + 3]  # nested values as compact JSON
    assert "seen: 3" in lines and lines[-3:] == ["note:", "  two", "  lines"]
    empty = render_result({"labels": LABELS, "alerts": []})
    assert empty.splitlines()[-1] == "alerts: (none)"


def test_other_values_are_pretty_json_and_strings_themselves() -> None:
    value = {"pid": 1, "pages": {"resident": 3, "swapped": 0}}
    out = render_result(value)
    assert json.loads(out) == value and "\n  " in out  # indented
    assert json.loads(render_result([1, "two", None])) == [1, "two", None]
    assert render_result(0.5) == "0.5" and render_result(True) == "true"
    assert render_result("line one\nline two") == "line one\nline two"


def test_an_agent_answer_is_not_repeated_after_its_stream() -> None:
    answer = {"text": "Refunds take 5 business days.", "steps": 2, "finish_reason": "answer",
              "calls": [{"tool": "search", "args": {"query": "refund"}, "result": "faq.md: ...", "ok": True}]}
    streamed = '<|call|>{"tool": "search"}\n[search -> faq.md: ...]\nRefunds take 5\nbusiness days.'
    assert render_result(answer, streamed) == ""  # everything was on the screen already
    assert unstreamed(answer, streamed) is None
    support = {**answer, "sources": "faq.md#1: Refunds take 5 business days.\nfaq.md#2: We ship abroad."}
    assert render_result(support, streamed) == (
        "sources:\n  faq.md#1: Refunds take 5 business days.\n  faq.md#2: We ship abroad.")
    cut = {**answer, "finish_reason": "max_steps"}
    assert render_result(cut, streamed) == "finish_reason: max_steps"  # worth knowing: the answer was cut


def test_an_unstreamed_agent_answer_shows_its_text_and_calls() -> None:
    answer = {"text": "It is 84.", "steps": 2, "finish_reason": "answer",
              "calls": [{"tool": "calc", "args": {"expr": "12*7"}, "result": "84", "ok": True}]}
    lines = render_result(answer).splitlines()
    assert lines[0] == "It is 84." and "calls" in lines
    assert lines[-1].split() == ["calc", '{"expr":', '"12*7"}', "84", "true"]
    assert render_result({"text": "Hi.", "calls": [], "steps": 1, "finish_reason": "answer"}) == "Hi."


def test_other_streamed_text_is_dropped_and_the_rest_kept() -> None:
    ranking = [{"id": "1", "title": "Trail boots", "score": 2.1}]
    out = render_result({"ranking": ranking, "text": "Try the Trail boots."}, "Try the Trail boots.")
    assert rows(out)[0] == ["ranking"] and "Try the" not in out
    assert render_result("hello", "hello") == ""  # echo wrote it already
    assert render_result("a summary the code built", "neutral neutral") == "a summary the code built"


def test_width_and_colour() -> None:
    out = render_result(LABELS, width=24)
    assert max(len(ln) for ln in out.splitlines()) <= 24 and "plunge" in out  # wrapped, not cut
    assert "\x1b[1m" in render_result(LABELS, color=True)  # bold headers on a terminal


def test_json_and_failure_lines() -> None:
    assert json.loads(to_json({"labels": LABELS})) == {"labels": LABELS}
    w = SimpleNamespace(state="exited", exit_status=1, errno=int(Errno.ENOENT),
                        error="ENOENT: no such file: /support/faq.md")
    assert failure("support", w) == "support: ENOENT: no such file: /support/faq.md"
    w = SimpleNamespace(state="exited", exit_status=1, errno=int(Errno.EINVAL),
                        error="EINVAL: sleep: bad number 'x'")
    assert failure("sleep", w) == "sleep: EINVAL: bad number 'x'"  # the app is named once
    w = SimpleNamespace(state="exited", exit_status=1, errno=0, error="ValueError: boom")
    assert failure("buggy", w) == "buggy: ValueError: boom"
    w = SimpleNamespace(state="killed", exit_status=-9, errno=0, error="killed by SIGKILL")
    assert failure("sleep", w) == "sleep: killed by SIGKILL"
    w = SimpleNamespace(state="exited", exit_status=3, errno=0, error=None)
    assert failure("tool", w) == "tool: exit status 3"
