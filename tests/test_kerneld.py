"""The kernel process: up/status/down, kill -9 then a new front end, identity, and every bad input
(one line, exit != 0, nothing left behind).  Every test stops its kernel (tests/frontends.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pexpect
import pytest
from frontends import LMOS, env, kernel_up, lines, lmos, spawn, stop_kernel

import lmos as lmos_pkg
from lmos.cli.control import SECRET, kernel_pid, pid_alive, socket_path
from lmos.cli.identity import NOBODY, uid_of
from lmos.errors import SyscallError

ROOT = os.getuid() == 0


def test_up_status_down(tmp_path: Path) -> None:
    state = tmp_path / "s"
    with kernel_up(state) as pid:
        st = json.loads(lmos(state, "status", "--json").stdout)
        assert (st["pid"], st["model"], st["stay"], st["processes"]) == (pid, "scripted", True, 0)
        r = lmos(state, "run", "echo", "hi")
        assert (r.returncode, r.stdout) == (0, "hi\n")
        assert kernel_pid(str(state)) == pid  # attached: no second kernel, no model loaded again
        text = lmos(state, "status").stdout
        assert f"pid {pid}" in text and "model:      scripted" in text and "front ends: 0" in text
        r = lmos(state, "down")
        assert r.returncode == 0 and r.stdout == f"lmos: kernel {pid} stopped\n"
        assert not pid_alive(pid) and not socket_path(str(state)).exists()
        assert not (state / SECRET).exists()


def test_kernel_ends_with_its_last_front_end(tmp_path: Path) -> None:
    state = tmp_path / "s"
    try:
        r = lmos(state, "run", "echo", "one")
        assert r.returncode == 0
        pid = kernel_pid(str(state))
        assert pid is not None
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(pid), "a kernel started without lmos up outlived its front ends"
        assert not socket_path(str(state)).exists()
    finally:
        stop_kernel(state)


def test_kill_9_then_a_new_front_end(tmp_path: Path) -> None:
    state = tmp_path / "s"
    with kernel_up(state) as pid:
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
        assert socket_path(str(state)).exists()  # what a dead kernel leaves: a socket nobody answers
        r = lmos(state, "ps")  # needs a kernel: says so, and removes the stale socket
        assert r.returncode == 1 and lines(r.stderr) == [
            f"lmos: ENOENT: no kernel is running on {state} (removed the socket left by a kernel that died)"]
        assert not socket_path(str(state)).exists() and not (state / SECRET).exists()
        assert kernel_pid(str(state)) is None
        with kernel_up(state) as pid2:  # the journal's flock died with the kernel: no stale lock
            assert pid2 != pid
            os.kill(pid2, signal.SIGKILL)
            while pid_alive(pid2):
                time.sleep(0.05)
            r = lmos(state, "run", "echo", "again")  # a stale socket: a new kernel starts
            assert (r.returncode, r.stdout) == (0, "again\n"), r.stderr


def test_apps_run_as_the_caller(tmp_path: Path) -> None:
    """On a root host apps run as [users] root_runs_as (nobody) unless --as-root; otherwise as the user."""
    state = tmp_path / "s"

    async def uids(as_root: bool) -> tuple[int, int]:
        async with lmos_pkg.connect(str(state), as_root=as_root) as k:
            pid = await k.spawn("sleep", ["0.2"])
            procs = {p.pid: p for p in await k.ps()}
            await k.wait(pid)
            return k.uid, procs[pid].uid

    with kernel_up(state):
        me = os.getuid()
        assert anyio.run(uids, False) == ((NOBODY, NOBODY) if ROOT else (me, me))
        assert anyio.run(uids, True) == (me, me)
        # lmos run from the command line: ps shows the uid its app runs as
        for flags, uid in (((), NOBODY if ROOT else me), (("--as-root",), me)):
            cmd = [sys.executable, "-c", LMOS, "run", *flags, "sleep", "30", "--state-dir", str(state)]
            job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env=env(tmp_path))
            try:
                deadline = time.monotonic() + 30
                while True:
                    r = lmos(state, "ps", *flags)  # a user's ps shows only their own processes
                    row = [ln.split() for ln in r.stdout.splitlines() if ln.split()[-1:] == ["sleep"]]
                    if row:
                        break
                    if time.monotonic() > deadline:
                        job.kill()
                        raise AssertionError(job.communicate()[1])
                    time.sleep(0.5)
                assert r.stdout.split()[:6] == ["PID", "PPID", "UID", "STATE", "GEN", "APP"]
                assert int(row[0][2]) == uid
            finally:
                job.send_signal(signal.SIGINT)
                job.wait(timeout=30)


def test_connect_streams_a_process(tmp_path: Path) -> None:
    state = tmp_path / "s"

    async def main() -> tuple[str, int]:
        async with lmos_pkg.connect(str(state)) as k:
            pid = await k.spawn("generate", ["--max-tokens", "5", "abcdefgh"], stream=True)
            text = "".join([ev.text async for ev in k.stream(pid) if ev.kind == "token" and ev.text])
            return text, (await k.wait(pid)).exit_status

    try:
        text, status = anyio.run(main)
        assert status == 0 and text  # every token streamed from the spawn on
    finally:
        stop_kernel(state)


def test_serve_attaches_to_the_running_kernel(tmp_path: Path) -> None:
    state = tmp_path / "s"
    with kernel_up(state) as pid:
        cmd = [sys.executable, "-c", LMOS, "serve", "--port", "0", "--state-dir", str(state)]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env(tmp_path))
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert f"(kernel pid {pid})" in line, line
            url = line.split(" on ", 1)[1].split()[0]
            with urllib.request.urlopen(url + "/health", timeout=10) as resp:
                assert resp.status == 200
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        assert proc.returncode == 0 and pid_alive(pid)


# -- bad input: one line, exit != 0, nothing left behind ---------------------------------------------

def test_another_lmos_version_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s"
    with kernel_up(state):
        other = "import lmos; lmos.__version__ = '9.9.9'; " + LMOS
        r = lmos(state, "ps", entry=other)
        assert r.returncode == 1 and lines(r.stderr) == [
            f"lmos: EINVAL: the kernel on {state} runs lmos {lmos_pkg.__version__}; this front end is "
            "lmos 9.9.9 (stop it with lmos down, then start again)"]
        st = json.loads(lmos(state, "status", "--json").stdout)
        assert st["frontends"] == [] and st["processes"] == 0  # the refused one left no session


def test_wrong_or_missing_secret_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s"
    with kernel_up(state):
        secret = (state / SECRET).read_text()
        (state / SECRET).write_text("guessed")
        r = lmos(state, "ps")
        assert r.returncode == 1 and len(lines(r.stderr)) == 1
        assert r.stderr.startswith("lmos: EACCES: wrong kernel secret")
        (state / SECRET).unlink()
        r = lmos(state, "run", "echo", "hi")
        assert r.returncode == 1 and len(lines(r.stderr)) == 1
        assert r.stderr.startswith(f"lmos: EACCES: the kernel secret {state / SECRET} is missing")
        # a client that speaks the protocol but presents nothing
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(socket_path(str(state))))
            s.sendall(msgspec.json.encode({"hello": {"version": lmos_pkg.__version__}}) + b"\n")
            reply = msgspec.json.decode(s.makefile("rb").readline())
        assert reply == {"err": {"errno": 13, "name": "EACCES", "message": "no kernel secret was presented"}}
        (state / SECRET).write_text(secret)
        assert lmos(state, "run", "echo", "hi").returncode == 0


def test_other_model_is_one_line_naming_both(tmp_path: Path) -> None:
    state = tmp_path / "s"
    with kernel_up(state):
        r = lmos(state, "run", "echo", "hi", "--model", "scripted:other")
        assert r.returncode == 1 and lines(r.stderr) == [
            f"lmos: EINVAL: the kernel on {state} runs model scripted, not scripted:other "
            "(leave out --model, or lmos down first)"]


def test_down_with_running_processes_needs_force(tmp_path: Path) -> None:
    state = tmp_path / "s"
    with kernel_up(state) as pid:
        cmd = [sys.executable, "-c", LMOS, "run", "sleep", "60", "--state-dir", str(state)]
        job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env(tmp_path))
        try:
            deadline = time.monotonic() + 30
            while json.loads(lmos(state, "status", "--json").stdout)["processes"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            r = lmos(state, "down")  # no terminal to ask on: refused
            assert r.returncode == 1 and lines(r.stderr) == [
                "lmos: EBUSY: 1 process(es) running (sleep) and 1 other front end(s) attached; "
                "lmos down --force ends them"]
            assert pid_alive(pid)
            asked = spawn(state, "down", entry=LMOS)  # on a terminal it asks; no keeps it running
            asked.expect(r"1 process\(es\) running \(sleep\).*Stop anyway\? \[y/N\]")
            asked.sendline("n")
            asked.expect(pexpect.EOF)
            asked.close()
            assert asked.exitstatus == 1 and pid_alive(pid)
            r = lmos(state, "down", "--force")
            assert r.returncode == 0, r.stderr
            assert not pid_alive(pid) and not socket_path(str(state)).exists()
            job.wait(timeout=30)
            assert job.returncode != 0
        finally:
            job.kill()
            job.wait()


def test_no_kernel_and_not_a_socket(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    for args in (("ps",), ("status",), ("down",), ("kill", "5")):
        r = lmos(state, *args)
        assert r.returncode == 1 and lines(r.stderr) == [f"lmos: ENOENT: no kernel is running on {state}"]
    socket_path(str(state)).write_text("not a socket")
    r = lmos(state, "run", "echo", "hi")
    assert r.returncode == 1 and lines(r.stderr) == [
        f"lmos: EEXIST: {socket_path(str(state))} is not a socket (move it away)"]
    assert kernel_pid(str(state)) is None


def as_user(uid: int, fn: Any) -> str:
    """``fn()`` in a forked child running as ``uid`` (real and effective): what it returned, or the
    one-line error it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            os.setgid(uid)
            os.setuid(uid)
            try:
                out = str(fn())
            except SyscallError as exc:
                out = f"{exc.errno.name}: {exc.message}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    return said


