"""Who a front end is: the local user behind a control-socket connection.

A connection is trusted for a uid only when both hold:

- the kernel reads the peer's uid with ``SO_PEERCRED`` (the OS says who
  connected; a client cannot lie about it), and that uid is the kernel's owner,
  one of ``[users] local``, or root;
- the client presents the per-kernel secret (``STATE_DIR/kernel.secret``, mode
  0600), so a process that merely shares the uid but cannot read the state
  directory (a sandbox worker behind its own wall) cannot attach.

Root is the exception to "act as who you are": its front ends act as
``[users] root_runs_as`` (default ``nobody``) unless the operator asks for
``--as-root``, because CI and development machines run everything as root and a
misbehaving app there should not hold root's powers by default.
"""

from __future__ import annotations

import pwd
import socket
import struct

from lmos.config import Users
from lmos.errors import Errno, SyscallError

NOBODY = 65534


def uid_of(name: str) -> int:
    """A user name or a numeric uid as a uid; ``nobody`` falls back to 65534 where it does not exist."""
    text = name.strip()
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        if text == "nobody":
            return NOBODY
        raise SyscallError(Errno.EINVAL, f"[users]: no such local user {text!r}") from None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def allowed(uid: int, owner: int, users: Users) -> bool:
    """May local user ``uid`` attach to a kernel owned by ``owner``?"""
    if uid in (owner, 0):
        return True
    return any(uid_of(name) == uid for name in users.local)


def acts_as(uid: int, as_root: bool, users: Users) -> int:
    """The uid a front end's session (and so its apps) runs as."""
    if uid == 0 and not as_root:
        return uid_of(users.root_runs_as)
    return uid
