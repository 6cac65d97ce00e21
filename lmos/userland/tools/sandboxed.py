"""User-defined tools: Python source that runs in the sandbox, never in the kernel.

The source sees the tool's validated arguments as the global ``args`` and
returns its answer by assigning ``result`` (or printing).  Any syscall it makes
goes through the kernel's dispatch *as the calling process*, so a user tool
can do no more than the agent that calls it.
"""

from __future__ import annotations

from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.syscalls.tool import Tool, ToolCtx
from lmos.userland.sandbox import Limits, execute, violations


def code_tool(
    name: str,
    description: str,
    parameters: dict[str, Any],
    source: str,
    *,
    limits: Limits | None = None,
    caps: tuple[str, ...] = (),
) -> Tool:
    """A :class:`Tool` whose body is sandboxed ``source``."""

    async def run(ctx: ToolCtx, args: dict[str, Any]) -> str:
        async def handler(call: str, payload: dict[str, Any]) -> Any:
            return await ctx.call(call, **payload)

        r = await execute(source, limits=limits, syscalls=handler, inputs={"args": args}, owner=ctx.uid)
        for bad in violations(r):  # every guard refusal, even one the code caught
            await ctx.report_violation(f"tool {name}: {bad}")
        if not r.ok:
            raise SyscallError(Errno.EIO, f"tool {name} failed: {r.error}")
        value = r.namespace.get("result")
        return str(value) if value is not None else r.stdout.rstrip("\n")

    # what sandboxed code returns is its author's choice, not the caller's: it taints the caller
    return Tool(name, description, parameters, run, caps=caps, taints=True)
