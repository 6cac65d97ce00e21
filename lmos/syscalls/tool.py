"""Tools (syscalls 60-61): named functions with a JSON schema that agents call.

A tool call is one syscall, ``tool_call(name, args)``, so the dispatcher's
capability check covers it: calling tool ``calc`` needs capability
``tool:calc`` (an app's manifest lists its tools; a plain ``tool`` grants all),
and the tool's own capabilities (``net:host``, ``fs.read`` ...) are checked
against the caller too.  Arguments are validated against the tool's schema by
a msgspec Struct generated from it, so a model's malformed call is a clear
EINVAL, never an exception inside the tool.  The call runs inside
``kernel.blocking``: the process is BLOCKED while the tool works, and the KV
policy may keep, swap or drop its context meanwhile.

The registry lives here (one per kernel); the tools themselves are userland
(``lmos.userland.tools``) and register at boot.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec
from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.syscalls import confirm
from lmos.syscalls.caps import grants
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Name, Req, Resp

if TYPE_CHECKING:
    from lmos.kernel.kernel import KernelCore
    from lmos.kernel.process import Process
    from lmos.syscalls.table import Ctx

MAX_RESULT_CHARS = 16_000


@dataclass(slots=True)
class ToolCtx:
    """What a tool sees: the calling process, and syscalls made *as* that process."""

    ctx: Ctx
    proc: Process

    @property
    def uid(self) -> int:
        return self.proc.uid

    @property
    def kernel(self) -> KernelCore:
        return self.ctx.kernel

    async def call(self, name: str, **payload: Any) -> Any:
        """A nested syscall by the calling process (capabilities and confirmation apply)."""
        return await self.ctx.sys.call(self.proc.pid, name, payload)

    def has(self, cap: str) -> bool:
        return grants(self.proc.caps, cap)

    def taint(self) -> None:
        confirm.taint(self.proc)

    async def confirm(self, action: str, target: str, detail: str = "") -> None:
        await confirm.require(self.ctx.kernel, self.proc, action, target, detail)


ToolFn = Callable[[ToolCtx, dict[str, Any]], Awaitable[str]]


@dataclass(slots=True)
class Tool:
    """A tool: function, JSON schema of its arguments, and what it needs."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema (an object schema, subset: see schema_struct)
    fn: ToolFn
    caps: tuple[str, ...] = ()  # capabilities the caller must also hold
    timeout: float = 30.0
    args_type: type[msgspec.Struct] = field(init=False)

    def __post_init__(self) -> None:
        self.args_type = schema_struct(self.name, self.parameters)

    def validate(self, args: Any) -> dict[str, Any]:
        try:
            obj = msgspec.convert(args, self.args_type)
        except msgspec.ValidationError as exc:
            raise SyscallError(Errno.EINVAL, f"{self.name}: bad arguments: {exc}") from None
        out: dict[str, Any] = msgspec.to_builtins(obj)
        return out


_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "null": None}


def _type_of(schema: dict[str, Any], where: str) -> Any:
    kind = schema.get("type", "string")
    if "enum" in schema:
        from typing import Literal

        return Literal[tuple(schema["enum"])]
    if kind in _SCALARS:
        t = _SCALARS[kind]
        meta: dict[str, Any] = {}
        for src, dst in (
            ("maxLength", "max_length"),
            ("minLength", "min_length"),
            ("minimum", "ge"),
            ("maximum", "le"),
            ("pattern", "pattern"),
        ):
            if src in schema:
                meta[dst] = schema[src]
        return Annotated[t, Meta(**meta)] if meta else t
    if kind == "array":
        item = _type_of(schema.get("items", {}), where + "[]") if "items" in schema else Any
        seq: Any = list[item]  # type: ignore[valid-type]  # built at run time from the schema
        return Annotated[seq, Meta(max_length=schema["maxItems"])] if "maxItems" in schema else seq
    if kind == "object":
        return dict[str, Any]
    raise SyscallError(Errno.EINVAL, f"unsupported schema type {kind!r} at {where}")


