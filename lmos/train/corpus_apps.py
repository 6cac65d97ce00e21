"""The seed apps' tasks for the built-in model v2: one generator per task, in one registry.

``APP_TASKS[name](rng, split)`` draws one :class:`~lmos.train.data.Conversation`
of that task from ``rng`` (``split`` is ``"train"`` or ``"heldout"``), built
with :mod:`lmos.taskprompts`, the exact prompts the apps send, so the model
trains on what it will be asked:

* ``support``: FAQ passages + question -> the answering passage restated, or the hand-off;
* ``sentiment``: a financial headline -> ``positive`` / ``negative`` / ``neutral``;
* ``recommend``: profile + ranked items -> item [1] named and justified by its own attribute;
* ``team``: the planner's subtasks, or the combiner's calc call and final number;
* ``giveup``: a declared tool keeps failing -> a short, honest answer.

Each conversation records in ``meta``: ``kind``, ``families`` (every
``tag:family`` of a split list it used, so tests can check the splits are
disjoint) and the task's answer key, which an evaluator scores against:

* support: ``covered`` (bool), ``key`` (the answering passage's key sentence, or
  None: the answer must then be ``SUPPORT_HANDOFF``), ``fact``;
* sentiment: ``label``;
* recommend: ``top`` (item [1]'s title), ``attributes`` (its tags, then its description);
* team: ``request``, ``stage`` (``plan`` | ``combine``), ``subtasks`` (calc expressions),
  ``results``, ``combine`` (``add`` | ``mul`` | ``sub`` | ``avg`` | ``dbl`` | ``none``), ``final``
  (the combined number as calc formats it; None when the parts are only listed or a worker failed);
* giveup: ``tool``, ``outcome`` (``transient`` | ``permanent`` | ``recovered``).

``Conversation.tools`` holds the declarations to render with
(``lmos.chatformat.render(conv.messages, tools=conv.tools)``) when the
conversation declares tools (team's combiner, giveup).  How each list is
split: :mod:`lmos.train.corpus_apps_split`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lmos.train.corpus_giveup import giveup
from lmos.train.corpus_recommend import recommend
from lmos.train.corpus_sentiment import sentiment
from lmos.train.corpus_support import support
from lmos.train.corpus_team import team
from lmos.train.data import Conversation

AppTask = Callable[[random.Random, str], Conversation]
APP_TASKS: dict[str, AppTask] = {
    "support": support,
    "sentiment": sentiment,
    "recommend": recommend,
    "team": team,
    "giveup": giveup,
}


def generate_apps(n: int, seed: int = 0, split: str = "train", task: str | None = None) -> list[Conversation]:
    """``n`` conversations (of one task, or of all tasks in turn); same arguments, same list."""
    rng = random.Random(seed)
    names = [task] if task else list(APP_TASKS)
    return [APP_TASKS[names[i % len(names)]](rng, split) for i in range(n)]
