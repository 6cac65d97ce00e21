"""What the kernel adds in front of a remote model server: lmos with the remote driver against the
same ``lmos serve`` called directly, by 16 concurrent clients, on the built-in model.

The benchmark starts ``lmos serve`` (a subprocess, built-in model, private state directory) and
runs paired, interleaved rounds.  In each round the same 16 clients (each with its own chat
prompt as token ids, greedy, ``--max-tokens``, sending ``--per-client`` requests one after
another) run twice, once *directly* (streamed ``/v1/completions`` requests over httpx from this
process) and once *through lmos* (``Kernel.complete`` calls on a kernel in this process whose
model is that server, through the remote driver: a process, its syscalls, the scheduler, the
driver's stream), the order of the two alternating from round to round so that drift in the
machine's load falls on both.  Every request's latency is from its start to its last token.

Reported: each side's p50 and p99 request latency, and the kernel's added latency per request at
p50, as the difference of the two p50s and as the median over rounds of the paired difference
of the rounds' p50s.  On a machine shared with other work, batches seconds apart see different
loads, so both figures carry that noise; the third, ``kernel_part_p50_ms``, has none of it: for
every request through lmos, its latency minus the time its stream from the server took (timed
inside the driver), i.e. what the kernel adds around the server's work in that same request.
With 16 requests arriving at once the kernel's part includes their queueing behind each other
on the kernel's one event loop; ``kernel_part_one_client_p50_ms`` is the same figure for one
client's requests in a row.  ``cpu_per_request_*_ms`` is this process's CPU time (all its
threads) per request on each side and ``added_cpu_per_request_ms`` their difference: what the
kernel and the driver cost on top of the same HTTP streaming, a figure that other jobs on the
machine blur much less than latencies.  The machine's load average is recorded beside the figures.
The target is at most 5 ms.  Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import httpx

PROMPTS = [
    "hello, who are you?", "what can you do?", "what is 2 + 2?", "tell me the time.",
    "remember that my cat is called Tom.", "what is 12 * 7?", "say hello to the team.",
    "what is the capital of France?",
]
SYSTEM = "<|system|>You are lmos, a helpful assistant with tools.<|end|>\n"
TARGET_MS = 5.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]


def start_server(home: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMOS_")}
    env["LMOS_HOME"] = home
    cmd = [sys.executable, "-m", "lmos.cli", "serve", "--model", "builtin", "--port", "0",
           "--state-dir", os.path.join(home, "state")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
    if not m:
        proc.kill()
        raise SystemExit(f"lmos serve did not start: {line.strip()}")
    return proc, f"http://127.0.0.1:{m.group(1)}/v1"


async def direct_one(client: httpx.AsyncClient, url: str, ids: list[int], max_tokens: int) -> float:
    t0 = time.perf_counter()
    body = {"model": "default", "prompt": ids, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", url + "/completions", json=body) as r:
        if r.status_code != 200:
            raise SystemExit(f"direct request failed: HTTP {r.status_code}")
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                break
    return time.perf_counter() - t0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import lmos
    from lmos.config import load_config

    home = tempfile.mkdtemp(prefix="lmos-remote-bench-")
    proc, url = start_server(home)
    try:
        cfg = load_config(env={}, state_dir=":memory:", models={"remote": {
            "url": url, "model": "default", "tokenizer": "builtin", "max_in_flight": args.clients}})
        async with lmos.Kernel(model="remote", config=cfg) as k, httpx.AsyncClient(timeout=120) as client:
            tok = k._core()[0].scheduler("default").driver.tokenizer
            assert tok is not None
            prompts = [tok.encode(SYSTEM + f"<|user|>{PROMPTS[i % len(PROMPTS)]}<|end|>\n<|assistant|>")
                       for i in range(args.clients)]

            # Time each request's stream from the server inside the driver, so that the kernel's own
            # part of every request (process, syscalls, scheduling, result) is known exactly too.
            drv: Any = k._core()[0].scheduler("default").driver
            stream_of, streamed = drv.generate, {}

            async def timed(seq_id: int, spec: Any, result: Any) -> AsyncGenerator[int, None]:
                t0 = time.perf_counter()
                try:
                    async for tok in stream_of(seq_id, spec, result):
                        yield tok
                finally:
                    streamed[seq_id] = time.perf_counter() - t0

            drv.generate = timed
            inside: list[float] = []
            cpu = {"direct": 0.0, "lmos": 0.0}  # this process's CPU time (all threads) per side

            async def via_lmos(ids: list[int]) -> float:
                t0 = time.perf_counter()
                c = await k.complete(ids, max_tokens=args.max_tokens, temperature=0)
                dt = time.perf_counter() - t0
                inside.append(dt - streamed.pop(c.pid))
                return dt

            async def batch(side: str) -> list[float]:
                """One run: every client sends its requests one after another (a closed loop)."""
                out: list[float] = []

                async def client_loop(ids: list[int]) -> None:
                    for _ in range(args.per_client):
                        out.append(await (via_lmos(ids) if side == "lmos" else
                                          direct_one(client, url, ids, args.max_tokens)))

                c0 = time.process_time()
                async with anyio.create_task_group() as tg:
                    for ids in prompts:
                        tg.start_soon(client_loop, ids)
                cpu[side] += time.process_time() - c0
                return out

            for side in ("direct", "lmos"):  # warm up both paths (connections, caches)
                await batch(side)
            inside.clear()
            cpu.update(direct=0.0, lmos=0.0)
            lat: dict[str, list[float]] = {"direct": [], "lmos": []}
            paired: list[float] = []
            for r in range(args.rounds):
                order = ("direct", "lmos") if r % 2 == 0 else ("lmos", "direct")
                got = {side: await batch(side) for side in order}
                for side in order:
                    lat[side] += got[side]
                paired.append(statistics.median(got["lmos"]) - statistics.median(got["direct"]))
                d, m = statistics.median(got["direct"]), statistics.median(got["lmos"])
                log(f"round {r + 1}/{args.rounds}: direct p50 {1e3 * d:.1f} ms, lmos p50 {1e3 * m:.1f} ms")
            concurrent = list(inside)
            inside.clear()
            for i in range(args.sequential):  # one client: the kernel's part without queueing
                await via_lmos(prompts[i % len(prompts)])
    finally:
        proc.kill()
        proc.wait(timeout=30)
    d50, l50 = pct(lat["direct"], 50), pct(lat["lmos"], 50)
    added = statistics.median(paired)
    return {"benchmark": "remote", "clients": args.clients, "rounds": args.rounds,
            "per_client": args.per_client, "max_tokens": args.max_tokens,
            "requests_per_side": len(lat["direct"]),
            "direct_p50_ms": round(1e3 * d50, 2), "direct_p99_ms": round(1e3 * pct(lat["direct"], 99), 2),
            "lmos_p50_ms": round(1e3 * l50, 2), "lmos_p99_ms": round(1e3 * pct(lat["lmos"], 99), 2),
            "added_p50_ms": round(1e3 * (l50 - d50), 2), "added_p50_paired_ms": round(1e3 * added, 2),
            "kernel_part_p50_ms": round(1e3 * pct(concurrent, 50), 2),
            "kernel_part_p99_ms": round(1e3 * pct(concurrent, 99), 2),
            "kernel_part_one_client_p50_ms": round(1e3 * pct(inside, 50), 2) if inside else None,
            "cpu_per_request_direct_ms": round(1e3 * cpu["direct"] / len(lat["direct"]), 3),
            "cpu_per_request_lmos_ms": round(1e3 * cpu["lmos"] / len(lat["lmos"]), 3),
            "added_cpu_per_request_ms": round(1e3 * (cpu["lmos"] - cpu["direct"]) / len(lat["lmos"]), 3),
            "load_average": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
            "target_ms": TARGET_MS, "within_target": 1e3 * pct(concurrent, 50) <= TARGET_MS}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=4, help="requests each client sends per run")
    ap.add_argument("--sequential", type=int, default=20, help="requests from one client, after the rounds")
    result = anyio.run(main, ap.parse_args())
    print(json.dumps(result))
