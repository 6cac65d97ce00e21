"""Tools (syscalls 60-61): named functions with a JSON schema that agents call.

A tool call is one syscall, ``tool_call(name, args)``, so the dispatcher's
capability check covers it: calling tool ``calc`` needs capability
``tool:calc`` (an app's manifest lists its tools; a plain ``tool`` grants all),
and the tool's own capabilities (``net:host``, ``fs.read`` ...) are checked
against the caller too.  Arguments are validated against the tool's schema by
a msgspec Struct generated from it, so a model's malformed call is a clear
EINVAL, never an exception inside the tool.  The declaration itself (name,
description, schema) is checked when the tool is made, by the chat format's
own rules (:func:`lmos.chatformat.validate_tools`), because it is what the
agent declares to the model: a bad one is refused with EINVAL naming the wrong
field (``tool weather: parameters.properties.city.type: unknown type 'strng'``).  The call runs inside
``kernel.blocking``: the process is BLOCKED while the tool works, and the KV
policy may keep, swap or drop its context meanwhile.

The registry type lives here; each kernel's registry is a field of its syscall
layer (``Syscalls.tools``).  The tools themselves are userland
(``lmos.userland.tools``) and register at boot.

A tool whose results are others' data (``Tool.taints``: the web, sandboxed
code) taints its caller on every call; tools that read through syscalls
(``fs_read``, ``search``, ``kv_get``) taint it by the syscalls' own rules.

A tool gets a :class:`ToolCtx`, never the kernel or the calling process: it can
make syscalls *as* the caller (``call``), read who the caller is (``uid``,
``pid``, ``has``), and mark it tainted or ask the user to confirm, each through
a callable this module builds.  So a tool can do nothing the syscall table
would not let the caller do itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec
from msgspec import Meta

from lmos.chatformat import validate_tools
from lmos.errors import Errno, SyscallError
from lmos.syscalls import confirm
from lmos.syscalls.audit import host_audit
from lmos.syscalls.caps import grants
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Name, Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

MAX_RESULT_CHARS = 16_000


@dataclass(frozen=True, slots=True)
class ToolCtx:
    """What a tool sees of its caller: identity, capabilities, and syscalls made *as* the caller.

    The private callables are closures the syscall layer builds for one call
    (see :func:`tool_ctx`); a tool never receives the kernel or the process.
    """

    uid: int
    pid: int
    caps: frozenset[str]  # a frozen copy of the caller's capabilities
    _call: Callable[[str, dict[str, Any]], Awaitable[Any]]
    _taint: Callable[[], None]
    _confirm: Callable[[str, str, str], Awaitable[None]]

    async def call(self, name: str, /, **payload: Any) -> Any:
        """A nested syscall by the calling process (capabilities, confirmation and audit apply).

        ``name`` is positional-only, so payloads may have a ``name`` field
        (``ctx.call("mem_write", name="goal", value="...")``).
        """
        return await self._call(name, payload)

    def has(self, cap: str) -> bool:
        """Whether the caller holds capability ``cap`` (wildcards and path scopes apply)."""
        return grants(self.caps, cap)

    def taint(self) -> None:
        """Mark the caller as having read untrusted content (the tool fetched or read someone else's)."""
        self._taint()

    async def confirm(self, action: str, target: str, detail: str = "") -> None:
        """Ask the user to approve an irreversible action; ECANCELED if declined."""
        await self._confirm(action, target, detail)

    async def report_violation(self, detail: str) -> None:
        """Audit a sandbox guard's refusal during this call (a sandboxed user tool's host side).

        Only code in the kernel's process reaches this; a sandboxed program's own
        ``audit`` calls stay in its ``app.`` namespace (:mod:`lmos.syscalls.audit`).
        """
        with host_audit():
            await self._call("audit", {"event": "sandbox_violation", "detail": detail})


def tool_ctx(ctx: Ctx) -> ToolCtx:
    """The :class:`ToolCtx` of one ``tool_call`` made by ``ctx.proc``."""
    p, table = ctx.proc, ctx.sys

    async def call(name: str, payload: dict[str, Any]) -> Any:
        return await table.call(p.pid, name, payload)

    async def ask(action: str, target: str, detail: str) -> None:
        await confirm.require(ctx, action, target, detail)

    return ToolCtx(uid=p.uid, pid=p.pid, caps=frozenset(p.caps), _call=call,
                   _taint=lambda: confirm.taint(p), _confirm=ask)


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
    # the result is content someone else wrote (a web page, another service, sandboxed code):
    # every call taints the caller, whatever the tool itself remembers to do
    taints: bool = False
    args_type: type[msgspec.Struct] = field(init=False)

    def __post_init__(self) -> None:
        check_declaration(self.name, self.description, self.parameters)
        self.args_type = schema_struct(self.name, self.parameters)

    def validate(self, args: Any) -> dict[str, Any]:
        try:
            obj = msgspec.convert(args, self.args_type)
        except msgspec.ValidationError as exc:
            raise SyscallError(Errno.EINVAL, f"{self.name}: bad arguments: {exc}") from None
        out: dict[str, Any] = msgspec.to_builtins(obj)
        return out


def check_declaration(name: str, description: str, parameters: dict[str, Any]) -> None:
    """EINVAL naming the wrong field if the declaration is not one the chat format accepts."""
    try:
        validate_tools([{"name": name, "description": description, "parameters": parameters}])
    except SyscallError as exc:
        where = exc.message.removeprefix("tools[0].")
        raise SyscallError(Errno.EINVAL, f"tool {name}: {where}") from None


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
    """Name -> tool, one per kernel (``Syscalls.tools``)."""

    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        self.tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        t = self.tools.get(name)
        if t is None:
            raise SyscallError(Errno.ENOENT, f"no such tool: {name}")
        return t


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
    tool = ctx.sys.tools.get(req.name)
    missing = [c for c in tool.caps if not grants(p.caps, c)]
    if missing:
        raise SyscallError(Errno.EPERM, f"tool {tool.name} needs capability {missing[0]!r}")
    args = tool.validate(req.args)
    async with ctx.kernel.blocking(p, "tool:" + tool.name):
        try:
            with anyio.fail_after(tool.timeout):
                text = await tool.fn(tool_ctx(ctx), args)
        except TimeoutError:
            raise SyscallError(
                Errno.ETIMEDOUT, f"tool {tool.name} took longer than {tool.timeout:g}s"
            ) from None
        finally:
            if tool.taints:  # an error message can carry the other side's words as well as a result
                confirm.taint(p)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + "...[truncated]"
    return ToolReply(name=tool.name, text=text, tainted=p.tainted)


@syscall(61, "tool_list", ToolList, ToolListReply)
async def sys_tool_list(ctx: Ctx, req: ToolList) -> ToolListReply:
    """The tools the caller may call, with their argument schemas."""
    tools = ctx.sys.tools.tools.values()
    return ToolListReply(
        tools=[
            ToolInfo(name=t.name, description=t.description, parameters=t.parameters)
            for t in sorted(tools, key=lambda t: t.name)
            if grants(ctx.proc.caps, f"tool:{t.name}")
        ]
    )
