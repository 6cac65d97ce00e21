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

What the user reads (:meth:`ConfirmRequest.describe`) must not be steerable by
the process either: a tainted request says so *first*, before anything the
process chose, and the target (a path, a URL, a key) is quoted with control,
bidi and other invisible characters escaped and cut at a width with a visible
marker, so a name like ``notes\u202etxt.exe`` or one padded past the edge of
the terminal cannot hide what is really acted on.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from lmos.errors import Errno, SyscallError

if TYPE_CHECKING:
    from lmos.kernel.process import Process
    from lmos.syscalls.table import Ctx

INIT_PID = 1
TARGET_WIDTH = 120  # characters of a quoted target shown before it is cut
TAINT_WARNING = "WARNING: this process has read untrusted content and may be acting on it."
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def _escape(ch: str) -> str:
    """``ch`` as the user should see it: itself, or a visible escape for anything invisible."""
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    # Cc: C0, DEL and C1 controls; Cf: bidi overrides/isolates, zero-width and other format
    # characters; Zl/Zp: line and paragraph separators; Cs: lone surrogates; Co/Cn: unknown glyphs
    if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return ch


def _escaped(text: str, width: int) -> tuple[str, int]:
    """The escaped form of ``text`` up to ``width`` characters, and how many characters were cut."""
    out: list[str] = []
    used = 0
    for i, ch in enumerate(text):
        piece = _escape(ch)
        if used + len(piece) > width:
            return "".join(out), len(text) - i
        out.append(piece)
        used += len(piece)
    return "".join(out), 0


def _cut(n: int) -> str:
    return f"... [cut: {n} more characters]" if n else ""


def quote(text: str, width: int = TARGET_WIDTH) -> str:
    """``text`` in double quotes with invisible characters escaped, cut after ``width``
    characters of the quoted form with a marker saying how much was left out."""
    shown, cut = _escaped(text, width)
    return f'"{shown}"{_cut(cut)}'


def plain(text: str, width: int = 64) -> str:
    """A short label the process chose (its app name, an action, a detail), escaped like a target."""
    shown, cut = _escaped(text, width)
    return shown + _cut(cut)


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
        """One line for the user: the taint warning first, then who wants what, the target quoted."""
        warn = TAINT_WARNING + " " if self.tainted else ""
        detail = f" ({plain(self.detail)})" if self.detail else ""
        return (f"{warn}pid {self.pid} ({plain(self.app)}) wants to {plain(self.action)} "
                f"{quote(self.target)}{detail}")


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
    """Mark ``p`` as having read untrusted content (it stays marked for life).

    Init is the host program itself, not something a model steers: it reads
    results (``wait``, ``events``) on the user's behalf, and marking it would
    mark every process it starts afterwards, so it is never tainted.
    """
    if p.pid != INIT_PID:
        p.tainted = True
