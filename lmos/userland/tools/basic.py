"""The small built-in tools: ``calc``, ``clock``, and the per-user ``kv_set``/``kv_get`` store.

They are the tools the built-in model was trained on, so their result text is
exactly what the training corpus showed: ``calc`` answers with
:func:`lmos.userland.tools.calc.format_result`, ``clock`` with a UTC timestamp.
The kv tools are thin wrappers over the ``kv_set``/``kv_get`` syscalls made as
the calling process, so they need its ``kv`` capability and are audited.
"""

from __future__ import annotations

import time
from typing import Any

from lmos.syscalls.tool import Tool, ToolCtx
from lmos.userland.tools.calc import evaluate, format_result

KEY = {"type": "string", "minLength": 1, "maxLength": 256}


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
    """The value under a key; a missing key is the syscall's ENOENT, which the model sees."""
    r = await ctx.call("kv_get", key=args["key"])
    return str(r.value)


TOOLS = [
    Tool(
        "calc",
        "Evaluate an arithmetic expression exactly.",
        {
            "type": "object",
            "properties": {"expr": {"type": "string", "maxLength": 200}},
            "required": ["expr"],
        },
        calc,
    ),
    Tool("clock", "The current date and time (UTC).", {"type": "object", "properties": {}}, clock),
    Tool(
        "kv_set",
        "Store a value under a key (persistent, per user).",
        {
            "type": "object",
            "properties": {"key": KEY, "value": {"type": "string", "maxLength": 65536}},
            "required": ["key", "value"],
        },
        kv_set,
        caps=("kv",),
    ),
    Tool(
        "kv_get",
        "Read the value stored under a key.",
        {"type": "object", "properties": {"key": KEY}, "required": ["key"]},
        kv_get,
        caps=("kv",),
    ),
]
