"""The worker's second wall: what a program that escaped RestrictedPython could still reach.

An escape is simulated the only honest way: a process runs the worker's real
lock-down (``sandbox_wall.isolate``, as ``sandbox_worker.py`` does) and then
acts as plain, unrestricted Python, which is what an escaped program holds.
Every action is done once before the lock-down (the control: the files and the
socket really are reachable by that uid, so a wall that let them through would
fail the test) and once after.

On a host that is not root the worker keeps the user's uid.  To test that path
under a root CI, the process is started as ``nobody`` and the files it attacks
belong to ``nobody`` with mode 0600, exactly like a user's own secrets, state
database and kernel secret.  Started as root (the worker then drops to
``nobody``) the files are world-readable, so only the wall can be what stops it.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from lmos.config import SandboxConfig, load_config
from lmos.errors import Errno, SyscallError
from lmos.kernel.journal import Journal
from lmos.userland import sandbox as sandbox_mod
from lmos.userland.sandbox import Limits, Sandbox, execute
from lmos.userland.sandbox_protocol import WORKER_SCRIPT

USERLAND = str(WORKER_SCRIPT.parent)
FAST = Limits(cpu_seconds=2, wall_seconds=5, memory_bytes=256 << 20)
NOBODY = 65534

# Plain Python after the worker's lock-down; prints one JSON line: {"before": {...}, "after": {...}, ...}.
HARNESS = r"""
import ctypes, errno, json, os, socket, sys
paths = list(sys.path)
sys.path.insert(0, sys.argv[1])
import sandbox_wall
spec = json.loads(sys.argv[2])

def attempt(kind, target):
    try:
        if kind == "read":
            with open(target, "rb") as f:
                return "ok:" + f.read().decode(errors="replace")
        if kind == "list":
            return "ok:" + ",".join(sorted(os.listdir(target)))
        if kind == "create":
            with open(target, "wb") as f:
                f.write(b"")
            os.unlink(target)
            return "ok"
        if kind == "connect":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(target)
            s.close()
            return "ok"
        if kind == "vmread":  # another process's memory; EFAULT (address 0) means it was allowed
            libc = ctypes.CDLL(None, use_errno=True)
            buf = ctypes.create_string_buffer(8)
            local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
            remote = (ctypes.c_void_p * 2)(0, 8)
            if libc.process_vm_readv(int(target), local, 1, remote, 1, 0) >= 0:
                return "ok"
            err = ctypes.get_errno()
            return "ok" if err == errno.EFAULT else errno.errorcode.get(err, str(err))
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "?"

