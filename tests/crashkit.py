"""A kernel to kill: ``python tests/crashkit.py STATE_DIR N`` (used by tests/test_recovery_crash.py).

Boots a kernel on the scripted driver over ``STATE_DIR`` with the apps below
registered before boot, so the processes a killed predecessor left unfinished
are recovered (docs/durability.md).  On the first boot it starts ``N``
processes of mixed kinds (agents with tool calls, kv and file writes; parents
with two children they wait for), then waits for every one of them and prints
one JSON line: each process's outcome by its index.  ``ready`` is printed once
the boot (and recovery) is done, so a test can time its kill from there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.table import AppSpec

STEPS = 3


async def append_once(sys: Sys, path: str, line: str) -> None:
    """Append ``line``; after a crash during the append (EINPROGRESS), only if it is not there."""
    try:
        await sys.fs_write(path, line, mode="append")
    except SyscallError as exc:
        if exc.errno != Errno.EINPROGRESS:
            raise
        try:
            data = await sys.fs_read(path)
        except SyscallError:
            data = ""
        if line not in data:
            await sys.fs_write(path, line, mode="append")


async def agent(sys: Sys, argv: list[str]) -> Any:
    i = argv[0]
    out = []
    for j in range(STEPS):
        r = await sys.llm_generate(f" task {i} step {j}:", max_tokens=16, temperature=0)
        calc = await sys.tool_call("calc", {"expr": f"{len(r.text)} * {j + 1}"})
        try:
            await sys.kv_set(f"k{i}-{j}", r.text)
        except SyscallError as exc:
            if exc.errno != Errno.EINPROGRESS:  # a set is idempotent: set it again
                raise
            await sys.kv_set(f"k{i}-{j}", r.text)
        await append_once(sys, f"/log-{i}.txt", f"{j}:{r.text}\n")
        out.append([r.text, calc])
    return out


async def leaf(sys: Sys, argv: list[str]) -> Any:
    r = await sys.llm_generate(f" leaf {argv[0]}:", max_tokens=12, temperature=0)
    await append_once(sys, f"/log-{argv[0]}.txt", f"leaf:{r.text}\n")
    return r.text


async def parent(sys: Sys, argv: list[str]) -> Any:
    i = argv[0]
    kids = [await sys.spawn("crash.leaf", [f"{i}.{c}"]) for c in range(2)]
    got = [(await sys.wait(pid)).result for pid in kids]
    r = await sys.llm_generate(f" combine {got}", max_tokens=8, temperature=0)
    return [got, r.text]


def model() -> ScriptedDriver | None:
    """The scripted driver, or the built-in model with CRASHKIT_MODEL=builtin (benchmarks/recovery.py)."""
    if os.environ.get("CRASHKIT_MODEL") == "builtin":
        return None
    # the reply is a function of the whole context, as a real model's is
    return ScriptedDriver(lambda w: f"<{len(w)}:{w[-9:][::-1]}>", step_delay=0.002)


def kernel(state: str) -> lmos.Kernel:
    k = lmos.Kernel(model=model(), state_dir=state, plugins=False)
    caps = frozenset({"llm", "kv", "fs.read", "fs.write", "tool:calc", "spawn"})
    k.programs.register(AppSpec("crash.agent", agent, caps))
    k.programs.register(AppSpec("crash.leaf", leaf, caps))
    k.programs.register(AppSpec("crash.parent", parent, caps))
    return k


async def main(state: str, n: int) -> None:
    async with kernel(state) as k:
        assert k.core is not None
        j = k.core.journal
        j.flush_sync()
        rows = j.query("SELECT pid, argv FROM processes WHERE ppid=1 AND app IN ('crash.agent', "
                       "'crash.parent')")
        have = {json.loads(argv)[0]: pid for pid, argv in rows}
        print("ready", json.dumps(k.recovered), flush=True)
        for i in range(n):
            if str(i) not in have:
                app = "crash.parent" if i % 4 == 3 else "crash.agent"
                have[str(i)] = await k.spawn(app, [str(i)])
        out: dict[str, Any] = {}
        for i, pid in sorted(have.items(), key=lambda x: int(x[0])):
            if pid in k.core.procs:
                w = await k.wait(pid)
                out[i] = {"status": w.exit_status, "result": w.result, "error": w.error}
            else:
                j.flush_sync()
                state_, status, result, error = j.query(
                    "SELECT state, exit_status, result, error FROM processes WHERE pid=?", (pid,))[0]
                out[i] = {"status": status if state_ != "lost" else -1,
                          "result": json.loads(result) if result else None, "error": error}
        files = {}
        for i in range(n):
            for name in [str(i), f"{i}.0", f"{i}.1"]:
                try:
                    files[name] = (await k.syscall("fs_read", path=f"/log-{name}.txt")).data
                except SyscallError:
                    pass
        kv = {key: (await k.syscall("kv_get", key=key)).value for key in await _keys(k)}
        print(json.dumps({"procs": out, "files": files, "kv": kv}), flush=True)


async def _keys(k: lmos.Kernel) -> list[str]:
    r = await k.syscall("kv_list", prefix="k", limit=10000)
    return list(r.keys)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))
