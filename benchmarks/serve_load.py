"""Load on ``lmos serve``: the official ``openai`` SDK (``AsyncOpenAI``) at 1, 16 and 64 concurrent clients.

The benchmark starts its own server (``python -m lmos.cli serve``) on 127.0.0.1, a free port,
a private temporary state directory and a random API token, with the built-in model unless
``--model`` says otherwise, and stops it at the end, on error and on Ctrl-C too: the serving
front end, then the kernel process it started (``lmos down --force``, then by its pid).

For each concurrency level, plain and streamed requests to ``/v1/chat/completions`` are run
for ``--duration`` seconds each (every client loops: send, wait, send), alternately, so that a
burst of load on a shared machine falls on both.  Per cell: requests/s, completion tokens/s
(from ``usage``; streamed requests ask for it with ``stream_options.include_usage``), latency
p50/p99, and for streamed requests time to first token p50/p99 (the first chunk with content or
a tool call).  Failed requests are counted, with the first error.  Progress goes to stderr; the
last line on stdout is one JSON object.  Exit 1 when a cell completed no request at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

PROMPTS = [
    "What is 17 times 23?",
    "Say hello to the team.",
    "Give me one tip for writing clear emails.",
    "How many days are in a leap year?",
    "Name a colour of the sky at sunset.",
    "What is the capital of France?",
    "Write a short greeting for a birthday card.",
    "What time zone is UTC+1?",
]
READY = re.compile(r"serving the HTTP API on http://[^:]+:(\d+)/v1.*kernel pid (\d+)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]


class Server:
    """``lmos serve`` in a child process, with a kernel process of its own state directory."""

    def __init__(self, model: str, start_timeout: float) -> None:
        self.model, self.start_timeout = model, start_timeout
        self.home = tempfile.mkdtemp(prefix="lmos-serve-load-")
        self.state = os.path.join(self.home, "state")
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen[str] | None = None
        self.kernel_pid: int | None = None
        self.port = 0
        self.lines: list[str] = []

    def start(self) -> None:
        env = {**os.environ, "LMOS_HOME": self.home, "LMOS_API_TOKEN": self.token}  # no user config
        cmd = [sys.executable, "-m", "lmos.cli", "serve", "--model", self.model, "--state-dir", self.state,
               "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read() -> None:  # keeps draining stderr so the server never blocks on a full pipe
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                m = READY.search(line)
                if m and not ready.is_set():
                    self.port, self.kernel_pid = int(m.group(1)), int(m.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        t0 = time.perf_counter()
        if not ready.wait(self.start_timeout) or not self.port:
            raise RuntimeError("lmos serve did not start: " + " | ".join(self.lines[-8:]))
        log(f"lmos serve on port {self.port} (kernel pid {self.kernel_pid}), ready in "
            f"{time.perf_counter() - t0:.1f}s")

    def stop(self) -> None:
        """Stop the front end, then make sure the kernel it started is gone; remove the state."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.kernel_pid is not None and _alive(self.kernel_pid):
            subprocess.run([sys.executable, "-m", "lmos.cli", "down", "--force", "--state-dir", self.state],
                           env={**os.environ, "LMOS_HOME": self.home}, capture_output=True, timeout=60,
                           check=False)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                deadline = time.monotonic() + 10
                while _alive(self.kernel_pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _alive(self.kernel_pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.kernel_pid, sig)
        shutil.rmtree(self.home, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone (its parent, the serving front end, has exited or will reap it)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    return True


async def one_request(client: Any, i: int, stream: bool, max_tokens: int, cell: dict[str, Any]) -> None:
    ask = dict(model="default", messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
               max_tokens=max_tokens, temperature=0)
    t0 = time.perf_counter()
    try:
        if stream:
            first: float | None = None
            tokens = 0
            opts = {"include_usage": True}
            s = await client.chat.completions.create(**ask, stream=True, stream_options=opts)
            async for chunk in s:
                if first is None and chunk.choices:
                    d = chunk.choices[0].delta
                    if d.content or d.tool_calls:
                        first = time.perf_counter() - t0
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            if first is not None:
                cell["ttft"].append(first)
        else:
            r = await client.chat.completions.create(**ask)
            tokens = r.usage.completion_tokens if r.usage else 0
    except Exception as exc:  # counted, not fatal: a server under load may refuse some requests
        cell["errors"] += 1
        cell.setdefault("first_error", f"{type(exc).__name__}: {exc}"[:300])
        return
    cell["latency"].append(time.perf_counter() - t0)
    cell["tokens"] += tokens


async def run_cell(client: Any, clients: int, stream: bool, duration: float,
                   max_tokens: int) -> dict[str, Any]:
    """``clients`` loops sending requests until ``duration`` has passed; in-flight ones finish."""
    cell: dict[str, Any] = {"latency": [], "ttft": [], "tokens": 0, "errors": 0}
    deadline = time.perf_counter() + duration
    counter = iter(range(10**9))

    async def loop() -> None:
        while time.perf_counter() < deadline:
            await one_request(client, next(counter), stream, max_tokens, cell)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    wall = time.perf_counter() - t0
    done = len(cell["latency"])
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    out = {"requests": done, "errors": cell["errors"], "req_s": round(done / wall, 2),
           "tok_s": round(cell["tokens"] / wall, 1), "latency_p50_ms": ms(pct(cell["latency"], 50)),
           "latency_p99_ms": ms(pct(cell["latency"], 99))}
    if stream:
        out.update(ttft_p50_ms=ms(pct(cell["ttft"], 50)), ttft_p99_ms=ms(pct(cell["ttft"], 99)))
    if "first_error" in cell:
        out["first_error"] = cell["first_error"]
    return out


async def drive(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    from openai import AsyncOpenAI

    levels = [int(x) for x in args.clients.split(",")]
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=server.token, max_retries=0,
                         timeout=args.request_timeout)
    fig: dict[str, Any] = {}
    async with client:
        warm: dict[str, Any] = {"latency": [], "ttft": [], "tokens": 0, "errors": 0}
        for i in range(3):  # untimed: the first requests pay one-off costs (lazy imports, allocator)
            await one_request(client, i, i % 2 == 1, args.max_tokens, warm)
        if warm["errors"] == 3:
            raise RuntimeError(f"no warm-up request succeeded: {warm['first_error']}")
        for n in levels:
            for stream in (False, True):
                mode = "stream" if stream else "plain"
                cell = await run_cell(client, n, stream, args.duration, args.max_tokens)
                extra = f", TTFT p50 {cell['ttft_p50_ms']} ms p99 {cell['ttft_p99_ms']} ms" if stream else ""
                log(f"{n:>3} clients {mode:>6}: {cell['req_s']:7.2f} req/s {cell['tok_s']:8.1f} tok/s, "
                    f"latency p50 {cell['latency_p50_ms']} ms p99 {cell['latency_p99_ms']} ms{extra}, "
                    f"{cell['errors']} errors")
                fig.update({f"c{n}_{mode}_{k}": v for k, v in cell.items()})
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="builtin", help="what `lmos serve --model` gets (default: builtin)")
    ap.add_argument("--clients", default="1,16,64", help="comma-separated concurrency levels")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per level and mode")
    ap.add_argument("--max-tokens", type=int, default=32, help="max_tokens per request")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="seconds before a request fails")
    ap.add_argument("--start-timeout", type=float, default=120.0, help="seconds for the server to come up")
    args = ap.parse_args()
    try:
        import openai  # noqa: F401
    except ImportError:
        log("serve_load needs the openai SDK (the dev extra: pip install -c constraints.txt -e '.[dev]')")
        return 2

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # so that `finally` stops the server

    signal.signal(signal.SIGTERM, terminated)
    server = Server(args.model, args.start_timeout)
    fig: dict[str, Any] = {"bench": "serve_load", "model": args.model, "clients": args.clients,
                           "duration_s": args.duration, "max_tokens": args.max_tokens,
                           "route": "/v1/chat/completions"}
    try:
        server.start()
        fig.update(asyncio.run(drive(server, args)))
    except (RuntimeError, KeyboardInterrupt) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        return 2
    finally:
        server.stop()
    print(json.dumps(fig))
    return 1 if any(k.endswith("_requests") and v == 0 for k, v in fig.items()) else 0


if __name__ == "__main__":
    sys.exit(main())
