"""Code apps: an app's Python files, run in the sandbox as the app's process.

A code app is a folder with ``app.toml`` (``entry.kind = "code"``, ``entry.source
= "main.py"``) and its ``*.py`` files.  :func:`code_main` turns it into the
``main(sys, argv)`` the kernel spawns: each run executes ``main.py`` in a fresh
sandbox worker (``lmos.userland.sandbox``: RestrictedPython in an isolated,
rlimited process, never in the kernel's), and every syscall the program makes
is forwarded to the kernel as the app's own process, so capabilities, quotas
and the audit log apply exactly as to any other program.

What the program sees (the sandbox's API for apps):

* ``argv`` (list of str) and ``manifest`` (dict: name, version, description,
  system, tools, max_steps, temperature);
* every syscall as a function taking keyword arguments (``fs_read(path=...)``,
  ``tool_call(name="calc", args={...})``) and ``sys_call(name, /, **args)``;
  replies are plain dicts;
* ``ask(messages, **gen)`` -> str and ``agent(messages, tools=None,
  max_steps=None, **sampling)`` -> ``{text, calls, steps, finish_reason}``:
  lmos's agent loop, run inside the worker over the same syscalls (``tools``
  and ``max_steps`` default to the manifest's);
* the app's other top-level ``*.py`` files as modules (``import helpers``,
  ``from helpers import f``), compiled under the same rules and imported as
  read-only namespaces;
* ``print`` streams to the process's output as it happens.

The app's return value is its top-level ``result`` (JSON data; anything else
is dropped).  A failed syscall raises ``SyscallError`` (``.errno`` such as
``"ENOENT"``, ``.message``), which the program may catch; uncaught, or raised by
the program itself (``raise SyscallError("EINVAL", "usage: ...")``), it ends
the process with that errno and ``APP: reason``.  A rule broken (a blocked
attribute, a forbidden import) ends it with EPERM and an audit record
(``sandbox_violation``); a resource limit with EDQUOT; any other exception
with EIO.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys as _sys
from collections.abc import Mapping
from typing import Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.syscalls.table import Main
from lmos.userland.manifest import Manifest
from lmos.userland.sandbox import Extras, Limits, Result, execute, violation, violations
from lmos.userland.sandbox_protocol import WORKER_SCRIPT, restricted_python_path
from lmos.userland.sandbox_proxies import module_name_error
from lmos.userland.sandbox_slots import PARKING_CALLS, worker_slots

# Per run of a code app.  Wall time spent in syscalls (the model, waits, IPC) does not
# count here; the manifest's max_wall_seconds bounds the whole process.
LIMITS = Limits(cpu_seconds=60.0, wall_seconds=120.0, memory_bytes=512 << 20, output_bytes=1 << 20,
                max_syscalls=100_000)
CHECK_TIMEOUT = 60.0
_LIMIT_MARKS = ("limit exceeded", "MemoryError")
_ERRNO_PREFIX = re.compile(r"^\w+: [A-Z0-9]+: ")
_checked: set[str] = set()  # hashes of file sets that compiled (the built-ins are checked once per process)


def _program(m: Manifest, files: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The entry's source and the other top-level ``*.py`` files as modules."""
    e = m.entry
    if e.kind != "code":
        raise SyscallError(Errno.EINVAL, f"{m.name}: not a code app (entry.kind = {e.kind!r})")
    source = e.code if e.code is not None else files.get(e.source or "")
    if source is None:
        raise SyscallError(Errno.ENOENT, f"{m.name}: entry.source {e.source!r} is not in the app")
    modules: dict[str, str] = {}
    for rel, text in sorted(files.items()):
        if not rel.endswith(".py") or "/" in rel or (e.code is None and rel == e.source):
            continue
        bad = module_name_error(rel[:-3])
        if bad is not None:
            raise SyscallError(Errno.EINVAL, f"{m.name}: {rel}: {bad}")
        modules[rel[:-3]] = text
    return source, modules


def manifest_info(m: Manifest) -> dict[str, Any]:
    """The ``manifest`` input: what an app may want to know about itself."""
    return {"name": m.name, "version": m.version, "description": m.description, "system": m.system,
            "tools": list(m.tools), "max_steps": m.max_steps, "temperature": m.temperature}


def _syscall_names() -> list[str]:
    from lmos.syscalls.registry import TABLE

    return sorted(TABLE)


def failure(app: str, r: Result) -> SyscallError:
    """The error that ends a code app's process: errno, then ``APP: reason``."""
    error = r.error or "failed"
    if r.errno is not None:  # a SyscallError the program raised or let through (its errno, if a real one)
        errno = Errno.__members__.get(r.errno)
        if errno is None:
            return SyscallError(Errno.EIO, f"{app}: {error}")
        return SyscallError(errno, f"{app}: {_ERRNO_PREFIX.sub('', error, count=1)}")
    if error.startswith("compile error:"):
        return SyscallError(Errno.EINVAL, f"{app}: {error}")
    if violation(r) is not None:
        return SyscallError(Errno.EPERM, f"{app}: blocked by the sandbox: {error}")
    if any(mark in error for mark in _LIMIT_MARKS):
        return SyscallError(Errno.EDQUOT, f"{app}: {error}")
    return SyscallError(Errno.EIO, f"{app}: {error}")


