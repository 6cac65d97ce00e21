"""The giving-up corpus: a declared tool keeps failing, and the model says so briefly and honestly.

The conversations are the agent loop's (:mod:`lmos.userland.agent`): the
tools are declared (``Conversation.tools``), the model calls one, and each
failure comes back as a tool turn ``error: MESSAGE`` (the loop's
observation format).  What the model learns:

* a *transient* failure (timed out, unavailable, I/O error, HTTP 5xx, rate
  limit) is retried with the same call; after two or three failures in a row
  the answer is :func:`lmos.taskprompts.give_up_text` plus the last error;
  sometimes the retry succeeds (then the answer uses the result);
* a *permanent* failure (no such file, invalid argument, permission denied)
  is not retried: the answer says what went wrong at once;
* no answer ever states a result the tools did not return.

Tools are lmos's own (``fs_read``, ``http_get``, ``kv_get``, with their real
declarations and error texts) or synthetic declared tools
(:mod:`lmos.train.synth_tools`).  Split: a quarter of each request list, the
synthetic tools' own split, paths/hosts by value.
"""

from __future__ import annotations

import random
from typing import Any

from lmos.chatformat import DEFAULT_SYSTEM_PROMPT, call_message
from lmos.taskprompts import give_up_text
from lmos.train import synth_tools as S
from lmos.train.corpus_apps_split import Draw, Pool, coined, conversation
from lmos.train.data import Conversation
from lmos.train.split import family
from lmos.userland.tools import builtin_tools

