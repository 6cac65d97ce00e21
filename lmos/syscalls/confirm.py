"""Confirmation of irreversible actions: the user decides, not the model.

Deleting or overwriting a file, or anything with an external effect, cannot be
undone, and the process asking may be steered by text it read (prompt
injection).  So such syscalls call :func:`require` first, which asks the
kernel's *confirmation policy*: a host callback held by the syscall layer
(``Syscalls.confirm_policy``, given by the facade; the shell asks inline).
Rules:

- init (pid 1) is the host itself and is never asked;
- with no policy installed the answer is **no**: an embedding that has not said
  how to ask the user cannot have the user's consent, so nothing irreversible
  happens silently (pass ``confirm=`` to ``lmos.Kernel`` to allow it);
- a declined confirmation fails the syscall with ``ECANCELED``.

The request says whether the process is *tainted* (untrusted content entered
its context), so a policy that auto-approves trusted apps still sees, and can
refuse, an injected request; the default shell policy always asks for those.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from lmos.errors import Errno, SyscallError

if TYPE_CHECKING:
    from lmos.kernel.process import Process
    from lmos.syscalls.table import Ctx

INIT_PID = 1


class ConfirmRequest(msgspec.Struct, kw_only=True, frozen=True):
    """What the user is asked to approve."""

    pid: int
    uid: int
    app: str
    action: str  # e.g. "fs_delete", "fs_write:overwrite", "tool:http_post"
    target: str  # the path, URL or other object acted on
    detail: str = ""
    tainted: bool = False  # the process has read untrusted content

    def describe(self) -> str:
        warn = " [process has read untrusted content]" if self.tainted else ""
        return f"pid {self.pid} ({self.app}) wants to {self.action} {self.target}{warn}"


ConfirmPolicy = Callable[[ConfirmRequest], Awaitable[bool]]


async def require(ctx: Ctx, action: str, target: str, detail: str = "") -> None:
    """Return if the user approves ``action`` on ``target`` by the caller; else raise ECANCELED."""
    p = ctx.proc
    if p.pid == INIT_PID:
        return
    req = ConfirmRequest(
        pid=p.pid, uid=p.uid, app=p.app, action=action, target=target, detail=detail, tainted=p.tainted
    )
    policy = ctx.sys.confirm_policy
    if policy is None:
        raise SyscallError(
            Errno.ECANCELED, f"{req.describe()}: needs confirmation and no confirmation policy is set"
        )
    if p.blocked_on:  # already inside a blocking syscall (a tool): stay in it
        ok = await policy(req)
    else:
        async with ctx.kernel.blocking(p, "confirm"):
            ok = await policy(req)
    if not ok:
        raise SyscallError(Errno.ECANCELED, f"declined: {req.describe()}")


def taint(p: Process) -> None:
    """Mark ``p`` as having read untrusted content (it stays marked for life)."""
    p.tainted = True
