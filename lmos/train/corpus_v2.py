"""The v2 corpus of the built-in model: declared tools, harder calc, multi-turn, and the seed apps.

Every conversation that may use a tool carries a declaration block
(``Conversation.tools``, rendered by :func:`lmos.chatformat.tool_block` into
the system turn): the tools it uses plus a random choice of lmos's other tools
and synthetic distractors, or exactly what the agent declares by default (the
four standard tools, or all built-in ones).  Conversations that use no tool
are drawn with and without a block, and a request for a tool that is not
declared is answered without a call, so the model learns to call only what is
declared.

Kinds (:data:`KINDS`, drawn by :mod:`lmos.train.corpus_v2_kinds`): ``calc``
(base arithmetic), ``calc_percent`` ("15% of 200" -> ``15 / 100 * 200``),
``calc_power`` (``sqrt(144)``, ``2 ** 10``), ``calc_words`` ("twelve times
seven"), ``calc_multi`` (several steps: one expression, or two calls),
``kv_pair``/``kv_get``/``kv_fuzzy`` (remember and recall; a loosely recalled
key gets the real tool's ``VALUE (stored under "KEY")`` or ENOENT), ``clock``,
``declared``/``parallel`` (synthetic tools of :mod:`lmos.train.synth_tools`,
one call or several in one turn), ``followup`` ("now multiply that by 3",
"what did I just ask?"), ``chat``, ``repeat``, ``undeclared``, and the
seed-app tasks.

Interface expected from the app-task module (helper B3, ``lmos.train.corpus_apps``)::

    APP_TASKS: dict[str, Callable[[random.Random, str], Conversation]]

keyed by task name (support, sentiment, recommend, team, giveup); the ``str``
is the split, ``"train"`` or ``"heldout"``.  Each generator builds its
messages with :mod:`lmos.taskprompts` (exactly what the apps send), sets
``Conversation.tools`` when it declares tools and ``meta["kind"]`` to its task
name, and holds out its own template families, lexicon entries, key names and
values with the :mod:`lmos.train.split` helpers; this module only mixes the
tasks in at :data:`APP_WEIGHTS`.  Without that module the corpus has no app
tasks.

Same seed, same corpus, whatever the number of worker processes: the corpus
is cut into chunks of :data:`CHUNK` conversations, each drawn from its own
seed (:func:`generate`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from lmos.chatformat import DEFAULT_SYSTEM_PROMPT
from lmos.train import synth_tools as S
from lmos.train.corpus import Msgs
from lmos.train.corpus_v2_kinds import V2Kinds
from lmos.train.data import Conversation
from lmos.train.toolbox import ToolBox

KINDS = {
    "calc": 0.10, "calc_percent": 0.04, "calc_power": 0.035, "calc_words": 0.03, "calc_multi": 0.04,
    "kv_pair": 0.07, "kv_get": 0.04, "kv_fuzzy": 0.03, "clock": 0.03, "declared": 0.12, "parallel": 0.05,
    "followup": 0.05, "chat": 0.05, "repeat": 0.02, "undeclared": 0.02,
}
APP_WEIGHTS = {"support": 0.08, "sentiment": 0.06, "recommend": 0.05, "team": 0.04, "giveup": 0.03}
APP_DEFAULT_WEIGHT = 0.03
CHUNK = 2000  # conversations per seeded chunk (the unit of parallel generation)
STANDARD = ("calc", "kv_set", "kv_get", "clock")  # what the benchmark's and calc-agent's chats allow
MAX_DECLARED = 8
AppTask = Callable[[random.Random, str], Conversation]


@lru_cache(maxsize=1)
def lmos_declarations() -> tuple[dict[str, Any], ...]:
    """lmos's built-in tools as the agent declares them (the same Tool objects, in boot order)."""
    from lmos.userland.tools import builtin_tools

    return tuple({"name": t.name, "description": t.description, "parameters": t.parameters}
                 for t in builtin_tools())


def app_tasks() -> dict[str, AppTask]:
    """The app-task registry (``lmos.train.corpus_apps.APP_TASKS``), or none when it is absent."""
    try:
        from lmos.train.corpus_apps import APP_TASKS  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    return dict(APP_TASKS)


def called(msgs: Msgs) -> list[str]:
    """The tools a conversation calls, in first-call order."""
    out: list[str] = []
    for m in msgs:
        for c in m.get("tool_calls") or []:
            name = str((c.get("function") or c)["name"])
            if name not in out:
                out.append(name)
    return out


