"""A small OpenAI-compatible server that injects faults, for the remote driver's tests.

It runs in threads of its own (stdlib ``http.server``), so it keeps answering
whatever the kernel's event loop does, and it can misbehave in ways a real
server only does by accident: answer slowly, drop the connection in the middle
of a stream, answer 500 or 429, refuse the key, stream forever until the client
goes away.  Each request takes the next behaviour from ``script`` (then
``default``); what happened is recorded for the test to check.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Stub:
    def __init__(self, *, models: tuple[str, ...] = ("stub",), key: str | None = None,
                 window: int = 4096) -> None:
        self.models = models
        self.key = key
        self.window = window
        self.script: list[str] = []  # behaviours of the next requests, in order
        self.default = "ok"
        self.reply: Callable[[dict[str, Any]], str] = lambda body: "hello from the stub"
        self.delay = 0.0  # seconds between streamed pieces
        self.slow_seconds = 2.0  # "slow": silence before the first byte
        self.retry_after = 0.3  # "429": the Retry-After header
        self.tool_call = ("calc", '{"expr": "6 * 7"}')  # "tool": the call returned
        self.token_prompts = False  # accept token-id prompts on /v1/completions
        self.tool_preamble = ""  # "tool": text streamed before the call
        self.lock = threading.Lock()
        self.requests: list[tuple[float, str, dict[str, Any]]] = []  # (time, path, body)
        self.peers: list[int] = []  # the client's port of each request (one per connection)
        self.behaviours: list[str] = []
        self.disconnects = 0  # streams the client closed before their end
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""

    def next_behaviour(self) -> str:
        with self.lock:
            b = self.script.pop(0) if self.script else self.default
            self.behaviours.append(b)
            return b


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # small SSE chunks on a kept-alive connection: no 40 ms stalls

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _authorized(self) -> bool:
            if stub.key is None or self.headers.get("authorization") == f"Bearer {stub.key}":
                return True
            self._json(401, {"error": {"message": "Incorrect API key provided",
                                       "type": "invalid_request_error"}})
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "max_model_len": stub.window} for m in stub.models]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
            if not self._authorized():
                return
            if body.get("model") not in stub.models:
                self._json(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
                return
            chat = self.path.endswith("/chat/completions")
            if not chat and not isinstance(body.get("prompt"), str) and not stub.token_prompts:
                self._json(400, {"error": {"message": "prompt must be a string"}})
                return
            with stub.lock:
                stub.requests.append((time.monotonic(), self.path, body))
                stub.peers.append(int(self.client_address[1]))
            b = stub.next_behaviour()
            if b == "500":
                self._json(500, {"error": {"message": "internal error"}})
                return
            if b == "429":
                self._json(429, {"error": {"message": "rate limited"}},
                           {"retry-after": str(stub.retry_after)})
                return
            with stub.lock:
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            try:
                self._stream(body, b, chat)
            except (BrokenPipeError, ConnectionResetError):
                with stub.lock:
                    stub.disconnects += 1
                self.close_connection = True
            finally:
                with stub.lock:
                    stub.in_flight -= 1

        def _chunk(self, doc: Any) -> None:
            data = f"data: {doc if isinstance(doc, str) else json.dumps(doc)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _piece(self, text: str, chat: bool, finish: str | None = None) -> None:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": text} if text else {}
            else:
                choice["text"] = text
            self._chunk({"object": "chunk", "choices": [choice]})

        def _stream(self, body: dict[str, Any], b: str, chat: bool) -> None:
            if b == "slow":
                time.sleep(stub.slow_seconds)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            if b == "drop0":
                self.close_connection = True
                return
            if b == "forever":
                while True:
                    self._piece("la ", chat)
                    time.sleep(0.01)
            pieces = [p + " " for p in stub.reply(body).split(" ")]
            pieces[-1] = pieces[-1][:-1]
            limit = int(body.get("max_tokens") or 1 << 30)
            finish = "stop"
            if len(pieces) > limit:
                pieces, finish = pieces[:limit], "length"
            if b == "tool":
                if stub.tool_preamble:
                    self._piece(stub.tool_preamble, chat)
                name, args = stub.tool_call
                self._chunk({"object": "chunk", "choices": [{"index": 0, "finish_reason": None, "delta": {
                    "tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                    "function": {"name": name, "arguments": args[:5]}}]}}]})
                self._chunk({"object": "chunk", "choices": [{"index": 0, "finish_reason": None, "delta": {
                    "tool_calls": [{"index": 0, "function": {"arguments": args[5:]}}]}}]})
                pieces, finish = [], "tool_calls"
            for i, piece in enumerate(pieces):
                if b == "drop" and i == 2:
                    self.close_connection = True
                    return
                self._piece(piece, chat)
                if stub.delay:
                    time.sleep(stub.delay)
            self._piece("", chat, finish)
            usage = {"prompt_tokens": 5, "completion_tokens": len(pieces) + 1, "total_tokens": 0}
            self._chunk({"object": "chunk", "choices": [], "usage": usage})
            self._chunk("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # (the default 5 resets connections when many clients connect at once)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that went away (the tests make them go away on purpose)


@contextmanager
def running(stub: Stub) -> Iterator[Stub]:
    """Serve ``stub`` on 127.0.0.1 (an ephemeral port) for the block; ``stub.url`` is its /v1."""
    server = _Server(("127.0.0.1", 0), _handler(stub))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
