"""The small built-in tools: ``calc``, ``clock``, and the per-user ``kv_set``/``kv_get`` store.

They are the tools the built-in model was trained on, so their result text is
exactly what the training corpus showed: ``calc`` answers with
:func:`lmos.userland.tools.calc.format_result`, ``clock`` with a UTC timestamp.
The kv tools are thin wrappers over the ``kv_set``/``kv_get`` syscalls made as
the calling process, so they need its ``kv`` capability and are audited.

``kv_get`` forgives a key recalled loosely: with no exact match it answers from
the closest key the user stored and says which (:mod:`.kvmatch`).

Each tool's description and argument schema are what the agent declares to the
model in the system turn (``lmos.chatformat.tool_block``), so they are written
for the model: short (the block costs the built-in model's 1,024-token window
about 30 tokens a tool), with an example where the argument has a syntax.
:func:`declarations` gives them as plain data for the training corpus.
"""

from __future__ import annotations

import time
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.syscalls.tool import Tool, ToolCtx
from lmos.userland.tools.calc import evaluate, format_result
from lmos.userland.tools.kvmatch import closest_key, stored_under

KEY = {"type": "string", "minLength": 1, "maxLength": 256, "description": "the name of the note"}
MAX_KEYS_SCANNED = 10_000  # a user's keys (the store's per-user limit): all of them are candidates


async def calc(ctx: ToolCtx, args: dict[str, Any]) -> str:
    """Arithmetic, safely (no eval): the model is bad at it, the tool is exact."""
    return format_result(evaluate(args["expr"]))


async def clock(ctx: ToolCtx, args: dict[str, Any]) -> str:
    """The current time, in UTC, so the model never has to guess the date."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


async def kv_set(ctx: ToolCtx, args: dict[str, Any]) -> str:
    """Remember a value across conversations (per user, persistent)."""
    await ctx.call("kv_set", key=args["key"], value=args["value"])
    return "ok"


async def kv_get(ctx: ToolCtx, args: dict[str, Any]) -> str:
    """The value under a key, else under the closest stored key (named in the result).

    Both lookups are the caller's own ``kv_list``/``kv_get`` syscalls; when
    nothing is close the exact lookup's ENOENT is what the model sees.
    """
    key = args["key"]
    try:
        return str((await ctx.call("kv_get", key=key)).value)
    except SyscallError as exc:
        if exc.errno != Errno.ENOENT:
            raise
        missing = exc
    keys = [str(k) for k in (await ctx.call("kv_list", limit=MAX_KEYS_SCANNED)).keys]
    near = closest_key(key, keys)
    if near is None:
        raise missing
    try:
        value = str((await ctx.call("kv_get", key=near)).value)
    except SyscallError as exc:
        if exc.errno == Errno.ENOENT:  # deleted meanwhile
            raise missing from None
        raise
    return stored_under(value, near)


TOOLS = [
    Tool(
        "calc",
        "Exact arithmetic, e.g. 15 / 100 * 200 or sqrt(144).",
        {
            "type": "object",
            "properties": {
                "expr": {"type": "string", "maxLength": 200,
                         "description": "the expression, in Python syntax"},
            },
            "required": ["expr"],
        },
        calc,
    ),
    Tool("clock", "The current date and time.", {"type": "object", "properties": {}}, clock),
    Tool(
        "kv_set",
        "Remember a value under a key.",
        {
            "type": "object",
            "properties": {"key": KEY, "value": {"type": "string", "maxLength": 65536,
                                                 "description": "what to remember"}},
            "required": ["key", "value"],
        },
        kv_set,
        caps=("kv",),
    ),
    Tool(
        "kv_get",
        "Recall the value stored under a key.",
        {"type": "object", "properties": {"key": KEY}, "required": ["key"]},
        kv_get,
        caps=("kv",),
    ),
]


def declarations() -> list[dict[str, Any]]:
    """The built-in tools' declarations ``{name, description, parameters}``: what the agent
    declares for them, for the corpus to render the same system turn."""
    return [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in TOOLS]
