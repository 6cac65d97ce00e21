"""Start the kernel process of a state directory when no kernel answers there.

The first front end on a state directory runs ``python -m lmos.cli.kerneld``
detached from its terminal (a new session, stdio to ``STATE_DIR/kernel.log``),
so closing that front end's terminal ends nobody else's work.  Starters take an
``flock`` on ``STATE_DIR/kernel.start`` first: two front ends opened at the
same moment start one kernel, and the second attaches to it.  The kernel says
it is ready (or why it failed, as one ``ERRNO message`` line) on a pipe, so a
failed start is reported by the front end that asked, not lost in a log.

A socket file with nobody listening (a kernel killed with ``kill -9``) is
removed here before the new kernel starts: a dead kernel leaves no lock behind,
since the journal's lock is an ``flock`` the OS drops with the process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import anyio

from lmos.cli.control import LOG, Stale, dial, socket_path, state_path
from lmos.errors import Errno, SyscallError

START_LOCK = "kernel.start"


async def start_kernel(state_dir: str, model: str | None, *, stay: bool = False, quiet: bool = False) -> None:
    """Start a kernel for ``state_dir`` unless one is answering by the time the start lock is held."""
    d = state_path(state_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(d / START_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # a read-only state directory: a kernel could not write its database either
        if exc.errno == errno.EROFS:
            raise SyscallError(Errno.EROFS, f"state directory {d} is read-only: a kernel must write it; "
                               "`lmos replay` and `lmos audit` can read it") from None
        raise
    try:
        await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            stream = await dial(state_dir)
        except Stale:
            pass
        else:  # another front end started it while this one waited for the lock
            await stream.aclose()
            return
        with contextlib.suppress(FileNotFoundError):
            socket_path(state_dir).unlink()  # left by a kernel that died
        await _spawn(d, model, stay, quiet)
    finally:
        os.close(fd)  # drops the flock


async def _spawn(d: Path, model: str | None, stay: bool, quiet: bool) -> None:
    from lmos.cli.control import model_key

    spec = model_key(model) or "builtin"
    r, w = os.pipe()
    log = os.open(d / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        cmd = [sys.executable, "-m", "lmos.cli.kerneld", "--state-dir", str(d), "--model", spec,
               "--ready-fd", str(w)] + (["--stay"] if stay else [])
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w,),
                                start_new_session=True, cwd="/", close_fds=True)
    finally:
        os.close(w)
        os.close(log)
    label = "the built-in model" if spec == "builtin" else spec
    try:
        if sys.stderr.isatty() and not quiet:
            from rich.console import Console

            with Console(stderr=True).status(f"lmos: starting the kernel ({label})..."):
                said = await anyio.to_thread.run_sync(_read_all, r)
        else:
            said = await anyio.to_thread.run_sync(_read_all, r)
    finally:
        os.close(r)
    line = said.decode(errors="replace").strip()
    if line == "ok":
        return
    if not line:  # it died before saying anything: its log says why
        code = await anyio.to_thread.run_sync(proc.wait)
        line = f"EIO the kernel process exited ({code}) while starting; see {d / LOG}"
    name, _, message = line.partition(" ")
    errno = Errno.__members__.get(name, Errno.EIO)
    raise SyscallError(errno, message if name in Errno.__members__ else line)


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return out
        out += chunk