_BUILTIN = {t.name: {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in builtin_tools()}
ASKS = {
    "fs_read": Pool("giveup.fs_read", [
        "read {path}", "what's in {path}?", "show me the file {path}", "open {path} for me",
        "can you read {path}?", "print the contents of {path}", "what does {path} say?", "load {path}",
    ]),
    "http_get": Pool("giveup.http_get", [
        "fetch {url}", "get the page at {url}", "what does {url} say?", "download {url}",
        "can you check {url}?", "load {url} and tell me what it says", "read {url}", "open {url}",
    ]),
    "kv_get": Pool("giveup.kv_get", [
        "what's my {key}?", "recall my {key}", "what did I save as {key}?", "look up my {key}",
        "do you remember my {key}?", "get {key} from my notes",
    ]),
}
TRANSIENT = {
    "fs_read": ["I/O error reading {path}", "storage unavailable", "device busy, try again"],
    "http_get": ["{host} did not answer within 10s", "cannot connect to {host}:443: Connection refused",
                 "GET {url}: HTTP 503", "GET {url}: HTTP 502", "cannot resolve {host}: temporary failure"],
    "kv_get": ["kv store unavailable", "database is locked", "I/O error"],
    "synth": ["service unavailable", "timeout", "rate limit exceeded", "internal server error",
              "connection reset by peer", "upstream timed out after 30s", "HTTP 503"],
}
PERMANENT = {
    "fs_read": ["no such file: {path}", "no such file or directory: {path}", "is a directory: {path}",
                "permission denied: {path}"],
    "http_get": ["http_get needs capability 'net:{host}'", "GET {url}: HTTP 404", "GET {url}: HTTP 403"],
    "kv_get": ["no such key: {key}"],
    "synth": ["not found", "invalid {p}", "permission denied", "unknown {p}"],
}
GIVE_UP_FRAMES = [
    "{g} The last error was: {msg}.",
    "{g} ({msg})",
    "{g} It said: {msg}. Please try again later.",
    "{g} Error: {msg}.",
]
PERMANENT_FRAMES = [
    "I couldn't do that: {msg}.",
    "Sorry, the {tool} tool failed: {msg}.",
    "That didn't work: {tool} failed ({msg}).",
    "I can't answer that: {msg}.",
]


def _place(d: Draw) -> dict[str, str]:
    r = d.rng
    word = d.value(lambda: coined(r, (1, 2)).lower())
    host = f"{word}.{r.choice(['com', 'org', 'net', 'io', 'example'])}"
    folder, ext = r.choice(["notes", "docs", "home", "data", "reports"]), r.choice(["txt", "md", "csv"])
    return {
        "path": f"/{folder}/{word}.{ext}",
        "host": host,
        "url": f"https://{host}/{r.choice(['', 'news', 'api/status', 'prices', 'today'])}".rstrip("/"),
        "key": word,
    }


def _builtin(d: Draw) -> tuple[list[dict[str, Any]], str, dict[str, Any], str, str]:
    """(declared tools, tool, args, request, errors key) for one of lmos's own tools."""
    r = d.rng
    tool = r.choice(list(ASKS))
    fill = _place(d)
    arg = {"fs_read": "path", "http_get": "url", "kv_get": "key"}[tool]
    args = {arg: fill[arg]}
    ask = ASKS[tool].pick(d).format(**fill)
    extra = [n for n in ("calc", "clock", "kv_set", "search", "fs_list") if r.random() < 0.3]
    declared = [_BUILTIN[n] for n in sorted({tool, *extra}) if n in _BUILTIN]
    return declared, tool, args, ask, tool


def _synthetic(d: Draw) -> tuple[list[dict[str, Any]], str, dict[str, Any], str, S.SynthTool]:
    t = S.draw_tool(d.rng, d.heldout)
    d.used.extend(f"synth:{f}" for f in t.families)
    mark = len(d.used)
    ask, args = S.request(d.rng, t, d.heldout, d.used)
    # the request templates of synth_tools, labelled with their list (queries and actions are split apart)
    d.used[mark:] = [f"synth.ask.{t.mode}:{family(u)}" for u in d.used[mark:]]
    declared = [t.declaration()]
    if d.rng.random() < 0.4:
        declared.append(S.draw_tool(d.rng, d.heldout, {t.name}).declaration())
        d.rng.shuffle(declared)
    return declared, t.name, args, ask, t


def giveup(rng: random.Random, split: str) -> Conversation:
    """A failing tool: retried while the failure is transient, then an honest short answer."""
    d = Draw(rng, split)
    synth: S.SynthTool | None = None
    if rng.random() < 0.5:
        declared, tool, args, ask, kind = _builtin(d)
        fill = {**_place(d), **{k: str(v) for k, v in args.items()}}
        fill.setdefault("host", fill["url"].split("/")[2] if "url" in args else fill["host"])
    else:
        declared, tool, args, ask, synth = _synthetic(d)
        kind, fill = "synth", {"p": synth.params[0].name}
    if "url" in args:
        fill["host"] = str(args["url"]).split("/")[2]
    msgs: list[dict[str, Any]] = [{"role": "user", "content": ask}]
    call = call_message(tool, args)
    outcome = rng.choices(["transient", "permanent", "recovered"], weights=[55, 30, 15 if synth else 0])[0]
    if outcome == "permanent":
        msg = rng.choice(PERMANENT[kind]).format(**fill)
        msgs += [call, {"role": "tool", "content": f"error: {msg}"}]
        answer = rng.choice(PERMANENT_FRAMES).format(msg=msg, tool=tool)
    else:
        failures = 1 if outcome == "recovered" else rng.choice([2, 3])
        for _ in range(failures):
            msg = rng.choice(TRANSIENT[kind]).format(**fill)
            msgs += [call, {"role": "tool", "content": f"error: {msg}"}]
        if synth is not None and outcome == "recovered":
            result = S.result(rng, synth, args)
            msgs += [call, {"role": "tool", "content": result}]
            answer = S.answer(rng, synth, args, result)
        else:
            answer = rng.choice(GIVE_UP_FRAMES).format(g=give_up_text(tool), msg=msg)
    msgs.append({"role": "assistant", "content": answer})
    system = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    return conversation(d, "giveup", [system, *msgs], declared, tool=tool, outcome=outcome)