def code_main(manifest: Manifest, files: Mapping[str, str]) -> Main:
    """The ``main(sys, argv)`` of code app ``manifest`` whose files are ``files``
    (relative path -> text; ``entry.source`` among them unless the entry is inline)."""
    source, modules = _program(manifest, files)
    info = manifest_info(manifest)
    extras = Extras(modules=modules, echo=True, only=["result"],
                    agent={"tools": list(manifest.tools), "max_steps": manifest.max_steps,
                           "temperature": manifest.temperature})
    name = manifest.name

    async def main(sys: Any, argv: list[str]) -> Any:
        async def handler(call: str, payload: dict[str, Any]) -> Any:
            if call == "exit":  # it would end this coroutine, not the program in the worker
                raise SyscallError(Errno.ENOSYS, "a code app ends by finishing (its `result` is returned) "
                                   "or by raising SyscallError")
            if call in PARKING_CALLS:  # waiting for another process: lend the slot meanwhile
                async with worker_slots().parking(me.uid, me.pid):
                    return await sys.call(call, **payload)
            return await sys.call(call, **payload)

        me = await sys.call("getpid")  # the run holds one of this uid's worker slots
        r = await execute(source, limits=LIMITS, syscalls=handler, syscall_names=_syscall_names(),
                          inputs={"argv": list(argv), "manifest": info}, extras=extras, owner=me.uid,
                          clock=True, parent=me.ppid)
        # every guard refusal, even one the program caught; a SyscallError it raised is not one
        for bad in violations(r) if r.errno is None or r.refused else []:
            await sys.report_violation(f"{name}: {bad}")
        if not r.ok:
            raise failure(name, r)
        return r.namespace.get("result")

    return main


def _first_error(rel: str, message: str) -> str:
    """``main.py: line 3: ...`` from the compiler's ``main.py: Line 3: ...; Line 5: ...``."""
    first = message.split("; Line ", 1)[0]
    first = first.removeprefix(f"{rel}: ")
    return f"{rel}: {first[0].lower()}{first[1:]}" if first.startswith("Line ") else f"{rel}: {first}"


def compile_check(files: Mapping[str, str]) -> None:
    """Refuse (EINVAL, ``FILE: line N: reason``) if any ``*.py`` of ``files`` does not
    compile under the sandbox's rules, or is named so it could not be imported as
    a module of the app (``json.py``, ``_x.py``).

    Untrusted source is never compiled in the kernel's process (a hostile one can
    crash or stall the compiler): this runs a locked-down sandbox worker in check
    mode and waits for it, so it blocks; from async code use :func:`check_async`.
    A file set that passed is remembered for the life of the process."""
    py = {rel: text for rel, text in sorted(files.items()) if rel.endswith(".py")}
    for rel in py:
        bad = module_name_error(rel[:-3]) if "/" not in rel else None
        if bad is not None:
            raise SyscallError(Errno.EINVAL, f"{rel}: {bad}")
    if not py:
        return
    key = hashlib.sha256(json.dumps(py, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()
    if key in _checked:
        return
    config = {"cpu_ceiling": 20.0, "cpu_lifetime": 30.0, "memory_ceiling": LIMITS.memory_bytes, "check": True}
    cmd = [_sys.executable, "-I", "-S", "-B", "-X", "utf8", str(WORKER_SCRIPT), restricted_python_path(),
           json.dumps(config)]
    request = json.dumps({"op": "check", "files": py}).encode("utf-8", "surrogatepass") + b"\n"
    try:
        proc = subprocess.run(cmd, input=request, capture_output=True, timeout=CHECK_TIMEOUT, env={}, cwd="/",
                              start_new_session=True, check=False)
    except subprocess.TimeoutExpired:
        raise SyscallError(Errno.EINVAL, f"compiling the app took over {CHECK_TIMEOUT:g}s") from None
    try:
        reply = json.loads(proc.stdout.splitlines()[-1])
        errors = reply["errors"]
    except (IndexError, ValueError, KeyError, TypeError):
        status = proc.returncode
        raise SyscallError(Errno.EINVAL, f"the sandbox compiler failed (status {status})") from None
    for rel in py:
        if rel in errors:
            raise SyscallError(Errno.EINVAL, _first_error(rel, str(errors[rel])))
    _checked.add(key)


async def check_async(files: Mapping[str, str]) -> None:
    """:func:`compile_check` without blocking the event loop."""
    await anyio.to_thread.run_sync(compile_check, dict(files))

