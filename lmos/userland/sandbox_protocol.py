"""The sandbox's wire format and the types its callers see: limits, results, requests.

Host (``sandbox.py``) and worker (``sandbox_worker.py``) exchange one JSON
object per line.  This module holds the host's half of that contract: the
budgets a run gets (:class:`Limits`), what a run may carry beyond its source
(:class:`Extras`), how a request is validated and encoded, how the worker's
messages are schema-checked (``Done``, ``Call``), and what the caller gets
back (:class:`Result`).  Everything that comes from a worker is treated as
hostile: it is decoded into these strict structs or the worker is killed.
"""

from __future__ import annotations

import importlib.util
import keyword
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.userland.sandbox_proxies import module_name_error

WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
SPAWN_TIMEOUT = 20.0
MAX_SOURCE = 1 << 20
MIN_MEMORY = 64 << 20


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Budgets for one run.  Time spent waiting on syscalls counts against
    neither CPU (it is not CPU) nor wall clock (the kernel bounds it)."""

    cpu_seconds: float = 5.0
    wall_seconds: float = 10.0
    memory_bytes: int = 512 << 20  # address space of the worker process
    output_bytes: int = 1 << 20  # printed text; the namespace has its own budget of the same size
    max_syscalls: int = 256

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if not getattr(self, name) > 0:
                raise SyscallError(Errno.EINVAL, f"limits.{name} must be positive")
        if self.memory_bytes < MIN_MEMORY:
            raise SyscallError(Errno.EINVAL, f"limits.memory_bytes must be at least {MIN_MEMORY}")


class Result(msgspec.Struct, kw_only=True):
    """What a run produced; an untrusted program's failure is a result, not an exception."""

    ok: bool
    error: str | None = None  # one line
    stdout: str = ""
    namespace: dict[str, Any] = {}  # JSON-representable top-level names
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    syscalls: int = 0
    syscall_seconds: float = 0.0
    errno: str | None = None  # the errno name of an uncaught SyscallError (unvalidated: the program's word)
    refused: int = 0  # guard refusals during the run, including ones the program caught
    refusals: list[str] = []  # the first few of them, for the audit log


VIOLATION_MARKS = ("compile error:", "is not allowed in the sandbox", "is not accessible",
                    "not allowed", "forbidden")


def violations(r: Result) -> list[str]:
    """Everything of ``r`` the audit log must record: each guard refusal (caught by the
    program or not), a count of any beyond the first few, or else a violation that ended
    the run without a guard (a compile error)."""
    out = list(r.refusals)
    if r.refused > len(out):
        out.append(f"{r.refused - len(out)} more refusals")
    if not out:
        bad = violation(r)
        out = [bad] if bad is not None else []
    return out


def violation(r: Result) -> str | None:
    """The error of ``r`` if it was a security violation (a guard or the restricted
    compiler refused something), as opposed to an ordinary failure or a resource limit."""
    err = r.error or ""
    return err if not r.ok and any(m in err for m in VIOLATION_MARKS) else None


class Isolation(msgspec.Struct, frozen=True):
    """What a worker's lock-down achieved, as it reported at startup (``sandbox_wall.py``).

    ``wall`` is what keeps the worker from opening files if a program escapes the
    restricted language: ``"landlock"`` (``landlock_abi`` is the kernel's version),
    ``"mountns"`` (an empty root in a private mount namespace) or ``"none"``: then a
    worker that is not root keeps the user's uid and could read the user's files and
    the state database, so untrusted code runs only if the operator allows weak
    isolation.  ``seccomp``: the worker cannot make sockets (so cannot reach the control
    socket); ``netns``: it has a network namespace of its own."""

    pid: int
    uid: int
    no_new_privs: bool
    netns: bool
    dropped_root: bool
    cpu: float = 0.0
    wall: str = "none"
    landlock_abi: int = 0
    seccomp: bool = False

    @property
    def weak(self) -> bool:
        """True when nothing but the restricted language keeps the worker from the files."""
        return self.wall == "none"


