"""App manifests: what an app is, what it runs, and what it may do.

A manifest is a TOML file::

    name = "calc-agent"
    version = "1.0"
    description = "Answers arithmetic questions with the calc tool."
    system = "You are lmos, a helpful assistant with tools."
    tools = ["calc"]
    capabilities = ["llm"]
    [entry]
    kind = "agent"            # the built-in agent loop with `system` as its prompt
    [quotas]
    max_tokens = 4096
    max_children = 0
    max_wall_seconds = 120

``entry.kind`` is ``agent``, ``code`` (the app's Python files run in the
sandbox, whose syscalls are made as the app's process; see
:mod:`lmos.userland.codeapp`) or ``python`` (``module:function``, a trusted
in-process program; only the operator may install one, with ``--trusted``).
Loading validates strictly, so a typo is a clear error at install time rather
than a surprise at run time.  Listing a tool grants capability ``tool:NAME``.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import msgspec
from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.syscalls.table import AppSpec, Main

AppName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9._-]{0,63}$")]
PLAIN_CAPS = {"llm", "spawn", "ipc", "mem", "proc", "tool", "fs.read", "fs.write", "kv"}
SCOPED_CAPS = {"fs.read", "fs.write", "net", "tool"}


class Entry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    kind: Literal["agent", "code", "python"] = "agent"
    source: str | None = None  # code: a file next to the manifest
    code: str | None = None  # code: inline source
    function: str | None = None  # python: "package.module:function"


class Quotas(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_children: Annotated[int, Meta(ge=0, le=4096)] | None = None
    max_wall_seconds: Annotated[float, Meta(gt=0, le=86400)] | None = None


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: AppName
    version: Annotated[str, Meta(min_length=1, max_length=32)] = "0.1"
    description: Annotated[str, Meta(max_length=1000)] = ""
    entry: Entry = msgspec.field(default_factory=Entry)
    model: str | None = None
    system: Annotated[str, Meta(max_length=20_000)] = ""
    tools: list[Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]] = []
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["llm"])
    quotas: Quotas = msgspec.field(default_factory=Quotas)
    max_steps: Annotated[int, Meta(ge=1, le=100)] = 8
    temperature: Annotated[float, Meta(ge=0.0, le=10.0)] | None = None  # None: the model's default
    base_dir: str = ""  # set by the loader: where `entry.source` is looked up


def check_cap(cap: str) -> None:
    kind, sep, arg = cap.partition(":")
    if not sep and kind in PLAIN_CAPS:
        return
    if sep and kind in SCOPED_CAPS and arg:
        if kind.startswith("fs.") and not arg.startswith("/"):
            raise SyscallError(Errno.EINVAL, f"capability {cap!r}: the path must be absolute")
        return
    raise SyscallError(Errno.EINVAL, f"unknown capability {cap!r}")


def parse_manifest(text: str, *, base_dir: str = "", origin: str = "manifest") -> Manifest:
    """Validate TOML ``text`` as a manifest; EINVAL with the reason otherwise."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SyscallError(Errno.EINVAL, f"{origin}: not valid TOML: {exc}") from None
    try:
        m = msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        raise SyscallError(Errno.EINVAL, f"{origin}: {exc}") from None
    for cap in m.capabilities:
        check_cap(cap)
    e = m.entry
    if e.kind == "code" and (e.source is None) == (e.code is None):
        raise SyscallError(Errno.EINVAL, f"{origin}: a code entry needs exactly one of source or code")
    if e.kind == "python" and (not e.function or ":" not in e.function):
        raise SyscallError(Errno.EINVAL, f"{origin}: a python entry needs function = 'module:function'")
    if e.kind == "code" and e.source and (e.source.startswith("/") or ".." in Path(e.source).parts):
        raise SyscallError(Errno.EINVAL, f"{origin}: entry.source must be a file next to the manifest")
    return msgspec.structs.replace(m, base_dir=base_dir)


def load_manifest(path: str | Path) -> Manifest:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SyscallError(Errno.ENOENT, f"cannot read manifest {p}: {exc.strerror}") from None
    return parse_manifest(text, base_dir=str(p.parent), origin=p.name)


def asked_caps(m: Manifest) -> frozenset[str]:
    """What ``m`` asks for: its capabilities, plus ``tool:NAME`` for each tool it lists."""
    return frozenset(m.capabilities) | {f"tool:{t}" for t in m.tools}


