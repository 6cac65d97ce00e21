"""The built-in apps, on the scripted driver with responders that behave like a tool-using model.

``support``, ``sentiment-monitor``, ``recommend``, ``team`` and ``team-worker``
are sandboxed code apps (folders under ``lmos/userland/apps/``), loaded by the
app store like a user's app: these tests drive them exactly as users do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kutil import kernel
from test_agent import calc_model, call, last_tool_result

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno
from lmos.models import builtin_model_path
from lmos.taskprompts import SUPPORT_HANDOFF, SUPPORT_SYSTEM, TEAM_COMBINE_SYSTEM, TEAM_PLAN_SYSTEM
from lmos.userland.apps import HERE, builtin_apps

CODE_APPS = ["recommend", "sentiment-monitor", "support", "team", "team-worker"]

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


def test_shipped_apps_are_sandboxed_code_apps() -> None:
    """No trusted Python is shipped: the code apps are folders of sandboxed source."""
    specs = {s.name: s for s in builtin_apps()}
    for name in CODE_APPS:
        assert specs[name].extra["kind"] == "code" and specs[name].extra["origin"] == "builtin"
        assert (HERE / name / "app.toml").is_file() and (HERE / name / "main.py").is_file()
    assert sorted(p.name for p in HERE.glob("*.py")) == ["__init__.py"]
    assert list(HERE.glob("*.toml")) == []


async def test_support_answers_from_the_faq() -> None:
    def model(window: str) -> str:
        system = window.split("<|system|>", 1)[1].split("<|end|>", 1)[0]
        assert system.startswith(SUPPORT_SYSTEM + "\n[1] ") and "<|user|>" in window
        first = system.split("[1] ", 1)[1].split("\n", 1)[0]
        return first.split("? ", 1)[1] if "? " in first else SUPPORT_HANDOFF

    async with kernel(ScriptedDriver(model)) as k:
        w = await k.wait(await k.spawn("support", ["how long until my refund?"]))
        assert w.errno == Errno.ENOENT and "/support/faq.md" in (w.error or "")  # no FAQ yet
        assert (w.error or "").startswith("ENOENT: support: ")  # the app, the errno and the reason
        assert "write /support/faq.md <<EOF" in (w.error or "") and "\n" not in (w.error or "")
        w = await k.wait(await k.spawn("support", []))
        assert w.errno == Errno.EINVAL and "ask a question" in (w.error or "")
        await k.syscall("fs_write", path="/support/faq.md", data=FAQ)
        r = await run(k, "support", ["how long until my refunds arrive?"])
        assert r["text"] == "Refunds take 5 business days." and r["handoff"] is False
        r = await run(k, "support", ["can I reset my password"])
        assert r["text"] == 'Use the "forgot password" link on the login page.'
        assert "forgot password" in r["sources"] and r["finish_reason"] == "answer"
        r = await run(k, "support", ["zebra?"])  # nothing in the FAQ: handed off without the model
        assert r["text"] == SUPPORT_HANDOFF and r["handoff"] is True and r["steps"] == 0
        # It reached the kernel only through syscalls, made as its own process.
        pid = await k.spawn("support", ["do you ship abroad?"])
        await k.wait(pid)
        names = [e.name for e in (await k.syscall("trace", pid=pid)).entries]
        assert names[0] == "getpid"  # a code app first learns its uid (its worker takes a slot of that uid)
        assert names[1] == "time"  # then its clock and random seed (deterministic on replay)
        assert names[2] == "fs_stat" and "tool_call" in names and "llm_generate" in names


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


async def test_sentiment_monitor_parses_its_options_by_hand() -> None:
    """The sandbox has no argparse: ``--opt=value``, ``--`` and every refusal, done by the app."""
    async with kernel(ScriptedDriver(classify)) as k:
        argv = ["--window=2", "--threshold=0.5", "--", "--odd headline", "Oil falls"]
        r = await run(k, "sentiment-monitor", argv)
        assert [x["headline"] for x in r["labels"]] == ["--odd headline", "Oil falls"]
        assert [a["index"] for a in r["alerts"]] == [1]
        for argv, why in [
            (["--window", "two", "x"], "--window: bad value 'two'"),
            (["--threshold", "1.5", "x"], "0 < --threshold <= 1"),
            (["--colour", "red", "x"], "unknown option --colour"),
            (["x", "--file"], "--file needs a value"),
        ]:
            w = await k.wait(await k.spawn("sentiment-monitor", argv))
            assert w.errno == Errno.EINVAL and w.error is not None
            assert w.error.startswith("EINVAL: sentiment-monitor: ") and why in w.error, w.error
        w = await k.wait(await k.spawn("sentiment-monitor", ["--file", "/missing.txt"]))
        assert w.errno == Errno.ENOENT and "/missing.txt" in (w.error or "")


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
        assert r["ranking"] == bm25_reference(CATALOGUE, "enjoys cooking pasta")[:3]
        plain = "Kayak: a boat for rivers\nLamp: light\n"
        await k.syscall("fs_write", path="/recommend/plain.txt", data=plain)
        r = await run(k, "recommend", ["--catalogue", "/recommend/plain.txt", "--top", "1", "river", "boat"])
        assert r["ranking"] == [{"id": "1", "title": "Kayak", "score": r["ranking"][0]["score"]}]
        await k.syscall("fs_write", path="/recommend/bad.jsonl", data='{"title": "ok"}\n{"nope": 1}\n')
        w = await k.wait(await k.spawn("recommend", ["--catalogue", "/recommend/bad.jsonl", "x"]))
        assert w.errno == Errno.EINVAL and "catalogue line 2: an item needs a title" in (w.error or "")
        w = await k.wait(await k.spawn("recommend", ["--top", "0", "x"]))
        assert w.errno == Errno.EINVAL and "bad option --top 0" in (w.error or "")
        w = await k.wait(await k.spawn("recommend", ["--catalogue", "/etc/passwd", "x"]))
        assert w.errno == Errno.EPERM  # outside the app's fs.read:/recommend


def bm25_reference(catalogue: str, profile: str) -> list[dict[str, Any]]:
    """The ranking rank_bm25's BM25Plus gives: the sandboxed app's pure-Python BM25+ must agree."""
    from rank_bm25 import BM25Plus

    items = [json.loads(line) for line in catalogue.splitlines()]
    docs = [re.findall(r"[a-z0-9]+", f"{i['title']} {' '.join(i['tags'])} {i['description']}".lower())
            for i in items]
    scores = BM25Plus(docs).get_scores(re.findall(r"[a-z0-9]+", profile.lower()))
    order = sorted(range(len(items)), key=lambda n: (-scores[n], n))
    return [{"id": items[n]["id"], "title": items[n]["title"], "score": round(float(scores[n]), 4)}
            for n in order]


async def test_team_spawns_workers_and_gathers_over_ipc() -> None:
    def model(window: str) -> str:
        if TEAM_PLAN_SYSTEM in window:
            return "1. what is 2 + 3?\n2. what is 4 * 5?"
        if TEAM_COMBINE_SYSTEM in window:  # the combiner has calc declared, and adds the workers' numbers up
            assert "\nTools:\ncalc(expr: string)" in window
            result = last_tool_result(window)
            if result is not None:
                return f"Together: {result}."
            found = re.findall(r"\[\d\] what is .*?: The answer is (\d+)\.", window)
            return call("calc", expr=" + ".join(found))
        return calc_model(window)

    async with kernel(ScriptedDriver(model)) as k:
        r = await run(k, "team", ["do two sums"])
        assert r["plan"] == ["what is 2 + 3?", "what is 4 * 5?"]
        assert len(r["workers"]) == 2 and [x["answer"] for x in r["results"]] == [
            "The answer is 5.",
            "The answer is 20.",
        ]
        assert r["text"] == "Together: 25." and r["calls"][0]["args"] == {"expr": "5 + 20"}
        assert await k.ps() == []  # every worker was reaped


async def test_apps_say_what_files_they_need_and_how_to_create_them() -> None:
    """``--help`` names the files; a missing file is one line with the lmosh command that creates it."""
    async with kernel(ScriptedDriver("unused")) as k:
        for app, needs in [("support", "/support/faq.md"), ("recommend", "/recommend/catalogue.jsonl"),
                           ("sentiment-monitor", "--file PATH"), ("team", "Needs no files")]:
            pid = await k.spawn(app, ["--help"])
            text = "".join([ev.text async for ev in k.stream(pid) if ev.kind == "output"])
            w = await k.wait(pid)
            assert w.exit_status == 0 and w.result is None, w.error
            assert text.startswith(f"usage: {app}") and needs in text, text
        for app, argv, line in [
            ("support", ["how", "do", "I", "reset", "my", "password?"],
             "no FAQ at /support/faq.md \u2014 create it: write /support/faq.md <<EOF"),
            ("recommend", ["hiking"], "no catalogue at /recommend/catalogue.jsonl \u2014 create it: "
                                      "write /recommend/catalogue.jsonl <<EOF"),
            ("recommend", ["--catalogue", "/recommend/shoes.jsonl", "hiking"],
             "no catalogue at /recommend/shoes.jsonl \u2014 create it: write /recommend/shoes.jsonl <<EOF"),
            ("sentiment-monitor", ["--file", "/news/today.txt"],
             "no headline file at /news/today.txt \u2014 create it: write /news/today.txt <<EOF"),
            ("sentiment-monitor", [], "no headlines: give them as arguments, --file PATH or --chan NAME"),
        ]:
            w = await k.wait(await k.spawn(app, argv))
            assert w.error is not None and w.error.startswith(f"{Errno(w.errno).name}: {app}: "), w.error
            assert line in w.error and "\n" not in w.error, w.error


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
