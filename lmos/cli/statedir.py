"""Syscalls on a state directory, whether or not a kernel is running on it.

Front-end commands that only touch storage (``lmos cp``, ``lmos mount``,
``lmos app install`` ...) must work in both situations:

- a kernel (lmosh, ``lmos run``, ``lmos serve``) holds the state directory:
  its lock forbids a second kernel, so the calls go through its control
  socket (:mod:`lmos.cli.control`) and the running kernel sees the change at
  once (its caches, its processes);
- nothing is running: a kernel is opened on the directory for the calls and
  closed again, with no model loaded (``Kernel(model=False)``), since loading
  weights to copy a file would take seconds for nothing.

Either way the calls are made as init (pid 1), the host itself, as
``lmos ps`` and ``lmos kill`` are: the control socket is mode 0600, so only the
owner of the state directory (the operator) gets this far.  Results come back
as plain builtins (dicts and lists) in both cases, so callers cannot tell the
paths apart; errors are :class:`SyscallError`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from lmos.cli import control
from lmos.errors import Errno, SyscallError

Call = Callable[..., Any]  # call(name, /, **args) -> builtins


def running(state_dir: str) -> bool:
    """Whether a kernel answers on the control socket of ``state_dir``."""
    if state_dir == ":memory:":
        return False
    path = control.socket_path(state_dir)
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(str(path))
        except OSError:
            return False  # a socket file left behind by a kernel that died
    return True


def _remote(state_dir: str) -> Call:
    def call(name: str, /, **args: Any) -> Any:
        return control.call(state_dir, name, timeout=120.0, **args)

    return call


@contextlib.contextmanager
def session(state_dir: str) -> Iterator[Call]:
    """``with session(d) as call: call("fs_stat", path="/x")`` -- one boot for many calls."""
    if running(state_dir):
        yield _remote(state_dir)
        return
    from anyio.from_thread import start_blocking_portal

    from lmos.system import Kernel

    with start_blocking_portal() as portal:
        try:
            cm = portal.wrap_async_context_manager(Kernel(model=False, state_dir=state_dir))
            k = cm.__enter__()
        except SyscallError as exc:
            if exc.errno != Errno.EBUSY or not running(state_dir):
                raise
            # A kernel started between the check and the open: use it instead.
            yield _remote(state_dir)
            return
        def call(name: str, /, **args: Any) -> Any:
            return msgspec.to_builtins(portal.call(lambda: k.syscall(name, **args)))

        try:
            yield call
        finally:
            cm.__exit__(None, None, None)  # Kernel.__aexit__ closes the same way either way


def syscall_on(state_dir: str, name: str, /, **args: Any) -> Any:
    """One syscall as init on the kernel of ``state_dir`` (running, or opened for the call)."""
    with session(state_dir) as call:
        return call(name, **args)


def syscalls_on(state_dir: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Several syscalls in one boot, in order; the first error stops the batch and is raised."""
    with session(state_dir) as call:
        return [call(name, **args) for name, args in calls]
