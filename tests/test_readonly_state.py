"""A read-only state directory: a kernel that runs programs refuses to start (EROFS, one line), and
the storage commands that only read it (``lmos replay``, ``lmos audit``, ``lmos ps --all``) work.

Two ways to make the directory read-only: a real read-only bind mount in a private mount namespace
(``unshare -m``, where the machine allows it) for the command line, and, everywhere, opening the
lock file failing with EROFS as it does on a read-only file system.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.kernel import journal as journal_mod

pytestmark = pytest.mark.anyio


async def make_state(state: Path) -> int:
    async with lmos.Kernel(model=ScriptedDriver("hello there"), state_dir=str(state)) as k:
        await k.syscall("fs_write", path="/notes.txt", data="kept")
        return (await k.complete("hi", max_tokens=4)).pid


@pytest.fixture
def read_only_fs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock file cannot be opened for writing: what a read-only file system says."""
    real = os.open

    def fake(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if str(path).endswith("/lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(journal_mod.os, "open", fake)


async def test_a_kernel_refuses_a_read_only_state_directory(tmp_path: Path, read_only_fs: None) -> None:
    with pytest.raises(SyscallError) as e:
        async with lmos.Kernel(model=ScriptedDriver("x"), state_dir=str(tmp_path / "s")):
            pass
    assert e.value.errno == Errno.EROFS
    msg = str(e.value)
    assert "\n" not in msg and "is read-only" in msg and "`lmos replay` and `lmos audit` can read it" in msg


async def test_the_storage_commands_read_a_read_only_state_directory(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "s"
    pid = await make_state(state)
    before = (state / "lmos.db").read_bytes()
    real = os.open

    def fake(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if str(path).endswith("/lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(journal_mod.os, "open", fake)
    async with lmos.Kernel(model=False, state_dir=str(state)) as k:
        assert k.core is not None and k.core.journal.read_only and k.core.sysjournal is None
        r = await k.syscall("proc_replay", pid=pid)
        assert r.verified and [s.name for s in r.steps] == ["llm_generate"]
        rows = (await k.syscall("audit_query", pid=pid)).rows
        assert [row.name for row in rows] == ["llm_generate"]
        assert (await k.syscall("fs_read", path="/notes.txt")).data == "kept"
        with pytest.raises(SyscallError) as e:  # a write is refused, with the errno that says why
            await k.syscall("fs_write", path="/more.txt", data="no")
        assert e.value.errno == Errno.EROFS
    assert (state / "lmos.db").read_bytes() == before  # nothing was written


def _can_mount() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / /mnt 2>/dev/null || "
                        "mount --bind -o ro /tmp /tmp"], capture_output=True, timeout=30)
    return r.returncode == 0


def lmos_ro(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``lmos ARGS`` with ``state`` bind-mounted read-only in a private mount namespace."""
    env = {**os.environ, "LMOS_HOME": str(state)}
    env.pop("LMOS_STATE_DIR", None)
    script = f'mount --bind -o ro "{state}" "{state}" && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-c",
                           "from lmos.cli import main; main()", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.skipif(not _can_mount(), reason="no private mount namespace here (unshare -m)")
async def test_the_command_line_on_a_read_only_mount(tmp_path: Path) -> None:
    state = tmp_path / "s"
    pid = await make_state(state)
    up = lmos_ro(state, "up", "--model", "scripted:hi")
    assert up.returncode != 0
    assert up.stderr.strip().splitlines() == [
        f"lmos: EROFS: state directory {state} is read-only: a kernel must write it; `lmos replay` and "
        "`lmos audit` can read it"]
    replay = lmos_ro(state, "replay", str(pid), "--json")
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["verified"]
    audit = lmos_ro(state, "audit", "--json", "--pid", str(pid))
    assert audit.returncode == 0, audit.stderr
    assert [r["name"] for r in json.loads(audit.stdout)["rows"]] == ["llm_generate"]
    ps = lmos_ro(state, "ps", "--all", "--json")
    assert ps.returncode == 0, ps.stderr
    assert [p["pid"] for p in json.loads(ps.stdout)] == [pid]
    assert "could not" not in replay.stderr + audit.stderr + ps.stderr  # no warnings about writes