def _unique(decls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Declarations with one entry per name (the first kept): a block never names a tool twice."""
    seen: set[str] = set()
    out = []
    for d in decls:
        if d["name"] not in seen:
            seen.add(d["name"])
            out.append(d)
    return out


class V2Generator(V2Kinds):
    """Draws whole v2 conversations (with their declarations) from one seeded stream."""

    def __init__(self, seed: int = 0, split: str = "train", apps: dict[str, AppTask] | None = None) -> None:
        super().__init__(seed, split)
        self.apps = app_tasks() if apps is None else apps
        weights = dict(KINDS)
        for name in sorted(self.apps):
            weights[name] = APP_WEIGHTS.get(name, APP_DEFAULT_WEIGHT)
        self.kinds, self.weights = list(weights), list(weights.values())

    def _main(self, kind: str, box: ToolBox, prior: dict[str, str]) -> Msgs:
        r = self.rng
        if kind == "kv_pair":
            key = self.key()
            while key in prior:
                key = self.key()
            msgs = self.kv_set(box, key, self.value())
            if r.random() < 0.3:
                msgs += self._filler(box)
            return msgs + self.kv_get(box, key)
        if kind == "kv_get":
            key = self.key()
            if r.random() < 0.12:
                while key in box.kv:
                    key = self.key()
            else:
                box.kv[key] = prior[key] = self.value()
            return self.kv_get(box, key)
        if kind == "kv_fuzzy":
            return self.kv_fuzzy(box, prior)
        out: Msgs = getattr(self, kind)(box)
        return out

    def _distractors(self, k: int) -> list[dict[str, Any]]:
        avoid = {t.name for t in self.synth}
        return [S.draw_tool(self.rng, self.heldout, avoid).declaration() for _ in range(k)]

    def _declare(self, kind: str, used: list[str]) -> list[dict[str, Any]] | None:
        """The tools declared for a conversation that calls ``used`` (None: no block at all)."""
        r = self.rng
        lmos = list(lmos_declarations())
        names = {d["name"] for d in lmos}
        synth = [t.declaration() for t in self.synth if t.name in used]
        if not used and kind in ("chat", "repeat", "undeclared") and r.random() < 0.4:
            return None
        if kind == "undeclared":
            lmos = [d for d in lmos if d["name"] != "calc"]
            picked = _unique(r.sample(lmos, r.randint(0, 3)) + self._distractors(r.randint(0, 2)))
            r.shuffle(picked)
            return picked or None
        if not synth and set(used) <= set(STANDARD) and r.random() < 0.35:
            return [d for d in lmos if d["name"] in STANDARD]
        if not synth and set(used) <= names and r.random() < 0.25:
            return lmos
        needed = [d for d in lmos if d["name"] in used] + synth
        others = [d for d in lmos if d["name"] not in used]
        extra = r.sample(others, min(len(others), r.choice([0, 1, 2, 3, 4])))
        extra += self._distractors(r.choice([0, 0, 1, 1, 2, 3]))
        picked = _unique(needed + extra)[:max(MAX_DECLARED, len(needed))]
        r.shuffle(picked)
        return picked or None

    def conversation(self, kind: str | None = None) -> Conversation:
        r = self.rng
        kind = kind or r.choices(self.kinds, self.weights)[0]
        if kind in self.apps:
            conv = self.apps[kind](random.Random(r.getrandbits(64)), "heldout" if self.heldout else "train")
            conv.meta.setdefault("kind", kind)
            return conv
        self.used, self.tools_used, self.synth, self.fixed, self.expect = [], [], [], {}, ""
        prior = {self.key(): self.value() for _ in range(r.choice([0, 0, 1, 2]))}
        now = self.now()
        box = ToolBox(prior, now)
        msgs: Msgs = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
        if kind not in ("undeclared", "followup") and r.random() < 0.25:
            msgs += self._filler(box)
        msgs += self._main(kind, box, prior)
        tools = self._declare(kind, called(msgs))
        meta: dict[str, Any] = {"kind": kind, "kv": prior, "now": now, "templates": list(self.used)}
        if self.fixed:
            meta["fixed"] = dict(self.fixed)
        if self.expect:
            meta["expect"] = self.expect
        return Conversation(messages=msgs, meta=meta, tools=tools)

    def take(self, n: int) -> Iterator[Conversation]:
        for _ in range(n):
            yield self.conversation()


def _chunk(job: tuple[int, int, int, str]) -> list[Conversation]:
    seed, index, count, split = job
    return list(V2Generator(seed * 1_000_003 + index, split).take(count))


def generate(n: int, seed: int = 0, split: str = "train", workers: int | None = None) -> list[Conversation]:
    """``n`` v2 conversations from ``seed``: the same list for any ``workers`` (default: all CPUs)."""
    jobs = [(seed, i, min(CHUNK, n - start), split) for i, start in enumerate(range(0, n, CHUNK))]
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    if workers == 1:
        return [c for job in jobs for c in _chunk(job)]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [c for part in pool.imap(_chunk, jobs) for c in part]
