"""lmos.taskprompts: the seed apps' exact prompts, shared with the corpus, and their forgiving parsers."""

from __future__ import annotations

import pytest

from lmos import taskprompts as tp


def test_support_prompt_numbers_passages_one_line_each() -> None:
    msgs = tp.support_messages(
        "  how do I reset my password? ",
        [
            "Passwords: open Settings >\n Account and choose Reset.",
            "",
            "Billing: monthly.",
            "Shipping: 3 days.",
            "Extra: never shown.",
        ],
    )
    assert msgs == [
        {
            "role": "system",
            "content": tp.SUPPORT_SYSTEM + "\n[1] Passwords: open Settings > Account and choose "
            "Reset.\n[2] Billing: monthly.",
        },
        {"role": "user", "content": "how do I reset my password?"},
    ]
    long = tp.support_messages("q", ["x" * 1000])[0]["content"]
    assert long.endswith("…") and len(long) <= len(tp.SUPPORT_SYSTEM) + 5 + tp.MAX_PASSAGE_CHARS
    assert tp.support_messages("q", [])[0]["content"] == tp.SUPPORT_SYSTEM + "\n(no passages)"
    assert tp.is_handoff(tp.SUPPORT_HANDOFF) and not tp.is_handoff("Open Settings > Account.")


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("positive", "positive"),
        ("Negative.<|end|>", "negative"),
        (" NEUTRAL ", "neutral"),
        ("bullish", "positive"),
        ("Label: bearish", "negative"),
        ("the label is negative", "negative"),
        ("", "neutral"),
        ("???", "neutral"),
        ("positively", "neutral"),
    ],
)
def test_parse_sentiment_is_forgiving(text: str, label: str) -> None:
    assert tp.parse_sentiment(text) == label


def test_sentiment_prompt_is_the_headline_alone() -> None:
    assert tp.sentiment_messages("Acme shares\njump 12%") == [
        {"role": "system", "content": tp.SENTIMENT_SYSTEM},
        {"role": "user", "content": "Acme shares jump 12%"},
    ]


def test_recommend_lists_at_most_three_items_best_first() -> None:
    items = [
        {"title": "Trail Shoes", "tags": ["hiking", "outdoor"], "description": "Light shoes.", "id": "7"},
        {"title": "Tent", "tags": "camping; outdoor", "description": ""},
        {"title": "Mug"},
        {"title": "Never shown"},
    ]
    system, user = tp.recommend_messages(" likes hiking ", items)
    assert system["content"] == (
        tp.RECOMMEND_SYSTEM + "\n[1] Trail Shoes (hiking, outdoor): Light shoes.\n"
        "[2] Tent (camping, outdoor)\n[3] Mug"
    )
    assert user == {"role": "user", "content": "likes hiking"}


@pytest.mark.parametrize(
    ("plan", "parts"),
    [
        ("what is 2 + 3\nwhat is 4 * 5", ["what is 2 + 3", "what is 4 * 5"]),
        ("Subtasks:\n1. add 2 and 3\n2) multiply 4 by 5\n<|end|>", ["add 2 and 3", "multiply 4 by 5"]),
        ("- a\n* b\n[3] c\nSubtask 4: d\ne\n", ["a", "b", "c", "d"]),
        ("a\na\n\n  b  ", ["a", "b"]),
        ("", []),
    ],
)
def test_parse_plan_is_forgiving(plan: str, parts: list[str]) -> None:
    assert tp.parse_plan(plan) == parts


def test_team_prompts() -> None:
    assert tp.team_plan_messages(" add 2 and 3, then double ")[1]["content"] == "add 2 and 3, then double"
    system, user = tp.team_combine_messages("total?", [("price of a", "12"), ("price of b", "30\nUSD")])
    assert system["content"] == tp.TEAM_COMBINE_SYSTEM + "\n[1] price of a: 12\n[2] price of b: 30 USD"
    assert user["content"] == "total?"


def test_give_up_is_short_and_admits_failure() -> None:
    text = tp.give_up_text("weather")
    assert "weather" in text and tp.admits_failure(text) and len(text) < 100
    assert not tp.admits_failure("The temperature is 5 C.")
