"""The example apps in ``examples/``: installed with ``app_install`` from their folders and run.

Each runs on the scripted driver with a responder that behaves like the model
the app expects, and the tests assert what the app really returns: records
built from files read through the kernel, tool calls made by the agent loop
and remembered across processes, labels gathered from a second process over
IPC.  Refusals are real too: a path outside the granted capability, a tool
whose capability was not granted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from kutil import kernel
from test_agent import call

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno
from lmos.models import builtin_model_path

pytestmark = pytest.mark.anyio
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def last_user(window: str) -> str:
    return re.findall(r"<\|user\|>(.*?)<\|end\|>", window, re.S)[-1]


def tool_results(window: str) -> list[str]:
    return re.findall(r"<\|tool\|>(.*?)<\|end\|>", window, re.S)


async def install(k: lmos.Kernel, name: str) -> dict[str, Any]:
    plan = await k.syscall("app_install", path=str(EXAMPLES / name), grant=True)
    assert plan.name == name and plan.action == "install"
    return {"caps": plan.caps, "kind": plan.kind}


async def run(k: lmos.Kernel, app: str, argv: list[str]) -> Any:
    w = await k.wait(await k.spawn(app, argv))
    assert w.exit_status == 0, w.error
    return w.result


def test_every_example_is_a_documented_app_folder() -> None:
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert names == ["ledger", "pipeline", "summarize"]
    for name in names:
        readme = (EXAMPLES / name / "README.md").read_text()
        assert f"lmos app install examples/{name} --grant" in readme


NOTES = {
    "/notes/standup.txt": "Standup moved to ten. Alice owns the release notes.",
    "/notes/ideas.md": "Ideas: a dark mode, faster search, and offline sync for the mobile app.",
}


def summarise(window: str) -> str:
    return "About " + re.findall(r"[a-z]+", last_user(window).lower())[0] + "."


async def test_summarize_reads_files_and_calls_the_model() -> None:
    async with kernel(ScriptedDriver(summarise)) as k:
        assert await install(k, "summarize") == {"caps": ["fs.read:/notes", "llm"], "kind": "code"}
        for path, text in NOTES.items():
            await k.syscall("fs_write", path=path, data=text)
        pid = await k.spawn("summarize", [])
        printed = [ev.text async for ev in k.stream(pid) if ev.kind == "output"]
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        assert w.result == [
            {"file": "/notes/ideas.md", "words": 13, "summary": "About ideas."},
            {"file": "/notes/standup.txt", "words": 9, "summary": "About standup."},
        ]
        assert "".join(printed) == "ideas.md: About ideas.\nstandup.txt: About standup.\n"
        await k.syscall("fs_write", path="/secret/plans.txt", data="not for this app")
        w = await k.wait(await k.spawn("summarize", ["/secret"]))
        assert w.errno == Errno.EPERM and (w.error or "").startswith("EPERM: summarize: ")
        w = await k.wait(await k.spawn("summarize", ["/notes/none"]))
        assert w.errno == Errno.ENOENT


async def test_summarize_runs_without_installing() -> None:
    """``run ./examples/summarize/app.toml``: loaded for one run, under the same grant rules."""
    async with kernel(ScriptedDriver(summarise)) as k:
        await k.syscall("fs_write", path="/notes/one.txt", data="Lunch is at noon today.")
        loaded = await k.syscall("app_load", path=str(EXAMPLES / "summarize" / "app.toml"), grant=True)
        r = await run(k, loaded.app, [])
        assert r == [{"file": "/notes/one.txt", "words": 5, "summary": "About lunch."}]


def bookkeeper(window: str) -> str:
    """Adds with calc, stores the sum with kv_set, recalls it with kv_get."""
    request, results = last_user(window), tool_results(window)
    if "remember" in request:
        if not results:
            return call("calc", expr="120 + 45")
        if len(results) == 1:
            return call("kv_set", key="march", value=results[0])
        return f"Saved {results[0]} as march."
    if not results:
        return call("kv_get", key="march")
    return f"march is {results[-1]}."


async def test_ledger_agent_uses_calc_and_remembers_with_kv() -> None:
    async with kernel(ScriptedDriver(bookkeeper)) as k:
        plan = await install(k, "ledger")
        assert plan == {"caps": ["kv", "llm", "tool:calc", "tool:kv_get", "tool:kv_set"], "kind": "agent"}
        r = await run(k, "ledger", ["add 120 and 45 and remember it as march"])
        assert [(c["tool"], c["result"], c["ok"]) for c in r["calls"]] == [
            ("calc", "165", True), ("kv_set", "ok", True)]
        assert r["text"] == "Saved 165 as march."
        r = await run(k, "ledger", ["what did we save as march?"])  # a new process: kv persisted
        assert r["calls"][0]["tool"] == "kv_get" and r["text"] == "march is 165."
        assert (await k.syscall("kv_get", key="march")).value == "165"


async def test_an_agent_app_gets_no_tool_it_was_not_granted() -> None:
    toml = (EXAMPLES / "ledger" / "app.toml").read_text().replace('name = "ledger"', 'name = "ledger-nokv"')
    toml = toml.replace('capabilities = ["llm", "kv"]', 'capabilities = ["llm"]')
    async with kernel(ScriptedDriver(bookkeeper)) as k:
        await k.syscall("app_install", files={"app.toml": toml}, grant=True)
        r = await run(k, "ledger-nokv", ["what did we save as march?"])
        assert r["calls"][0]["tool"] == "kv_get" and not r["calls"][0]["ok"]
        assert "kv" in r["calls"][0]["result"]  # the refusal names the missing capability


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_ledger_on_the_builtin_model(anyio_backend: str) -> None:
    """The agent example is what the built-in model was trained for: it really stores and recalls."""
    if not (builtin_model_path() / "model.safetensors").exists():
        pytest.skip("the built-in model is not built")
    import torch

    torch.set_num_threads(1)
    async with lmos.Kernel(state_dir=":memory:", device="cpu") as k:
        await install(k, "ledger")
        r = await run(k, "ledger", ["remember that march is 165"])
        assert r["calls"] == [{"tool": "kv_set", "args": {"key": "march", "value": "165"}, "result": "ok",
                               "ok": True}]
        r = await run(k, "ledger", ["recall march"])
        assert r["calls"][0]["tool"] == "kv_get" and r["calls"][0]["result"] == "165" and "165" in r["text"]


def labeller(window: str) -> str:
    item = last_user(window)
    return "Question." if item.endswith("?") else "request" if item.startswith("please") else "statement"


async def test_pipeline_talks_to_its_worker_over_ipc() -> None:
    async with kernel(ScriptedDriver(labeller)) as k:
        await install(k, "pipeline")
        items = ["where is my parcel?", "please send the invoice", "the parcel arrived"]
        pid = await k.spawn("pipeline", items)
        w = await k.wait(pid)
        assert w.exit_status == 0, w.error
        worker = w.result[0]["worker"]
        assert worker != pid and w.result == [
            {"item": "where is my parcel?", "label": "question", "worker": worker},
            {"item": "please send the invoice", "label": "request", "worker": worker},
            {"item": "the parcel arrived", "label": "statement", "worker": worker},
        ]
        assert await k.ps() == []  # the worker was reaped
        calls = [e.name for e in (await k.syscall("trace", pid=worker)).entries]
        assert calls.count("recv") == 4 and calls.count("send") == 3  # three items and the null
        w = await k.wait(await k.spawn("pipeline", ["--worker", "only-one"]))
        assert w.errno == Errno.EINVAL and "usage: pipeline --worker IN OUT" in (w.error or "")