def app_spec(m: Manifest, *, trusted: bool = False, main: Main | None = None,
             caps: frozenset[str] | None = None, extra: dict[str, Any] | None = None) -> AppSpec:
    """The :class:`AppSpec` that runs manifest ``m``.

    ``main`` replaces the entry built from the manifest (the app store builds
    code entries from the files it holds), ``caps`` the capabilities asked for
    (the app store passes what was granted), and ``extra`` adds to the spec's
    extra data (version, hash, origin).
    """
    main = main if main is not None else _entry_main(m, trusted)
    q = m.quotas
    if q.max_wall_seconds is not None:
        main = _with_deadline(main, q.max_wall_seconds, m.name)
    return AppSpec(
        m.name,
        main,
        asked_caps(m) if caps is None else caps,
        model=m.model,
        description=m.description,
        token_quota=q.max_tokens,
        max_children=q.max_children,
        wall_seconds=q.max_wall_seconds,  # the kernel's deadline: children inherit it
        extra={"manifest": m, "tools": list(m.tools), "version": m.version, "kind": m.entry.kind,
               **(extra or {})},
    )


def _entry_main(m: Manifest, trusted: bool) -> Main:
    e = m.entry
    if e.kind == "agent":
        return _agent_main(m)
    if e.kind == "code":
        from lmos.userland.codeapp import code_main

        return code_main(m, {e.source: _read_source(m)} if e.source else {})
    if not trusted:
        raise SyscallError(
            Errno.EPERM, f"{m.name}: only built-in and operator apps may run Python in-process"
        )
    mod, _, fn = (e.function or "").partition(":")
    try:
        target = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as exc:
        raise SyscallError(Errno.ENOENT, f"{m.name}: entry {e.function}: {exc}") from None
    if not callable(target):
        raise SyscallError(Errno.EINVAL, f"{m.name}: entry {e.function} is not callable")
    return _bind(target, m)


def _bind(target: Any, m: Manifest) -> Main:
    async def main(sys: Any, argv: list[str]) -> Any:
        return await target(sys, argv, m)

    return main


def _read_source(m: Manifest) -> str:
    path = Path(m.base_dir or ".") / (m.entry.source or "")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SyscallError(Errno.ENOENT, f"{m.name}: cannot read {path}: {exc.strerror}") from None


HISTORY_FLAG = "--history-json"  # argv: --history-json JSON MESSAGE...: a conversation goes on


class _Function(msgspec.Struct):
    name: str
    arguments: dict[str, Any] = {}


class _ToolCall(msgspec.Struct, omit_defaults=True):
    function: _Function
    type: str = "function"


class _Turn(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    role: Literal["user", "assistant", "tool"]  # never "system": the app's own prompt stays in charge
    content: str = ""
    tool_calls: list[_ToolCall] | None = None
    name: str | None = None


def conversation(argv: list[str]) -> tuple[list[dict[str, Any]], str]:
    """An agent app's earlier turns and its new message, from its argv.

    Plain words are one new message.  ``--history-json JSON MESSAGE...`` puts the
    turns of a conversation before it (a JSON list of chat messages: user,
    assistant, with OpenAI-style ``tool_calls``, and tool results), so that a
    follow-up ("now multiply that by 3") sees what it follows: lmosh's ``chat``
    keeps the conversation this way, one process per turn."""
    if not argv or argv[0] != HISTORY_FLAG:
        return [], " ".join(argv)
    if len(argv) < 3:
        raise SyscallError(Errno.EINVAL, f"usage: {HISTORY_FLAG} JSON MESSAGE...")
    try:
        turns = msgspec.json.decode(argv[1], type=list[_Turn])
    except msgspec.DecodeError as exc:
        raise SyscallError(Errno.EINVAL, f"{HISTORY_FLAG}: {exc}") from None
    return [msgspec.to_builtins(t) for t in turns], " ".join(argv[2:])


def _agent_main(m: Manifest) -> Main:
    async def main(sys: Any, argv: list[str]) -> Any:
        from lmos.userland.agent import run_agent

        history, text = conversation(argv)
        messages = [{"role": "system", "content": m.system}] if m.system else []
        messages += [*history, {"role": "user", "content": text}]
        # the loop is the whole program: it checkpoints each turn (recovery starts at the last one)
        r = await run_agent(
            sys, messages, tools=list(m.tools), max_steps=m.max_steps, temperature=m.temperature,
            checkpoint=True,
        )
        return msgspec.to_builtins(r)

    return main


def _with_deadline(main: Main, seconds: float, name: str) -> Main:
    async def limited(sys: Any, argv: list[str]) -> Any:
        with anyio.move_on_after(seconds) as scope:
            return await main(sys, argv)
        if scope.cancelled_caught:
            raise SyscallError(Errno.EDQUOT, f"{name}: wall-time quota of {seconds:g}s exceeded")
        return None

    return limited