def schema_struct(name: str, schema: dict[str, Any]) -> type[msgspec.Struct]:
    """A msgspec Struct type validating the JSON object ``schema`` describes.

    Supported subset: ``type`` (string, integer, number, boolean, array,
    object), ``properties``, ``required``, ``enum``, ``items``, ``minLength``,
    ``maxLength``, ``minimum``, ``maximum``, ``pattern``, ``maxItems``.  Unknown
    properties are refused unless ``additionalProperties`` is true.
    """
    if schema.get("type", "object") != "object":
        raise SyscallError(Errno.EINVAL, f"tool {name}: the parameters schema must be an object")
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for key, sub in props.items():
        t = _type_of(sub, f"{name}.{key}")
        fields.append((key, t) if key in required else (key, t | None, None))
    fields.sort(key=len)  # required (no default) first
    forbid = not schema.get("additionalProperties", False)
    return msgspec.defstruct(f"{name}_args", fields, kw_only=True, forbid_unknown_fields=forbid)


class ToolRegistry:
    """Name -> tool, one per kernel."""

    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        self.tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        t = self.tools.get(name)
        if t is None:
            raise SyscallError(Errno.ENOENT, f"no such tool: {name}")
        return t


_REGISTRIES: weakref.WeakKeyDictionary[KernelCore, ToolRegistry] = weakref.WeakKeyDictionary()


def registry(core: KernelCore) -> ToolRegistry:
    reg = _REGISTRIES.get(core)
    if reg is None:
        reg = _REGISTRIES[core] = ToolRegistry()
    return reg


def install(core: KernelCore, reg: ToolRegistry) -> None:
    """Make ``reg`` the tool registry of ``core`` (the facade does this at boot)."""
    _REGISTRIES[core] = reg


# -- the syscalls -----------------------------------------------------------------
class ToolCall(Req):
    name: Name
    args: dict[str, Any] = msgspec.field(default_factory=dict)


class ToolReply(Resp):
    name: str
    text: str
    tainted: bool = False  # the caller is tainted after this call


class ToolList(Req):
    pass


class ToolInfo(Resp):
    name: str
    description: str
    parameters: dict[str, Any]


class ToolListReply(Resp):
    tools: list[ToolInfo]


def _tool_cap(r: ToolCall) -> str:
    return f"tool:{r.name}"


@syscall(60, "tool_call", ToolCall, ToolReply, cap=_tool_cap, blocking=True)
async def sys_tool_call(ctx: Ctx, req: ToolCall) -> ToolReply:
    """Run tool ``name`` with ``args`` (validated against its schema); the caller is BLOCKED meanwhile."""
    p = ctx.proc
    tool = registry(ctx.kernel).get(req.name)
    missing = [c for c in tool.caps if not grants(p.caps, c)]
    if missing:
        raise SyscallError(Errno.EPERM, f"tool {tool.name} needs capability {missing[0]!r}")
    args = tool.validate(req.args)
    async with ctx.kernel.blocking(p, "tool:" + tool.name):
        try:
            with anyio.fail_after(tool.timeout):
                text = await tool.fn(ToolCtx(ctx, p), args)
        except TimeoutError:
            raise SyscallError(
                Errno.ETIMEDOUT, f"tool {tool.name} took longer than {tool.timeout:g}s"
            ) from None
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + "...[truncated]"
    return ToolReply(name=tool.name, text=text, tainted=p.tainted)


@syscall(61, "tool_list", ToolList, ToolListReply)
async def sys_tool_list(ctx: Ctx, req: ToolList) -> ToolListReply:
    """The tools the caller may call, with their argument schemas."""
    tools = registry(ctx.kernel).tools.values()
    return ToolListReply(
        tools=[
            ToolInfo(name=t.name, description=t.description, parameters=t.parameters)
            for t in sorted(tools, key=lambda t: t.name)
            if grants(ctx.proc.caps, f"tool:{t.name}")
        ]
    )
