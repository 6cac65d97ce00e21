"""Syscalls on a state directory, whether or not a kernel is running on it.

Front-end commands that only touch storage (``lmos cp``, ``lmos mount``,
``lmos app install`` ...) must work in both situations:

- a kernel process serves the state directory: its lock forbids a second
  kernel, so the calls go through its control socket (:mod:`lmos.cli.control`)
  and the running kernel sees the change at once (its caches, its processes);
- nothing is running: a kernel is opened on the directory in this process for
  the calls and closed again, with no model loaded (``Kernel(model=False)``,
  :mod:`lmos.cli.local`), since loading weights to copy a file would take
  seconds for nothing.

Either way the calls are made by a session process of the caller's uid (root:
``[users] root_runs_as`` unless ``LMOS_AS_ROOT`` is set), exactly as lmosh's
are, so a file ``lmos cp`` puts in the store is where the user's shell and apps
find it.  The command itself is the user acting, so a confirmation one of its
syscalls would need (overwriting a file) is given: the command asked already
(``--force``, or its own y/N question).  Results come back as plain builtins
(dicts and lists) in both cases; errors are :class:`SyscallError`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

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


def as_root() -> bool:
    return os.environ.get("LMOS_AS_ROOT", "").lower() in ("1", "true", "yes")


async def _yes(req: dict[str, Any]) -> bool:
    return True


@contextlib.contextmanager
def session(state_dir: str) -> Iterator[Call]:
    """``with session(d) as call: call("fs_stat", path="/x")`` -- one attach (or boot) for many calls."""
    from anyio.from_thread import start_blocking_portal

    from lmos.cli.local import open_local

    with start_blocking_portal() as portal:
        cm: Any
        if running(state_dir):
            cm = control.open_connection(state_dir, kind="lmos", start=False, as_root=as_root())
        else:
            cm = open_local(state_dir, False, kind="lmos", as_root=as_root())
        wrapped = portal.wrap_async_context_manager(cm)
        try:
            conn = wrapped.__enter__()
        except SyscallError as exc:
            if exc.errno not in (Errno.EBUSY, Errno.ENOENT) or not running(state_dir):
                raise
            # A kernel started (or stopped) between the check and the open: attach to it instead.
            cm = control.open_connection(state_dir, kind="lmos", start=False, as_root=as_root())
            wrapped = portal.wrap_async_context_manager(cm)
            conn = wrapped.__enter__()
        conn.on_confirm = _yes

        def call(name: str, /, **args: Any) -> Any:
            return portal.call(lambda: conn.call(name, **args))

        try:
            yield call
        finally:
            wrapped.__exit__(None, None, None)


def syscall_on(state_dir: str, name: str, /, **args: Any) -> Any:
    """One syscall as the caller on the kernel of ``state_dir`` (running, or opened for the call)."""
    with session(state_dir) as call:
        return call(name, **args)


def syscalls_on(state_dir: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Several syscalls in one boot, in order; the first error stops the batch and is raised."""
    with session(state_dir) as call:
        return [call(name, **args) for name, args in calls]
