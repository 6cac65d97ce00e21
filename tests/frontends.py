"""Helpers for tests of the kernel process and its front ends: run ``lmos``/``lmosh`` as a user would,
and make sure no kernel process outlives its test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect

from lmos.cli.control import kernel_pid, pid_alive

LMOS = "from lmos.cli import main; main()"
LMOSH = "from lmos.cli import shell_main; shell_main()"
PROMPT = "lmosh\\$"


def env(home: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LMOS_")}
    e.update({"LMOS_MODEL": "scripted", "HOME": str(home), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
    e.update(extra)
    return e


def lmos(state: Path, *args: str, entry: str = LMOS, timeout: float = 120, stdin: str | None = None,
         **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", entry, *args, "--state-dir", str(state)], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=env(state.parent, **extra),
                          check=False)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def spawn(state: Path, *args: str, entry: str = LMOSH, **extra: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-c", entry, *args, "--state-dir", str(state)], encoding="utf-8",
                         timeout=60, dimensions=(40, 200), env=env(state.parent, **extra))


def shell(state: Path) -> pexpect.spawn:
    sh = spawn(state)
    sh.expect(PROMPT)
    return sh


def ctrl_d(sh: pexpect.spawn) -> None:
    """Ctrl-D at the prompt (retried: one typed before raw mode is lost)."""
    for _ in range(5):
        time.sleep(0.3)
        sh.sendeof()
        if sh.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=8) == 0:
            return
    raise AssertionError("lmosh did not exit on Ctrl-D")


def stop_kernel(state: Path) -> None:
    """``lmos down --force``, then SIGKILL if the kernel is still there: CI never keeps a daemon."""
    pid = kernel_pid(str(state))
    with contextlib.suppress(subprocess.TimeoutExpired):
        lmos(state, "down", "--force", timeout=30)
    if pid is not None:
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def kernel_up(state: Path, *args: str) -> Iterator[int]:
    """A kernel that stays up (``lmos up``) for the block; its pid."""
    r = lmos(state, "up", *args)
    assert r.returncode == 0, r.stderr
    pid = kernel_pid(str(state))
    assert pid is not None
    try:
        yield pid
    finally:
        stop_kernel(state)