before = {f"{k} {t}": attempt(k, t) for k, t in spec["actions"]}
report = sandbox_wall.isolate(spec["config"], sandbox_wall.interpreter_paths(paths))
after = {f"{k} {t}": attempt(k, t) for k, t in spec["actions"]}
sys.stdout.write(json.dumps({"before": before, "after": after, "report": report}) + "\n")
"""


def _probe(wall: str) -> str:
    """The wall a worker gets on this host when asked for ``wall`` ("none" if it has neither)."""
    async def probe() -> str:
        async with Sandbox(size=1, limits=FAST, wall=wall, allow_weak_isolation=True) as sb:
            assert sb.isolation is not None
            return sb.isolation.wall
    return anyio.run(probe)


@pytest.fixture(scope="module")
def walls() -> dict[str, str]:
    return {w: _probe(w) for w in ("auto", "landlock", "mountns")}


def _need(walls: dict[str, str], wall: str) -> None:
    if walls[wall] == "none":
        pytest.skip(f"this host offers no {'file wall' if wall == 'auto' else wall} to a sandbox worker "
                    "(Landlock is missing or disabled, and unprivileged mount namespaces are not allowed); "
                    "untrusted code runs here only with [sandbox] allow_weak_isolation = true")


def _python_for(uid: int) -> str | None:
    """An interpreter ``uid`` may execute (this one may live under root's 0700 home)."""
    if uid == os.geteuid():
        return sys.executable
    candidates = (sys.executable, os.path.realpath(sys.executable), shutil.which("python3"),
                  "/usr/bin/python3")
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            ok = subprocess.run([candidate, "-I", "-S", "-c", "pass"], user=uid, group=uid, extra_groups=[],
                                capture_output=True, timeout=30, env={}, cwd="/").returncode == 0
        except OSError:
            ok = False
        if ok:
            return candidate
    return None


class Target:
    """What an escaped worker goes after, owned by ``uid``: a user's private file, a state
    directory with a real database, the kernel's secret and a listening control socket."""

    def __init__(self, uid: int, python: str) -> None:
        self.uid = uid
        self.python = python
        private = uid != 0  # as root the files are world-readable: only the wall may stop the reads
        self.root = Path(tempfile.mkdtemp(prefix="lmos-wall-"))
        self.value = "lmos-wall-" + secrets.token_hex(8)
        self.home = self.root / "home"
        self.home.mkdir()
        self.secret = self.home / "secret.txt"
        self.secret.write_text(self.value)
        self.state = self.root / "state"
        Journal.open(str(self.state)).close()
        (self.state / "kernel.secret").write_text(self.value)
        self.sock_path = self.state / "lmos.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.sock_path))
        self.listener.listen(8)
        for path in (self.root, self.home, self.state):
            os.chmod(path, 0o700 if private else 0o755)
        if not private:
            os.chmod(self.home, 0o777)  # a root worker becomes nobody: let nobody write here but for the wall
        for path in (self.secret, self.state / "kernel.secret", self.state / "lmos.db"):
            os.chmod(path, 0o600 if private else 0o644)
        os.chmod(self.sock_path, 0o600 if private else 0o666)
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, uid, uid, follow_symlinks=False)

        # The kernel process, as far as the worker can tell: the same uid, the secret in memory.
        self.kernel = subprocess.Popen(["sleep", "120"], env={"LMOS_SECRET": self.value}, user=uid or NOBODY,
                                       group=uid or NOBODY, extra_groups=[] if os.geteuid() == 0 else None)

    def actions(self) -> list[tuple[str, str]]:
        return [("read", str(self.secret)), ("read", str(self.state / "lmos.db")),
                ("read", str(self.state / "kernel.secret")), ("list", str(self.state)),
                ("create", str(self.home / "dropped.txt")), ("connect", str(self.sock_path)),
                ("read", f"/proc/{self.kernel.pid}/environ"), ("vmread", str(self.kernel.pid))]

    def close(self) -> None:
        self.kernel.kill()
        self.kernel.wait()
        self.listener.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(params=["self", "nobody"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "nobody":
        if os.geteuid() != 0:
            pytest.skip("starting a worker as nobody needs root (as a user, the 'self' case is this path)")
        try:
            pwd.getpwuid(NOBODY)
        except KeyError:
            pytest.skip("no nobody user")
    uid = NOBODY if request.param == "nobody" else os.geteuid()
    python = _python_for(uid)
    if python is None:
        pytest.skip(f"no Python interpreter here that uid {uid} may execute")
    t = Target(uid, python)
    yield t
    t.close()


def _escape(target: Target, wall: str) -> dict[str, Any]:
    spec = {"config": {"wall": wall, "cpu_lifetime": 60, "memory_ceiling": 1 << 30},
            "actions": target.actions()}
    as_other: dict[str, Any] = {}
    if target.uid != os.geteuid():
        as_other = {"user": target.uid, "group": target.uid, "extra_groups": []}
    proc = subprocess.run([target.python, "-I", "-S", "-B", "-c", HARNESS, USERLAND, json.dumps(spec)],
                          capture_output=True, text=True, timeout=60, env={}, cwd="/", **as_other)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    for action, outcome in out["before"].items():  # the control: without the wall, all of it works
        assert outcome.startswith("ok"), f"{action} failed even before the lock-down: {outcome}"
    assert target.value in json.dumps(out["before"])
    return out


@pytest.mark.parametrize("wall", ["landlock", "mountns"])
def test_escaped_worker_reads_no_file_and_cannot_reach_the_kernel(walls: dict[str, str], target: Target,
                                                                 wall: str) -> None:
    _need(walls, wall)
    out = _escape(target, wall)
    assert out["report"]["wall"] == wall and out["report"]["no_new_privs"]
    assert out["report"]["dropped_root"] == (target.uid == 0)
    refused = {"landlock": "EACCES", "mountns": "ENOENT"}[wall]
    after = out["after"]
    for action, outcome in after.items():
        kind = action.split()[0]
        if kind in ("connect", "vmread"):  # seccomp: no socket at all, no reading another process
            assert outcome == ("EACCES" if out["report"]["seccomp"] else refused), (action, outcome)
        else:
            assert outcome == refused, (action, outcome)
    assert target.value not in json.dumps(after)
    # The attacked kernel's files are intact and the user's own work goes on.
    assert target.secret.read_text() == target.value
    res = anyio.run(lambda: execute("x = 6 * 7", limits=FAST))
    assert res.ok and res.namespace == {"x": 42}


def test_without_a_wall_the_same_escape_reads_the_files(target: Target) -> None:
    """The control for the wall itself: lock-down without Landlock or a mount namespace
    (rlimits, the uid switch, seccomp) leaves every file the uid can read readable."""
    out = _escape(target, "none")
    assert out["report"]["wall"] == "none"
    for action, outcome in out["after"].items():
        if action.startswith(("read", "list", "create")) and "/proc/" not in action:
            assert outcome.startswith("ok"), (action, outcome)
    assert target.value in json.dumps(out["after"])


def test_worker_reports_its_wall(walls: dict[str, str]) -> None:
    _need(walls, "auto")

    async def main() -> None:
        async with Sandbox(size=1, limits=FAST) as sb:
            info = sb.isolation
            assert info is not None and info.wall == walls["auto"] and not info.weak
            assert info.wall != "landlock" or info.landlock_abi >= 1
            status = Path(f"/proc/{info.pid}/status").read_text()
            if info.seccomp:
                assert "Seccomp:\t2" in status
            res = await sb.run("import datetime\nstamp = datetime.date(2024, 5, 6).strftime('%d.%m.%Y')")
            assert res.ok and res.namespace == {"stamp": "06.05.2024"}

    anyio.run(main)


def test_weak_isolation_runs_only_when_the_operator_allows_it() -> None:
    async def main() -> None:
        with pytest.raises(SyscallError) as info:
            async with Sandbox(size=1, limits=FAST, wall="none") as sb:
                await sb.run("x = 1")
        assert info.value.errno == Errno.EPERM and "allow_weak_isolation" in info.value.message
        async with Sandbox(size=1, limits=FAST, wall="none", allow_weak_isolation=True) as sb:
            res = await sb.run("x = 1")
            assert res.ok and sb.isolation is not None and sb.isolation.weak
        before = sandbox_mod.settings()
        sandbox_mod.configure(SandboxConfig(allow_weak_isolation=True))  # what [sandbox] in config.toml does
        try:
            async with Sandbox(size=1, limits=FAST, wall="none") as sb:
                assert (await sb.run("x = 2")).namespace == {"x": 2}
        finally:
            sandbox_mod.configure(before)
        with pytest.raises(SyscallError):
            Sandbox(wall="chroot")

    anyio.run(main)


def test_sandbox_settings_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[sandbox]\nallow_weak_isolation = true\nworkers_per_uid = 3\nworkers_total = 9\n")
    cfg = load_config(path, env={})
    assert cfg.sandbox == SandboxConfig(allow_weak_isolation=True, workers_per_uid=3, workers_total=9)
    default = load_config(env={"LMOS_HOME": str(tmp_path / "nothing-here")})
    assert default.sandbox.allow_weak_isolation is False
    assert 1 <= default.sandbox.workers_per_uid <= default.sandbox.workers_total
    path.write_text("[sandbox]\nworkers_total = 0\n")
    with pytest.raises(SyscallError):
        load_config(path, env={})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_directory_is_private(tmp_path: Path) -> None:
    """A new state directory is 0700 with its database files 0600; an old one that others
    could read is tightened when a kernel opens it."""
    old = os.umask(0o022)
    os.chmod(tmp_path, 0o755)  # so that only the state directory's own modes keep others out
    try:
        fresh = tmp_path / "state"
        j = Journal.open(str(fresh))
        j.transaction_sync(lambda c: c.execute("INSERT INTO meta(key, value) VALUES('x', 'y')"))
        assert _mode(fresh) == 0o700
        names = {p.name for p in fresh.iterdir()}
        assert {"lmos.db", "lmos.db-wal", "lmos.db-shm", "lock"} <= names
        assert all(_mode(p) == 0o600 for p in fresh.iterdir())
        j.close()
        legacy = tmp_path / "legacy"
        legacy.mkdir(mode=0o755)
        for name in ("lmos.db", "lmosh_history", "config.toml"):
            (legacy / name).touch(mode=0o644)
        Journal.open(str(legacy)).close()
        assert _mode(legacy) == 0o700
        assert {"lmos.db", "lmosh_history", "config.toml", "lock"} <= {p.name for p in legacy.iterdir()}
        assert all(_mode(p) == 0o600 for p in legacy.iterdir())
    finally:
        os.umask(old)
    if os.geteuid() == 0:  # another local user cannot open the database
        python = _python_for(NOBODY)
        if python is None:
            return
        proc = subprocess.run([python, "-I", "-S", "-c", "import sys; open(sys.argv[1], 'rb')",
                               str(fresh / "lmos.db")], capture_output=True, text=True, user=NOBODY,
                              group=NOBODY, extra_groups=[], env={}, cwd="/")
        assert proc.returncode != 0 and "PermissionError" in proc.stderr


SANDBOX_AS_USER = r"""
import json, anyio
from lmos.userland.sandbox import Sandbox

async def main():
    async with Sandbox(size=1) as sb:
        res = await sb.run("import datetime\nday = datetime.date(2024, 1, 2).strftime('%A')")
        status = open(f"/proc/{sb.isolation.pid}/status").read()
        print(json.dumps({"info": {f: getattr(sb.isolation, f) for f in sb.isolation.__struct_fields__},
                          "ok": res.ok, "namespace": res.namespace, "error": res.error,
                          "seccomp": "Seccomp:\t2" in status}))

anyio.run(main)
"""


def test_the_whole_sandbox_on_a_host_that_is_not_root(walls: dict[str, str]) -> None:
    """A kernel run by a user: the worker keeps that uid (no root to drop), and the file
    wall and seccomp still go up."""
    _need(walls, "auto")
    if os.geteuid() != 0:
        uid, python, extra = os.geteuid(), sys.executable, {}
    else:
        uid, python = NOBODY, _python_for(NOBODY)
        extra = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    if python is None:
        pytest.skip("no Python interpreter here that nobody may execute")
    import msgspec

    import lmos
    path = os.pathsep.join([os.path.dirname(os.path.dirname(lmos.__file__)),
                            os.path.dirname(os.path.dirname(msgspec.__file__))])
    env = {"PYTHONPATH": path, "PATH": os.environ.get("PATH", "")}
    probe = subprocess.run([python, "-c", "import anyio, msgspec, RestrictedPython, lmos.userland.sandbox"],
                           capture_output=True, text=True, env=env, cwd="/", timeout=60, **extra)
    if probe.returncode != 0:
        pytest.skip(f"{python} as uid {uid} cannot import lmos's dependencies: {probe.stderr[-300:]}")
    proc = subprocess.run([python, "-c", SANDBOX_AS_USER], capture_output=True, text=True, env=env, cwd="/",
                          timeout=60, **extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    info = out["info"]
    assert info["uid"] == uid and not info["dropped_root"] and info["no_new_privs"]
    assert info["wall"] == walls["auto"] and out["seccomp"] == info["seccomp"]
    assert out["ok"] and out["namespace"] == {"day": "Tuesday"}, out["error"]