@pytest.mark.skipif(not ROOT, reason="needs root to act as another local user")
def test_a_user_who_is_not_allowed_cannot_attach(tmp_path: Path) -> None:
    import tempfile

    from lmos.cli.control import open_connection

    state = Path(tempfile.mkdtemp(prefix="lmos-users-")) / "s"
    state.parent.chmod(0o755)
    nobody = uid_of("nobody")

    def attach() -> str:
        async def main() -> str:
            async with open_connection(str(state), start=False) as conn:
                return f"attached as {conn.uid}"
        return anyio.run(main)

    def hello(secret: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(socket_path(str(state))))
            said = {"hello": {"version": lmos_pkg.__version__, "secret": secret}}
            s.sendall(msgspec.json.encode(said) + b"\n")
            return s.makefile("rb").readline().decode()

    try:
        with kernel_up(state):
            said = as_user(nobody, attach)  # the state directory is private to its owner
            assert said == f"EACCES: cannot reach the kernel on {state}: permission denied (it belongs to " \
                           "root, who has not allowed you)"
            # even with the files opened up by hand, the kernel checks who connected (SO_PEERCRED)
            state.chmod(0o755)
            secret = (state / SECRET).read_text()
            socket_path(str(state)).chmod(0o666)
            reply = json.loads(as_user(nobody, lambda: hello(secret)))
            why = f"nobody may not attach to the kernel of root on {state} (not in [users] local)"
            assert reply == {"err": {"errno": 13, "name": "EACCES", "message": why}}
            st = json.loads(lmos(state, "status", "--json").stdout)
            assert st["frontends"] == []  # nothing was left behind
    finally:
        stop_kernel(state)
        shutil.rmtree(state.parent, ignore_errors=True)


