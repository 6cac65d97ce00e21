"""Sandbox per-call overhead: a trivial program's round trip through a warm pool.

Also measures the round trip of new source (a program never run before in
that worker, so the compile cache misses: what an app's first run or a new
tool pays), a run that makes one syscall, a cold ``execute`` (worker start,
lock-down, run, teardown) with and without the agent loop loaded (code apps
start such a worker per run), and, for scale, the same trivial program
compiled and executed in-process with the same policy (what isolation costs
on top).  Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

import anyio

from lmos.userland import sandbox_policy
from lmos.userland.sandbox import Extras, Sandbox, execute

TRIVIAL = "x = 1\n"
TOOL = """
import json, re
counts = {}
for qty, item in re.findall(r"(\\d+) (\\w+)", text):
    counts[item] = counts.get(item, 0) + int(qty)
report = json.dumps(sorted(counts.items()))
print(report)
"""
WARM_CALLS = 300
COLD_CALLS = 5


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered) * 1e3, 3),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1e3, 3)}


async def _echo(name: str, args: dict[str, Any]) -> Any:
    return args


async def main() -> dict[str, Any]:
    figures: dict[str, Any] = {"bench": "sandbox_overhead"}
    async with Sandbox(size=2) as sandbox:
        for _ in range(20):  # warm up both workers and the compile cache
            await sandbox.run(TRIVIAL)
        warm: list[float] = []
        for _ in range(WARM_CALLS):
            t0 = time.perf_counter()
            result = await sandbox.run(TRIVIAL)
            warm.append(time.perf_counter() - t0)
            assert result.ok, result.error
        stats = _ms(warm)
        figures["warm_call_ms_median"] = stats["median"]
        figures["warm_call_ms_p95"] = stats["p95"]
        print(f"warm round trip: {stats}", file=sys.stderr)
        calls: list[float] = []
        for _ in range(100):
            t0 = time.perf_counter()
            result = await sandbox.run("y = sys_call('echo', v=1)", syscalls=_echo)
            calls.append(time.perf_counter() - t0)
            assert result.ok, result.error
        figures["warm_call_with_1_syscall_ms_median"] = _ms(calls)["median"]
        print(f"with one syscall: {_ms(calls)}", file=sys.stderr)
        tool: list[float] = []
        for i in range(100):
            t0 = time.perf_counter()
            result = await sandbox.run(TOOL, inputs={"text": f"order {i}: 3 apples, 12 pears"})
            tool.append(time.perf_counter() - t0)
            assert result.ok, result.error
        figures["warm_call_tool_program_ms_median"] = _ms(tool)["median"]
        print(f"small tool program: {_ms(tool)}", file=sys.stderr)
        nonce = os.urandom(8).hex()  # never seen by these workers: every run compiles
        for name, body in (("new_source", TRIVIAL), ("new_source_tool_program", TOOL)):
            fresh: list[float] = []
            for i in range(100):
                source = f"{body}\n# {nonce} {i}\n"
                t0 = time.perf_counter()
                result = await sandbox.run(source, inputs={"text": f"order {i}: 3 apples, 12 pears"})
                fresh.append(time.perf_counter() - t0)
                assert result.ok, result.error
            figures[f"{name}_call_ms_median"] = _ms(fresh)["median"]
            figures[f"{name}_call_ms_p95"] = _ms(fresh)["p95"]
            print(f"{name.replace('_', ' ')} (cold compile, warm worker): {_ms(fresh)}", file=sys.stderr)
        info = sandbox.isolation
        if info is not None:
            figures["isolation"] = {"uid": info.uid, "no_new_privs": info.no_new_privs, "netns": info.netns,
                                    "dropped_root": info.dropped_root, "wall": info.wall,
                                    "landlock_abi": info.landlock_abi, "seccomp": info.seccomp}
    cold: list[float] = []
    for _ in range(COLD_CALLS):
        t0 = time.perf_counter()
        result = await execute(TRIVIAL)
        cold.append(time.perf_counter() - t0)
        assert result.ok, result.error
    figures["cold_execute_ms_median"] = _ms(cold)["median"]
    print(f"cold execute: {_ms(cold)}", file=sys.stderr)
    cold_agent: list[float] = []
    for _ in range(COLD_CALLS):
        t0 = time.perf_counter()
        result = await execute(TRIVIAL, extras=Extras(agent={}))
        cold_agent.append(time.perf_counter() - t0)
        assert result.ok, result.error
    figures["cold_execute_with_agent_loop_ms_median"] = _ms(cold_agent)["median"]
    print(f"cold execute, agent loop loaded (a code app's run): {_ms(cold_agent)}", file=sys.stderr)
    code = sandbox_policy.compile_source(TRIVIAL)
    local: list[float] = []
    for i in range(WARM_CALLS):
        t0 = time.perf_counter()
        policy = sandbox_policy.RunPolicy(output_limit=1 << 20, seed=i)
        glb = policy.globals({}, {})
        exec(code, glb)
        sandbox_policy.namespace_of(glb, (), 1 << 20)
        local.append(time.perf_counter() - t0)
    figures["in_process_ms_median"] = _ms(local)["median"]
    figures["target_warm_ms"] = 5.0
    return figures


if __name__ == "__main__":
    print(json.dumps(anyio.run(main)))
