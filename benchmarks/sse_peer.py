"""lmos's own server-sent events against sse-starlette's ``EventSourceResponse``, side by side.

Issue 15 asks to use sse-starlette for the streams unless measurement shows it is slower.  This
serves the same event stream two ways from one uvicorn server on loopback: ``/ours`` is what lmos's
routes do (a ``StreamingResponse`` of ``lmos.server.wire.sse`` frames), ``/peer`` is sse-starlette's
``EventSourceResponse`` of the same payloads.  One client reads each stream whole; the routes
alternate, with the same number of tries, and the best try of each is kept.  Both streams must
carry the same payloads in the same order (a mismatch exits non-zero and prints no figures).

sse-starlette is not a dependency of lmos: install it where you run this
(``pip install sse-starlette``).  Progress on stderr, one JSON line on stdout.

Usage: ``python benchmarks/sse_peer.py [--events 20000] [--tries 5]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from lmos.server.wire import sse


def payload(i: int) -> dict[str, Any]:
    """One token event, shaped like a streamed chat chunk's content."""
    return {"i": i, "text": f" tok{i % 97}", "finish_reason": None}


def app(events: int) -> Starlette:
    from sse_starlette.sse import EventSourceResponse

    async def frames() -> AsyncIterator[bytes]:
        for i in range(events):
            yield sse(None, payload(i))

    async def dicts() -> AsyncIterator[dict[str, str]]:
        for i in range(events):
            yield {"data": json.dumps(payload(i), separators=(",", ":"))}

    async def ours(request: Request) -> StreamingResponse:
        return StreamingResponse(frames(), media_type="text/event-stream")

    async def peer(request: Request) -> EventSourceResponse:
        return EventSourceResponse(dicts(), ping=3600)

    return Starlette(routes=[Route("/ours", ours), Route("/peer", peer)])


def read(client: httpx.Client, url: str) -> tuple[float, list[Any]]:
    """Seconds to read the whole stream, and its payloads in order."""
    t0 = time.perf_counter()
    got: list[Any] = []
    with client.stream("GET", url) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data:"):
                got.append(json.loads(line[5:].strip()))
    return time.perf_counter() - t0, got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--tries", type=int, default=5)
    args = ap.parse_args()
    try:
        import sse_starlette
    except ImportError:
        print("sse_peer: sse-starlette is not installed here (pip install sse-starlette)", file=sys.stderr)
        return 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app(args.events), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    want = [payload(i) for i in range(args.events)]
    best = {"ours": float("inf"), "peer": float("inf")}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            read(client, "/ours")  # warm-up, untimed
            read(client, "/peer")
            for t in range(args.tries):
                for name in (("ours", "peer") if t % 2 == 0 else ("peer", "ours")):
                    secs, got = read(client, "/" + name)
                    if got != want:
                        print(f"sse_peer: {name} delivered different payloads", file=sys.stderr)
                        return 1
                    best[name] = min(best[name], secs)
                    rate = args.events / secs
                    print(f"[sse_peer] try {t + 1} {name}: {rate:,.0f} events/s", file=sys.stderr)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    out = {"bench": "sse_peer", "events": args.events, "tries": args.tries,
           "sse_starlette": getattr(sse_starlette, "__version__", "?"),
           "ours_events_per_s": round(args.events / best["ours"]),
           "sse_starlette_events_per_s": round(args.events / best["peer"]),
           "ours_over_sse_starlette": round(best["peer"] / best["ours"], 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
