"""How well the shipped built-in model does each task, on data it was not written for.

Two sets, every request run end to end through the kernel (greedy, CPU): tool
requests through the real agent loop (``Kernel.chat``: the model's calls run on
the real ``calc``, ``kv_set``/``kv_get`` and ``clock`` tools), the seed apps as
the real ``support``, ``sentiment-monitor`` and ``recommend`` apps over files
written into the kernel.

* **template-held-out**: conversations of the synthetic corpus's held-out
  split (:mod:`lmos.train.split`): no request phrasing family, key name,
  small-talk prompt, normalised calc expression or value of them occurs in the
  training split.  CAUTION: the shipped model was trained before this split
  existed (on the old value-only split), so it has seen these phrasing
  families, key names and prompts; for it these figures are an upper bound,
  and they become honest only for a model trained on the new training split.
  The corpus has no support, sentiment or recommend conversations, so those
  tasks have hand-written figures only.
* **hand-written** (``benchmarks/data/handwritten_eval.jsonl``, see
  :mod:`lmos.train.handwritten`): everyday requests written by hand,
  independently of the corpus code, never trained on.  The run refuses to
  start if the file's SHA-256 is not :data:`HANDWRITTEN_SHA256`.

A request counts as right only when the call is right (tool and arguments, or
no call where none is due) *and* the answer contains the expected fact.
Per-turn details of the template set follow :mod:`lmos.train.evaluate`.

Progress on stderr; the last stdout line is one JSON object.  ``--limit N``
runs at most N items per hand-written task and N conversations per held-out
profile, for a quick check.
Usage: ``python benchmarks/builtin_model.py [--limit N] [--n 200] [--broad 100] [--model DIR]``.
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


def history_after(history: list[dict[str, Any]], r: Any) -> list[dict[str, Any]]:
    """The history plus the agent's calls, their results and its answer (malformed calls left out)."""
    from lmos.chatformat import call_message

    out = list(history)
    for c in r.calls:
        if c["tool"]:
            out += [call_message(c["tool"], c["args"]), {"role": "tool", "content": c["result"]}]
    return [*out, {"role": "assistant", "content": r.text}]


async def corpus_conversation(k: Any, conv: Any, uid: int, scores: Scores) -> None:
    """Replay one held-out conversation turn by turn; the model writes every assistant turn."""
    from lmos.train.evaluate import _reference_result, _reference_turns
    from lmos.train.toolbox import answer_must_contain

    await seed_kv(k, uid, conv.meta.get("kv") or {})
    history = [m for m in conv.messages[:1] if m["role"] == "system"]
    names = {"kv_set": "kv_remember", "kv_get": "kv_recall"}
    for user, ref_call, ref_answer in _reference_turns(conv):
        history.append(user)
        r = await k.chat(history, tools=TOOLS, uid=uid, **CHAT)
        first = r.calls[0] if r.calls else None
        if ref_call is None:
            repeat = bool(ref_answer) and ref_answer in user["content"]
            ok = not r.calls and (not repeat or r.text.strip() == ref_answer)
            record(scores, "repeat" if repeat else "smalltalk", ok, set="heldout", ask=user["content"],
                   calls=r.calls, text=r.text)
        else:
            tool, args = ref_call
            call_ok = first is not None and (first["tool"], first["args"]) == (tool, args)
            clock_ok = first is not None and tool == "clock" and call_ok
            result = first["result"] if first is not None and clock_ok else _reference_result(conv, user)
            must = answer_must_contain(tool, args, result)
            record(scores, names.get(tool, tool), call_ok and bool(must) and must in r.text, set="heldout",
                   ask=user["content"], want=[tool, args, must], calls=r.calls, text=r.text)
        history = history_after(history, r)


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


async def run(args: argparse.Namespace, items: list[dict[str, Any]], res: dict[str, Any]) -> dict[str, Any]:
    import lmos
    from lmos.train.corpus import generate

    held: Scores = defaultdict(list)
    hand: Scores = defaultdict(list)
    extra: dict[str, Any] = {}
    n, broad = (min(args.n, args.limit), min(args.broad, args.limit)) if args.limit else (args.n, args.broad)
    convs = generate(n, seed=args.seed, split="heldout")
    if broad:
        convs += generate(broad, seed=args.seed, split="heldout", profile="broad")
    async with lmos.Kernel(model=str(args.model), state_dir=":memory:", device="cpu") as k:
        start = time.perf_counter()
        log(f"template-held-out: {len(convs)} conversations")
        await gather([corpus_conversation(k, c, 40000 + i, held) for i, c in enumerate(convs)])
        extra["heldout_seconds"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        tool_items = [i for i in items if i["task"] not in ("support", "sentiment", "recommend")]
        log(f"hand-written: {len(items)} requests")
        await gather([handwritten_item(k, it, 50000 + j, hand) for j, it in enumerate(tool_items)])
        await seed_apps(k, items, res, hand, extra)
        extra["handwritten_seconds"] = round(time.perf_counter() - start, 1)
    return {"heldout": rates(held), "handwritten": rates(hand), **extra}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="at most N items per task (quick run)")
    parser.add_argument("--n", type=int, default=200, help="held-out base-profile conversations")
    parser.add_argument("--broad", type=int, default=100, help="held-out broad-profile conversations")
    parser.add_argument("--seed", type=int, default=20261122, help="held-out corpus seed")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: built-in)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--details", type=Path, default=None, help="write every scored request here (JSONL)")
    args = parser.parse_args()

    from lmos.errors import SyscallError
    from lmos.train import handwritten as H

    try:  # before loading anything: a changed set is refused at once
        items, res = H.load(HANDWRITTEN, HANDWRITTEN_SHA256)
    except SyscallError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    import torch

    from lmos.models import builtin_model_path

    if args.limit:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for i in items:
            seen[i["task"]] += 1
            if seen[i["task"]] <= args.limit:
                kept.append(i)
        items = kept
    torch.set_num_threads(args.threads)
    args.model = args.model or builtin_model_path()
    start = time.perf_counter()
    figures: dict[str, Any] = {"bench": "builtin_model", "model": str(args.model), "limit": args.limit,
                               "handwritten_sha256": HANDWRITTEN_SHA256}
    figures.update(anyio.run(run, args, items, res))
    figures["seconds"] = round(time.perf_counter() - start, 1)
    for label in ("heldout", "handwritten"):
        for task, r in figures[label].items():
            log(f"{label:12s} {task:20s} {r['acc']:7.1%}  (n={r['n']})")
    if args.details:
        args.details.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DETAILS))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
