"""Error codes shared by every layer.

The kernel never raises arbitrary exceptions into userland: every failure a
caller can see is a :class:`SyscallError` carrying an :class:`Errno`, the same
way a Unix system call fails with ``-1`` and ``errno``.  This module sits at the
bottom of the import graph so drivers, kernel, syscalls and front ends all use
one vocabulary.
"""

from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """errno-style codes; the numbers follow Linux so they read familiarly."""

    EPERM = 1  # operation not permitted (missing capability)
    ENOENT = 2  # no such file, app, model or channel
    ESRCH = 3  # no such process
    EINTR = 4  # interrupted by a signal
    EIO = 5  # a driver or storage failure
    E2BIG = 7  # argument or context too long
    ECHILD = 10  # no child to wait for
    EAGAIN = 11  # resource temporarily unavailable (admission control)
    ENOMEM = 12  # out of KV blocks or memory
    EACCES = 13  # access denied by a path or host rule
    EFAULT = 14  # bad payload (cannot be decoded)
    EBUSY = 16  # resource in use (state directory lock)
    EEXIST = 17  # already exists
    ENOTDIR = 20
    EISDIR = 21
    EINVAL = 22  # invalid argument
    EFBIG = 27  # file too large
    ENOSPC = 28  # no space left (storage or window)
    EROFS = 30  # read-only file system (a mounted host folder)
    EPIPE = 32  # channel closed
    ERANGE = 34
    ENOSYS = 38  # no such syscall
    ENOTEMPTY = 39
    ENODATA = 61
    EDQUOT = 122  # quota exceeded (tokens, children, wall time)
    ECANCELED = 125  # operation cancelled (user declined a confirmation)
    ETIMEDOUT = 110  # timed out
    EINPROGRESS = 115  # an effect was in flight when the kernel stopped: whether it happened is unknown
    ENOTRECOVERABLE = 131  # a recovered program did not replay its journal (docs/durability.md)


class SyscallError(Exception):
    """A failed system call: ``errno`` plus a one-line human message."""

    def __init__(self, errno: Errno | int, message: str = "") -> None:
        self.errno = Errno(errno)
        self.message = message or self.errno.name
        super().__init__(f"{self.errno.name}: {self.message}")

    def __reduce__(self) -> tuple[type[SyscallError], tuple[int, str]]:
        return (SyscallError, (int(self.errno), self.message))


class IllegalTransition(RuntimeError):
    """A process state change that the state machine forbids (a kernel bug)."""
