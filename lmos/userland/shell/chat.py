"""``chat``: a conversation with the assistant app that remembers what was said.

Each turn is an ordinary process of the ``assistant`` app (so its grants,
quotas, streaming, Ctrl-C and confirmations work as for any ``run``), and the
shell keeps the conversation: every turn after the first is spawned with the
earlier turns (``--history-json``, see :func:`lmos.userland.manifest.conversation`),
the user's messages, the tool calls the assistant made with their results, and
its answers.  So "what is 12 * 7?" then "now multiply that by 3" has something
to refer to.  Only the latest turns are passed on (``MAX_TURNS`` and
``MAX_HISTORY_CHARS``), so a long chat does not outgrow the model's window.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lmos.userland.shell.jobs import cmd_run, foreground

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
chat                 talk with the assistant app; it remembers the conversation (an empty line ends it)
chat MESSAGE         one question to the assistant, on a fresh conversation"""

APP = "assistant"
# lmos.userland.manifest.HISTORY_FLAG (not imported: a front end's shell stays light to start)
HISTORY_FLAG = "--history-json"
MAX_TURNS = 8  # earlier exchanges passed on to the next turn
MAX_HISTORY_CHARS = 2000  # and at most this much of them (the built-in model's window is 1024 tokens)


def turn_messages(text: str, result: Any) -> list[dict[str, Any]]:
    """One exchange as chat messages: the user's ``text``, each successful tool call and its result,
    then the answer.  Failed calls are left out: the next turn needs what was found, not the stumbles."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": text}]
    if not isinstance(result, dict):
        return [*msgs, {"role": "assistant", "content": "" if result is None else str(result)}]
    for c in result.get("calls") or []:
        if not (isinstance(c, dict) and c.get("ok") and c.get("tool")):
            continue
        msgs.append({"role": "assistant", "content": "",
                     "tool_calls": [{"type": "function",
                                     "function": {"name": c["tool"], "arguments": c.get("args") or {}}}]})
        msgs.append({"role": "tool", "name": c["tool"], "content": str(c.get("result", ""))})
    msgs.append({"role": "assistant", "content": str(result.get("text") or "")})
    return msgs


def history_argv(turns: list[list[dict[str, Any]]]) -> list[str]:
    """The ``--history-json JSON`` arguments for the latest turns that fit (none for a first turn)."""
    kept: list[list[dict[str, Any]]] = []
    size = 0
    for turn in reversed(turns[-MAX_TURNS:]):
        n = len(json.dumps(turn, ensure_ascii=False))
        if kept and size + n > MAX_HISTORY_CHARS:
            break
        kept.insert(0, turn)
        size += n
    if not kept:
        return []
    return [HISTORY_FLAG, json.dumps([m for t in kept for m in t], ensure_ascii=False)]


async def cmd_chat(sh: Shell, args: list[str], line: str) -> None:
    if args:
        await cmd_run(sh, [APP, " ".join(args)], line)
        return
    turns: list[list[dict[str, Any]]] = []
    while True:
        text = await sh.read_more("you> ")
        if text is None or not text.strip():
            break
        pid = await sh.sys.spawn(APP, [*history_argv(turns), text], stream=True)
        w = await foreground(sh, pid, APP)
        if w.exit_status == 0:  # a failed or interrupted turn is not part of the conversation
            turns.append(turn_messages(text, w.result))


COMMANDS: dict[str, Command] = {"chat": cmd_chat}
