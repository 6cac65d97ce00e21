"""``lmos serve``: the HTTP API over a running kernel (see :mod:`lmos.server.app`).

A front end like the CLI: it boots the ``lmos.Kernel`` facade and serves
uvicorn on the same event loop, so HTTP requests, the scheduler and every
process share one structured-concurrency tree and stop together.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.server.app import create_app

__all__ = ["create_app", "serve"]


def listen(host: str, port: int) -> socket.socket:
    """Bind here, so a taken port is one clear error instead of uvicorn exiting the process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        # an unknown host name is a bad argument; a taken or forbidden port is a busy resource
        errno = Errno.EINVAL if isinstance(exc, socket.gaierror) else Errno.EBUSY
        raise SyscallError(errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(kernel: Any, *, host: str = "127.0.0.1", port: int = 8080, uid: int = 0,
                token: str | None = None, ready: Callable[[int], None] | None = None) -> None:
    """Serve ``kernel`` (already entered) until cancelled; ``ready(port)`` is called once listening.

    uvicorn runs shielded and is stopped through its own ``should_exit`` flag,
    so cancelling this call shuts it down gracefully (open streams get two
    seconds) instead of abandoning its connections.
    """
    import uvicorn

    sock = listen(host, port)
    config = uvicorn.Config(create_app(kernel, uid=uid, token=token), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    done = anyio.Event()

    async def run() -> None:
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=[sock])
            finally:
                done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                while not server.started:
                    if done.is_set():
                        raise SyscallError(Errno.EIO, f"the HTTP server on {host}:{port} failed to start")
                    await anyio.sleep(0.01)
                if ready is not None:
                    ready(sock.getsockname()[1])
                await done.wait()
            finally:
                server.should_exit = True
    finally:
        sock.close()