class Refused(msgspec.Struct):
    """The guard refusals of one run, as the worker reports them (bounded: it is hostile)."""

    count: Annotated[int, Meta(ge=0)] = 0
    first: Annotated[list[Annotated[str, Meta(max_length=300)]], Meta(max_length=16)] = []


class Done(msgspec.Struct):
    op: str
    ok: bool
    error: str | None
    stdout: str
    namespace: dict[str, Any]
    cpu: float | None
    cpu_total: float
    syscall_seconds: float
    recycle: bool
    errno: str | None = None
    refused: Refused | None = None


class Call(msgspec.Struct):
    syscall: str
    args: dict[str, Any]


def restricted_python_path() -> str:
    spec = importlib.util.find_spec("RestrictedPython")
    if spec is None or spec.origin is None:
        raise SyscallError(Errno.ENOSYS, "RestrictedPython is not installed")
    return str(Path(spec.origin).parent.parent)


def error_reply(err: SyscallError) -> bytes:
    error = {"errno": err.errno.name, "code": int(err.errno), "message": err.message}
    return msgspec.json.encode({"op": "reply", "error": error}) + b"\n"


class Extras(msgspec.Struct, frozen=True, kw_only=True):
    """What a run may have beyond ``source`` (the API of code apps).

    ``modules``: the program's own modules, name -> source, importable by name
    (``import helpers``), compiled under the same policy and imported as a
    read-only namespace of their top-level names.  ``agent``: when not None,
    the program gets ``ask(messages, **gen)`` and ``agent(messages, tools=None,
    max_steps=None, **sampling)``, lmos's agent loop run over the program's own
    syscalls; the dict holds defaults (``tools``, ``max_steps``,
    ``temperature``).  ``echo``: each ``print`` is also sent as a ``write``
    syscall as it happens (the process's output stream).  ``only``: report just
    these top-level names in ``Result.namespace`` (a code app's ``result``); one
    bound to something that is not JSON data fails the run instead of vanishing."""

    modules: dict[str, str] = {}
    agent: dict[str, Any] | None = None
    echo: bool = False
    only: list[str] | None = None


def encode_request(source: str, limits: Limits, names: frozenset[str] | None,
                    inputs: Mapping[str, Any] | None, seed: int | None,
                    extras: Extras | None = None, now: float | None = None) -> bytes:
    """Validate what the caller (trusted, but possibly buggy) passed in."""
    extras = extras or Extras()
    if type(source) is not str or not all(type(s) is str for s in extras.modules.values()):
        raise SyscallError(Errno.EINVAL, "source must be a str")
    if len(source) + sum(map(len, extras.modules.values())) > MAX_SOURCE:
        raise SyscallError(Errno.E2BIG, f"source longer than {MAX_SOURCE} characters")
    for module in extras.modules:
        bad = module_name_error(module)
        if bad is not None:
            raise SyscallError(Errno.EINVAL, bad)
    for name in list(names or ()) + list(inputs or ()) + list(extras.only or ()):
        if type(name) is not str or not name.isidentifier() or name[:1] == "_" or keyword.iskeyword(name):
            raise SyscallError(Errno.EINVAL, f"bad name {name!r}: need an identifier not starting with '_'")
    if seed is None:
        seed = int.from_bytes(os.urandom(7), "big")
    request = {"op": "run", "source": source, "inputs": dict(inputs or {}), "seed": int(seed), "now": now,
               "modules": dict(extras.modules) or None, "agent": extras.agent, "echo": extras.echo,
               "only": extras.only,
               "syscalls": None if names is None else sorted(names),
               "limits": {"cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes,
                          "output_bytes": limits.output_bytes, "max_syscalls": limits.max_syscalls}}
    try:
        return msgspec.json.encode(request) + b"\n"
    except (TypeError, ValueError, OverflowError, msgspec.MsgspecError, UnicodeError) as exc:
        raise SyscallError(Errno.EINVAL, f"inputs must be JSON values: {exc}") from None