@pytest.mark.skipif(not ROOT, reason="needs root to act as another local user")
def test_a_user_in_users_local_attaches_as_themself(tmp_path: Path) -> None:
    import tempfile

    from lmos.cli.control import open_connection

    base = Path(tempfile.mkdtemp(prefix="lmos-users-"))
    base.chmod(0o755)
    state = base / "s"
    config = base / "config.toml"
    config.write_text('[users]\nlocal = ["nobody"]\n')
    nobody = uid_of("nobody")

    def attach() -> str:
        async def main() -> str:
            async with open_connection(str(state), start=False) as conn:
                procs = await conn.call("ps")
                return f"{conn.uid} {sorted({p['uid'] for p in procs['procs']})}"
        return anyio.run(main)

    try:
        r = lmos(state, "up", LMOS_CONFIG=str(config))
        assert r.returncode == 0, r.stderr
        assert (state / SECRET).stat().st_mode & 0o777 == 0o644
        said = as_user(nobody, attach)
        assert said.startswith(f"{nobody} "), said  # attached, acting as nobody

        def down() -> str:
            async def main() -> str:
                async with open_connection(str(state), start=False) as conn:
                    return str(await conn.op("down", force=True))
            return anyio.run(main)

        assert as_user(nobody, down) == "EPERM: only root (who started it) or root may stop this kernel"
        assert kernel_pid(str(state)) is not None and pid_alive(kernel_pid(str(state)) or 0)
    finally:
        stop_kernel(state)
        shutil.rmtree(base, ignore_errors=True)


def test_attaching_imports_no_model_code(tmp_path: Path) -> None:
    """A front end on a running kernel loads no model: neither torch nor transformers is imported."""
    state = tmp_path / "s"
    probe = ("import sys\nfrom lmos.cli import _invoke\n"
             f"rc = _invoke(['run', 'echo', 'hi', '--state-dir', {str(state)!r}], 'lmos')\n"
             "rc += _invoke(['shell', '-c', 'ps', '--state-dir', " + repr(str(state)) + "], 'lmosh')\n"
             "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
             "print('RESULT', rc, heavy)\n")
    with kernel_up(state, "--model", "builtin"):
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                           env=env(tmp_path, LMOS_MODEL="builtin"), check=False)
        assert r.stdout.splitlines()[-1] == "RESULT 0 []", r.stdout + r.stderr
