"""The built-in apps, on the scripted driver with responders that behave like a tool-using model."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kutil import kernel
from test_agent import calc_model

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno
from lmos.models import builtin_model_path

pytestmark = pytest.mark.anyio


def last_user(window: str) -> str:
    return re.findall(r"<\|user\|>(.*?)<\|end\|>", window, re.S)[-1]


async def run(k: lmos.Kernel, app: str, argv: list[str]) -> Any:
    w = await k.wait(await k.spawn(app, argv))
    assert w.exit_status == 0, w.error
    return w.result


async def test_chat_and_calc_agent() -> None:
    def model(window: str) -> str:
        return calc_model(window) if "what is" in window else "Hello, I am lmos."

    async with kernel(ScriptedDriver(model)) as k:
        r = await run(k, "chat", ["hi there"])
        assert r["text"] == "Hello, I am lmos." and r["calls"] == []
        r = await run(k, "calc-agent", ["what is 6 * 7?"])
        assert r["text"] == "The answer is 42." and r["calls"][0]["tool"] == "calc"


FAQ = """# FAQ

How long do refunds take? Refunds take 5 business days.

Do you ship abroad? We ship to 30 countries; shipping is free over $50.

How do I reset my password? Use the "forgot password" link on the login page.
"""


async def test_support_answers_from_the_faq() -> None:
    def model(window: str) -> str:
        passages = window.split("FAQ passages:\n", 1)[1].split("<|end|>", 1)[0]
        first = passages.splitlines()[0].split(": ", 1)[1]
        return first.split("? ", 1)[1] if "? " in first else "I will pass this to a human."

    async with kernel(ScriptedDriver(model)) as k:
        w = await k.wait(await k.spawn("support", ["how long until my refund?"]))
        assert w.errno == Errno.ENOENT and "/support/faq.md" in (w.error or "")  # no FAQ yet
        await k.syscall("fs_write", path="/support/faq.md", data=FAQ)
        r = await run(k, "support", ["how long until my refunds arrive?"])
        assert r["text"] == "Refunds take 5 business days."
        r = await run(k, "support", ["can I reset my password"])
        assert r["text"] == 'Use the "forgot password" link on the login page.'


def classify(window: str) -> str:
    h = last_user(window).lower()
    if any(w in h for w in ("plunge", "falls", "crash", "loss", "default")):
        return "Negative"
    return "positive" if any(w in h for w in ("soars", "beats", "record")) else "neutral"


async def test_sentiment_monitor_alerts_from_argv_file_and_channel() -> None:
    async with kernel(ScriptedDriver(classify)) as k:
        heads = [
            "Acme beats estimates",
            "Bank shares plunge",
            "Oil falls 5%",
            "Retailer posts loss",
            "Markets flat",
            "Tech soars",
        ]
        r = await run(k, "sentiment-monitor", ["--window", "3", "--threshold", "0.6", *heads])
        assert [x["label"] for x in r["labels"]] == [
            "positive",
            "negative",
            "negative",
            "negative",
            "neutral",
            "positive",
        ]
        assert len(r["alerts"]) == 1 and r["alerts"][0]["index"] == 2
        assert r["alerts"][0]["negative_share"] == 0.6667

        await k.syscall("fs_write", path="/news.txt", data="\n".join(heads[1:4]) + "\n")
        alerts = (await k.syscall("chan_open", name="desk.alerts")).chan
        feed = (await k.syscall("chan_open", name="news.feed")).chan
        for h in ["Chipmaker record", "Insurer crash", "Fund default", None]:
            await k.syscall("send", chan=feed, data=h)
        r = await run(
            k,
            "sentiment-monitor",
            [
                "--window",
                "2",
                "--threshold",
                "1.0",
                "--file",
                "/news.txt",
                "--chan",
                "news.feed",
                "--alerts",
                "desk.alerts",
            ],
        )
        assert len(r["labels"]) == 6
        assert [a["index"] for a in r["alerts"]] == [1, 5]  # edge-triggered: one alert per crossing
        got = (await k.syscall("recv", chan=alerts, timeout=1.0)).data
        assert got["type"] == "alert" and got["headline"] == "Oil falls 5%"
        w = await k.wait(await k.spawn("sentiment-monitor", ["--window", "0", "x"]))
        assert w.errno == Errno.EINVAL


CATALOGUE = "\n".join(
    json.dumps(i)
    for i in [
        {
            "id": "t1",
            "title": "Trail tent",
            "description": "two-person tent for hiking and camping",
            "tags": ["outdoor"],
        },
        {"id": "k1", "title": "Chef knife", "description": "for cooking at home", "tags": ["kitchen"]},
        {
            "id": "b1",
            "title": "Hiking boots",
            "description": "waterproof boots for long hikes",
            "tags": ["hiking"],
        },
        {
            "id": "p1",
            "title": "Pasta maker",
            "description": "fresh pasta at home",
            "tags": ["kitchen", "cooking"],
        },
    ]
)


async def test_recommend_ranks_the_catalogue() -> None:
    async with kernel(ScriptedDriver("These suit an outdoor person.")) as k:
        await k.syscall("fs_write", path="/recommend/catalogue.jsonl", data=CATALOGUE)
        r = await run(k, "recommend", ["--top", "2", "loves", "hiking", "and", "camping", "trips"])
        assert [i["id"] for i in r["ranking"]] == ["t1", "b1"]
        assert r["text"] == "These suit an outdoor person."
        r = await run(k, "recommend", ["enjoys", "cooking", "pasta"])
        assert [i["id"] for i in r["ranking"]][:2] == ["p1", "k1"]
        w = await k.wait(await k.spawn("recommend", ["--catalogue", "/etc/passwd", "x"]))
        assert w.errno == Errno.EPERM  # outside the app's fs.read:/recommend


async def test_team_spawns_workers_and_gathers_over_ipc() -> None:
    def model(window: str) -> str:
        if "You are a planner" in window:
            return "1. what is 2 + 3?\n2. what is 4 * 5?"
        if "Combine the results" in window:
            return "Combined: " + "; ".join(re.findall(r"- (what is .*?: The answer is \d+\.)", window))
        return calc_model(window)

    async with kernel(ScriptedDriver(model)) as k:
        r = await run(k, "team", ["do two sums"])
        assert r["plan"] == ["what is 2 + 3?", "what is 4 * 5?"]
        assert len(r["workers"]) == 2 and [x["answer"] for x in r["results"]] == [
            "The answer is 5.",
            "The answer is 20.",
        ]
        assert r["text"] == "Combined: what is 2 + 3?: The answer is 5.; what is 4 * 5?: The answer is 20."
        assert await k.ps() == []  # every worker was reaped


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_calc_agent_with_the_builtin_model(anyio_backend: str) -> None:
    if not (builtin_model_path() / "model.safetensors").exists():
        pytest.skip("the built-in model is not built")
    import torch

    torch.set_num_threads(1)
    async with lmos.Kernel(state_dir=":memory:", device="cpu") as k:
        r = await run(k, "calc-agent", ["what is 12 * 7?"])
        assert r["calls"] == [{"tool": "calc", "args": {"expr": "12 * 7"}, "result": "84", "ok": True}]
        assert "84" in r["text"]
