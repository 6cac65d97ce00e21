"""The syscall table itself: number -> name -> definition.

Each family module (``proc``, ``llm``, ``ipc`` ...) declares its calls with
the :func:`syscall` decorator.  Numbers are stable forever: a removed call
leaves a hole rather than renumbering, so saved traces and clients stay valid.
The reference page ``docs/syscalls.md`` is generated from this table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmos.syscalls.types import Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

Handler = Callable[["Ctx", Any], Awaitable[Resp]]
CapFn = Callable[[Any], str | None]


@dataclass(frozen=True, slots=True)
class SyscallDef:
    nr: int
    name: str
    req: type[Req]
    resp: type[Resp]
    cap: str | CapFn | None  # capability needed (a function of the request for path/host caps)
    blocking: bool  # may leave the process BLOCKED (or waiting) for a while
    handler: Handler
    doc: str

    def needed_cap(self, req: Any) -> str | None:
        return self.cap(req) if callable(self.cap) else self.cap


TABLE: dict[str, SyscallDef] = {}
BY_NR: dict[int, SyscallDef] = {}


def syscall(nr: int, name: str, req: type[Req], resp: type[Resp], *, cap: str | CapFn | None = None,
            blocking: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler`` as syscall ``nr``/``name``."""

    def deco(handler: Handler) -> Handler:
        if name in TABLE or nr in BY_NR:
            raise RuntimeError(f"syscall {nr}/{name} registered twice")
        doc = (handler.__doc__ or "").strip()
        d = SyscallDef(nr, name, req, resp, cap, blocking, handler, doc)
        TABLE[name] = d
        BY_NR[nr] = d
        return handler

    return deco
