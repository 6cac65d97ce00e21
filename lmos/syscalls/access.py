"""Who may look at or act on another process: ``ps``, ``events``, ``trace``, ``kill``.

The rule is Unix's, with the ``proc`` capability as the extra right:

- a process may always see and signal itself and its descendants (a parent
  waits for, kills and watches what it started, as in Unix), whatever its
  capabilities;
- with ``proc`` it may also see and signal every other process of its own uid;
- init (pid 1, the host program) and a uid-0 process with ``proc`` see every
  process.  Nothing runs as uid 0 by accident (see ``KernelCore.host_uid``):
  only what an operator started as root.

Processes of another uid are not merely refused, they are invisible to ``ps``,
so their argv and output never cross users.  Every front end (shell, CLI,
HTTP) goes through these checks as its own process and uid.
"""

from __future__ import annotations

from lmos.errors import Errno, SyscallError
from lmos.kernel.kernel import INIT_PID, KernelCore
from lmos.kernel.process import Process
from lmos.syscalls.caps import grants


def related(kernel: KernelCore, caller: Process, pid: int) -> bool:
    """Is ``pid`` the caller itself or one of its descendants?"""
    return pid == caller.pid or kernel.descends(pid, caller.pid)


def may_observe(kernel: KernelCore, caller: Process, target_pid: int, target_uid: int) -> bool:
    """May ``caller`` see (ps, events, trace) and signal the process ``target_pid`` of ``target_uid``?"""
    if caller.pid == INIT_PID or related(kernel, caller, target_pid):
        return True
    if not grants(caller.caps, "proc"):
        return False
    return caller.uid == 0 or caller.uid == target_uid


def check_observe(kernel: KernelCore, caller: Process, target: Process, verb: str) -> None:
    """Raise EPERM unless ``caller`` may ``verb`` ``target`` (see the module doc)."""
    if may_observe(kernel, caller, target.pid, target.uid):
        return
    if not grants(caller.caps, "proc"):
        raise SyscallError(Errno.EPERM, f"{verb} of process {target.pid} needs capability 'proc' "
                                        "(only your own children without it)")
    raise SyscallError(Errno.EPERM, f"process {target.pid} belongs to another user")
