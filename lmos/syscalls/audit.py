"""Who may write which audit rows: programs their own namespace, the sandbox host its events.

The audit table is the record an operator reads after an incident, so a
program must not be able to forge it: a row named ``sandbox_violation`` or
``fs_write`` means the kernel saw that happen.  Three kinds of row:

- every syscall, written by the dispatcher (``name`` is the syscall);
- sandbox events (:data:`SANDBOX_EVENTS`): a guard refused something, written
  by the sandbox's host side (``lmos.userland.codeapp``, user tools) through
  :func:`host_audit`, which only code running in the kernel's process can use;
- a program's own notes through the ``audit`` syscall, accepted only under
  ``app.<its app name>.`` (:func:`app_namespace`), which no syscall and no
  sandbox event uses, and marked ``decision = "app"``.

Why a context variable rather than a capability: the sandboxed program and
its host run as the same process, so no per-process grant can tell them
apart.  What differs is the path: the program's syscalls arrive over the
worker's pipe and are forwarded by the host as ordinary calls, while the host
itself sets :data:`HOST_AUDIT` around its own call.  A context variable set in
one task is invisible to every other task, and front ends over a socket or HTTP
never reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from lmos.errors import Errno, SyscallError

SANDBOX_EVENTS = frozenset({"sandbox_violation"})
HOST_AUDIT: ContextVar[bool] = ContextVar("lmos_host_audit", default=False)


def app_namespace(app: str) -> str:
    """The prefix of the events the program ``app`` may write."""
    return f"app.{app}."


def decision_for(app: str, event: str) -> str:
    """``"violation"`` for a sandbox event from the host, ``"app"`` for a program's own
    event; EPERM for anything else (a program naming a kernel or sandbox event)."""
    if HOST_AUDIT.get():
        if event not in SANDBOX_EVENTS:
            raise SyscallError(Errno.EINVAL, f"unknown sandbox event {event!r}")
        return "violation"
    prefix = app_namespace(app)
    if not event.startswith(prefix) or len(event) == len(prefix):
        raise SyscallError(Errno.EPERM, f"a program may write audit events only under {prefix!r}, "
                           f"not {event[:64]!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in event):
        raise SyscallError(Errno.EINVAL, "audit event names have no control characters")
    return "app"


@contextmanager
def host_audit() -> Iterator[None]:
    """Within this block, the current task's ``audit`` calls record sandbox events."""
    token = HOST_AUDIT.set(True)
    try:
        yield
    finally:
        HOST_AUDIT.reset(token)
