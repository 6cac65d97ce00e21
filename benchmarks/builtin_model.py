"""How well the built-in model does each task of issue 14, on data it was not written for.

Every task end to end, greedy, on CPU; one final JSON line on stdout, progress on stderr.

* **template-held-out** (``heldout``): conversations of the v2 corpus's held-out
  split (:mod:`lmos.train.split`, :mod:`lmos.train.corpus_apps_split`), ``--per-kind``
  of every kind: no request phrasing family, key name, small-talk prompt,
  normalised calc expression, value, synthetic tool object, description or
  app-task template of them occurs in training.  Run at the model level by
  :mod:`lmos.train.bench_v2`: the model writes every assistant turn on the exact
  rendering the agent sends (the tool declaration block in the system turn) or
  the exact prompt the app sends (:mod:`lmos.taskprompts`); its calls run on the
  real tool code (calc core, kv closest-key lookup) or the recorded stand-in
  results of synthetic tools.
* **hand-written** (``handwritten``): everyday requests written by hand, never
  generated, trained on or used to design templates; the run refuses to start
  if a file's SHA-256 is not the recorded one.  ``benchmarks/data/handwritten_eval.jsonl``
  (calc, kv, clock, small talk through the real agent loop ``Kernel.chat``;
  support, sentiment-monitor and recommend as the real apps over files written
  into the kernel), ``handwritten_eval_v2.jsonl`` (declared unseen tools,
  multi-turn and giving up at the model level; team as the real ``team`` app)
  and ``sentiment_headlines.jsonl`` (150+ headlines, macro-F1, with the app's
  exact prompt).

A request counts as right only when the call is right (tool and arguments, or
no call where none is due) *and* the answer contains the expected fact.
``--quick`` runs a handful per task (for tests); ``--limit N`` at most N per
hand-written task.
Usage: ``python benchmarks/builtin_model.py [--quick] [--per-kind 40] [--limit N] [--model DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio

HANDWRITTEN = Path(__file__).resolve().parent / "data" / "handwritten_eval.jsonl"
HANDWRITTEN_SHA256 = "3b546396b962e12d50318913b68a24a4af526ec01b58d0fc003da4339f116904"
# Frozen hand-written additions (lmos.train.handwritten): declared/multiturn/team/giveup, and
# 162 financial headlines for sentiment macro-F1.  Never train on them; change only by review.
HANDWRITTEN_V2 = HANDWRITTEN.parent / "handwritten_eval_v2.jsonl"
HANDWRITTEN_V2_SHA256 = "81f7a64a9a9af1668454b573ce984598b3acf950c6c9c5d20bc2e3e14e9b4a47"
HEADLINES = HANDWRITTEN.parent / "sentiment_headlines.jsonl"
HEADLINES_SHA256 = "7d94809ed888fedec8050e651aa1c9ec4a3e208bb84aefda57eccd09158a3d47"
TOOLS = ["calc", "kv_set", "kv_get", "clock"]
CHAT = dict(max_steps=4, max_tokens=96, temperature=0.0)
STORED_REPLY = "Got it."  # the assistant's reply after the replayed store turn of a kv_recall item
CONCURRENCY = 32
Scores = dict[str, list[bool]]
DETAILS: list[dict[str, Any]] = []  # one record per scored request, written by --details


def record(scores: Scores, task: str, ok: bool, **info: Any) -> None:
    scores[task].append(ok)
    DETAILS.append({"task": task, "ok": ok, **info})


def log(msg: str) -> None:
    print(f"[builtin_model] {msg}", file=sys.stderr, flush=True)


async def seed_kv(k: Any, uid: int, kv: dict[str, str]) -> None:
    """Put ``kv`` in the store of ``uid`` (as that user, through the kv syscall)."""

    async def main(sys: Any, argv: list[str]) -> None:
        for key, value in json.loads(argv[0]).items():
            await sys.call("kv_set", key=key, value=value)

    if kv:
        w = await k.wait(await k.spawn(main, [json.dumps(kv)], caps=["kv"], uid=uid))
        assert w.exit_status == 0, w.error


async def handwritten_item(k: Any, item: dict[str, Any], uid: int, scores: Scores) -> None:
    """One hand-written tool or small-talk request through the agent loop."""
    from lmos.chatformat import DEFAULT_SYSTEM_PROMPT, call_message
    from lmos.train import handwritten as H

    task, want = item["task"], item["answer"]
    msgs: list[dict[str, Any]] = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    if task == "kv_recall":
        stored = item["stored"]
        await seed_kv(k, uid, {stored["key"]: stored["value"]})
        args = {"key": stored["key"], "value": stored["value"]}
        msgs += [{"role": "user", "content": stored["ask"]}, call_message("kv_set", args),
                 {"role": "tool", "content": "ok"}, {"role": "assistant", "content": STORED_REPLY}]
    msgs.append({"role": "user", "content": item["ask"]})
    r = await k.chat(msgs, tools=TOOLS, uid=uid, **CHAT)
    first = r.calls[0] if r.calls else None
    if task == "smalltalk":
        ok = not r.calls and bool(r.text.strip())
    elif first is None or first["tool"] != item["tool"]:
        ok = False
    elif task == "calc":
        ok = first["result"] == want and H.contains(r.text, want)
    elif task == "kv_remember":
        got = first["args"]
        value, key = str(got.get("value", "")), str(got.get("key", ""))
        key_ok = H.keys_compatible(key, item["args"]["key"])
        ok = H.same_value(value, want) and key_ok and H.contains(r.text, want)
    elif task == "kv_recall":
        ok = first["result"] == want and H.contains(r.text, want)
    else:  # clock
        part = want.removeprefix("<clock ").rstrip(">")
        ok = all(p in r.text for p in H.clock_part(first["result"], part))
    record(scores, task, ok, set="handwritten", id=item["id"], ask=item["ask"], calls=r.calls, text=r.text)


async def app_result(k: Any, app: str, argv: list[str]) -> Any:
    w = await k.wait(await k.spawn(app, argv))
    if w.exit_status != 0:
        raise RuntimeError(f"{app} failed: {w.error}")
    return w.result


async def seed_apps(k: Any, items: list[dict[str, Any]], res: dict[str, Any], scores: Scores,
                    extra: dict[str, Any]) -> None:
    """support, sentiment-monitor and recommend: the real apps on the hand-written files."""
    from lmos.train import handwritten as H

    await k.syscall("fs_write", path=res["faq"]["path"], data=res["faq"]["text"])
    catalogue = {i["title"]: i for i in res["catalogue"]["items"]}
    lines = "".join(json.dumps({x: i[x] for x in ("id", "title", "description", "tags")}) + "\n"
                    for i in catalogue.values())
    await k.syscall("fs_write", path=res["catalogue"]["path"], data=lines)
    heads = [i for i in items if i["task"] == "sentiment"]
    if heads:
        got = (await app_result(k, "sentiment-monitor", ["--", *[i["ask"] for i in heads]]))["labels"]
        pairs = [(i["answer"], g["label"]) for i, g in zip(heads, got, strict=True)]
        for i, (e, p) in zip(heads, pairs, strict=True):
            record(scores, "sentiment", e == p, set="handwritten", id=i["id"], ask=i["ask"], text=p)
        extra["handwritten_sentiment_macro_f1"] = H.macro_f1(pairs, ("positive", "negative", "neutral"))
        extra["handwritten_sentiment_predicted"] = {lab: sum(p == lab for _, p in pairs)
                                                    for lab in ("positive", "negative", "neutral")}

    async def support(item: dict[str, Any]) -> None:
        r = await app_result(k, "support", item["ask"].split())
        if item["answer"] == "<hand-off>":
            ok = H.HANDOFF.search(r["text"]) is not None
        else:
            ok = H.contains(r["text"], item["answer"])
            scores["support_retrieval"].append(H.contains(r["sources"], item["answer"]))
        record(scores, "support", ok, set="handwritten", id=item["id"], ask=item["ask"], text=r["text"])

    async def recommend(item: dict[str, Any]) -> None:
        r = await app_result(k, "recommend", item["ask"].split())
        top = catalogue[r["ranking"][0]["title"]]
        scores["recommend_retrieval"].append(top["title"] == item["answer"])
        ok = H.contains(r["text"], top["title"]) and any(H.contains(r["text"], a) for a in top["attributes"])
        record(scores, "recommend", ok, set="handwritten", id=item["id"], ask=item["ask"], text=r["text"])

    await gather([support(i) for i in items if i["task"] == "support"]
                 + [recommend(i) for i in items if i["task"] == "recommend"])


async def gather(jobs: list[Any]) -> None:
    """Run coroutines CONCURRENCY at a time (the kernel batches their generations)."""
    limit = anyio.Semaphore(CONCURRENCY)
    done = 0

    async def one(job: Any) -> None:
        nonlocal done
        async with limit:
            await job
        done += 1
        if done % 25 == 0 or done == len(jobs):
            log(f"{done}/{len(jobs)}")

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(one, job)


def rates(scores: Scores) -> dict[str, Any]:
    return {t: {"n": len(v), "acc": round(sum(v) / len(v), 4)} for t, v in sorted(scores.items()) if v}


def hf_model(path: Path) -> Any:
    """The model and tokenizer for the model-level sets (fp32, CPU, greedy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def model_level(args: argparse.Namespace, v2: list[dict[str, Any]], res2: dict[str, Any],
                heads: list[dict[str, Any]], extra: dict[str, Any]) -> tuple[Scores, Scores]:
    """The held-out set and the model-level hand-written tasks (declared, multiturn, giveup, headlines)."""
    from lmos.train import bench_v2 as B
    from lmos.train.evaluate import hf_generate_fn

    model, tok = hf_model(args.model)
    generate = hf_generate_fn(model, tok, max_new_tokens=96)
    held: Scores = defaultdict(list)
    hand: Scores = defaultdict(list)
    start = time.perf_counter()
    convs = B.heldout_set(args.per_kind, args.seed)
    log(f"template-held-out: {len(convs)} conversations")
    held.update(B.score_heldout(convs, generate, extra))
    extra["heldout_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    log(f"hand-written v2 (model level): {len(v2)} items, {len(heads)} headlines")
    B.score_declared([i for i in v2 if i["task"] == "declared"], res2, generate, hand)
    B.score_multiturn([i for i in v2 if i["task"] == "multiturn"], generate, hand)
    B.score_giveup([i for i in v2 if i["task"] == "giveup"], res2, generate, hand)
    B.score_headlines(heads, generate, hand, extra)
    extra["model_level_seconds"] = round(time.perf_counter() - start, 1)
    return held, hand


async def run(args: argparse.Namespace, items: list[dict[str, Any]], res: dict[str, Any],
              team: list[dict[str, Any]]) -> dict[str, Any]:
    """The kernel-level hand-written tasks: the agent loop and the real apps."""
    import lmos

    hand: Scores = defaultdict(list)
    extra: dict[str, Any] = {}
    async with lmos.Kernel(model=str(args.model), state_dir=":memory:", device="cpu") as k:
        start = time.perf_counter()
        tool_items = [i for i in items if i["task"] not in ("support", "sentiment", "recommend")]
        log(f"hand-written (kernel): {len(items)} requests, {len(team)} team requests")
        await gather([handwritten_item(k, it, 50000 + j, hand) for j, it in enumerate(tool_items)])
        await seed_apps(k, items, res, hand, extra)

        async def team_item(item: dict[str, Any]) -> None:
            from lmos.train import handwritten as H

            try:
                text = str((await app_result(k, "team", item["ask"].split()))["text"])
            except RuntimeError as exc:
                text = f"<failed: {exc}>"
            record(hand, "team", H.contains(text, item["answer"]), set="handwritten", id=item["id"],
                   ask=item["ask"], text=text)

        await gather([team_item(i) for i in team])
        extra["kernel_seconds"] = round(time.perf_counter() - start, 1)
    return {"handwritten": hand, **extra}


TARGETS = {"heldout": 0.90, "handwritten": 0.85, "declared": 0.70, "sentiment_macro_f1": 0.85}
DIAGNOSTIC = ("support_retrieval", "recommend_retrieval")  # retrieval, not the model: no target


def targets(figures: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's targets against the figures: the tasks below their target, per set."""
    out: dict[str, Any] = {"thresholds": TARGETS, "missed": {}}
    for label in ("heldout", "handwritten"):
        for task, r in figures[label].items():
            want = TARGETS["declared"] if task == "declared" else TARGETS[label]
            if task not in DIAGNOSTIC and r["acc"] < want:
                out["missed"][f"{label}.{task}"] = r["acc"]
    for key in ("headlines_sentiment_macro_f1", "heldout_sentiment_macro_f1"):
        if key in figures and figures[key] < TARGETS["sentiment_macro_f1"]:
            out["missed"][key] = figures[key]
    out["met"] = not out["missed"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a handful per task (for tests)")
    parser.add_argument("--limit", type=int, default=0, help="at most N items per hand-written task")
    parser.add_argument("--per-kind", type=int, default=40, help="held-out conversations per kind")
    parser.add_argument("--seed", type=int, default=20261122, help="held-out corpus seed")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: built-in)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--details", type=Path, default=None, help="write every scored request here (JSONL)")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.per_kind = args.limit or 2, min(args.per_kind, 2)

    from lmos.errors import SyscallError
    from lmos.train import bench_v2 as B
    from lmos.train import handwritten as H

    try:  # before loading anything: a changed or malformed set is refused at once
        items, res = H.load(HANDWRITTEN, HANDWRITTEN_SHA256)
        v2, res2 = H.load(HANDWRITTEN_V2, HANDWRITTEN_V2_SHA256, tasks=H.V2_TASKS)
        heads, _ = H.load(HEADLINES, HEADLINES_SHA256, tasks=("sentiment",), min_per_task=H.MIN_HEADLINES)
    except SyscallError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    import torch

    from lmos.models import builtin_model_path

    items, v2, heads = B.sample(items, args.limit), B.sample(v2, args.limit), B.sample(heads, 5 * args.limit)
    torch.set_num_threads(args.threads)
    args.model = args.model or builtin_model_path()
    start = time.perf_counter()
    figures: dict[str, Any] = {"bench": "builtin_model", "model": str(args.model), "limit": args.limit,
                               "per_kind": args.per_kind, "handwritten_sha256": HANDWRITTEN_SHA256,
                               "handwritten_v2_sha256": HANDWRITTEN_V2_SHA256,
                               "headlines_sha256": HEADLINES_SHA256}
    extra: dict[str, Any] = {}
    held, hand = model_level(args, v2, res2, heads, extra)
    kernel = anyio.run(run, args, items, res, [i for i in v2 if i["task"] == "team"])
    hand.update(kernel.pop("handwritten"))
    figures.update({"heldout": rates(held), "handwritten": rates(hand), **extra, **kernel})
    figures["seconds"] = round(time.perf_counter() - start, 1)
    figures["targets"] = targets(figures)
    for label in ("heldout", "handwritten"):
        for task, r in figures[label].items():
            log(f"{label:12s} {task:20s} {r['acc']:7.1%}  (n={r['n']})")
    if args.details:
        rows = [*B.DETAILS, *DETAILS]
        args.details.write_text("".join(json.dumps(d, ensure_ascii=False, default=str) + "\n" for d in rows))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
