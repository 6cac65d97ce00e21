"""The escape corpus (tests/escapes/*.txt): every attempt is blocked in the sandbox.

A secret is planted where an escaped program could read it: a world-readable
file whose path the program is given, and an environment variable of this
(host) process.  Each attempt prints what it reaches, so the sandboxed run must
fail and neither stdout nor the namespace may hold the secret, a module
object's repr or the sandbox's own guard hooks.

The positive control runs every attempt marked ``# control: leaks`` in plain,
unrestricted Python and asserts that it does leak: the corpus is made of real
attacks, so a sandbox that let one through would fail its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lmos.userland.sandbox import Limits, Sandbox

pytestmark = pytest.mark.anyio
CORPUS = Path(__file__).with_name("escapes")
ATTEMPTS = sorted(CORPUS.glob("*.txt"))
MARKERS = ("<module ", "_getattr_", "guarded_getattr", "sandbox_worker")
ENV_NAME = "LMOS_SANDBOX_TEST_SECRET"

CONTROL = """
import builtins, contextlib, datetime, io, json, math, pathlib, random, re, sys
dumps = json.dumps
def sys_call(name, **args):
    return None
class SyscallError(Exception):
    def __init__(self, *args):
        super().__init__(*args)
out = {}
for path in map(pathlib.Path, sys.argv[2:]):
    g = {"__builtins__": builtins, "__name__": "__control__", "SECRET_PATH": sys.argv[1], "json": json,
         "re": re, "math": math, "random": random, "datetime": datetime, "sys_call": sys_call,
         "SyscallError": SyscallError}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            exec(compile(path.read_text(), str(path), "exec"), g)
        except BaseException as exc:
            print("raised", type(exc).__name__)
    out[path.name] = buf.getvalue()
print(dumps(out))
"""


def _header(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{path.name} has no '# {key}:' header")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@contextlib.contextmanager
def planted_secret(env_name: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(path, value): a secret file readable by any uid, and the same value in our environment
    under ``env_name`` — what an escape would try to reach."""
    value = "lmos-secret-" + secrets.token_hex(8)
    folder = tempfile.mkdtemp(prefix=prefix)
    os.chmod(folder, 0o755)
    path = Path(folder) / "secret.txt"
    path.write_text(value)
    path.chmod(0o644)
    os.environ[env_name] = value
    try:
        yield str(path), value
    finally:
        os.environ.pop(env_name, None)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def secret() -> Iterator[tuple[str, str]]:
    with planted_secret(ENV_NAME, "lmos-escape-") as found:
        yield found


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[Sandbox]:
    limits = Limits(cpu_seconds=2, wall_seconds=10, memory_bytes=256 << 20, output_bytes=1 << 16)
    async with Sandbox(size=2, limits=limits) as sandbox:
        yield sandbox


def test_corpus_is_large_and_described() -> None:
    assert len(ATTEMPTS) >= 40
    for path in ATTEMPTS:
        assert _header(path, "escape")
        assert _header(path, "control").split()[0] in ("leaks", "skip")


def test_control_attempts_do_leak_without_the_sandbox(secret: tuple[str, str]) -> None:
    path, value = secret
    leaky = [p for p in ATTEMPTS if _header(p, "control") == "leaks"]
    assert len(leaky) >= 40
    proc = subprocess.run([sys.executable, "-I", "-c", CONTROL, path, *map(str, leaky)], capture_output=True,
                          text=True, timeout=60, env={ENV_NAME: value, "PATH": os.environ.get("PATH", "")})
    assert proc.returncode == 0, proc.stderr
    outputs: dict[str, str] = json.loads(proc.stdout.splitlines()[-1])
    silent = [name for name, out in outputs.items() if value not in out and "<module " not in out]
    assert not silent, f"these attempts do not leak even unsandboxed, so they test nothing: {silent}"


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[p.stem for p in ATTEMPTS])
async def test_escape_attempt_is_blocked(pool: Sandbox, secret: tuple[str, str], attempt: Path) -> None:
    path, value = secret

    async def handler(name: str, args: dict[str, Any]) -> Any:
        return None

    res = await pool.run(attempt.read_text(), inputs={"SECRET_PATH": path}, syscalls=handler)
    seen = res.stdout + json.dumps(res.namespace)
    assert value not in seen and value not in (res.error or "")
    for marker in MARKERS:
        assert marker not in seen, f"{marker!r} reached: {res.stdout[:300]}"
    assert not res.ok, f"the attempt ran to completion: {res.stdout[:300]}"
    assert res.error is not None and "\n" not in res.error
    after = await pool.run("x = 1")  # the pool still serves
    assert after.ok
