"""``lmos serve``: the HTTP API over a running kernel (see :mod:`lmos.server.app`).

uvicorn runs on the kernel's own event loop, so HTTP requests, the scheduler
and every process share one structured-concurrency tree and stop together.
Who a client is: :mod:`lmos.server.access` (keys, Host, Origin, body type);
what it may do: the kernel, through :mod:`lmos.server.session`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from lmos.errors import Errno, SyscallError
from lmos.server.access import default_hosts, is_loopback, resolve_keys
from lmos.server.app import create_app
from lmos.server.metrics import log_to_stderr
from lmos.server.session import Sessions
from lmos.server.wire import MAX_BODY

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


def config_keys(kernel: Any) -> Mapping[str, str | int]:
    """``[users] keys`` of the kernel's config (API key -> user name or uid), if it has any."""
    users = getattr(getattr(kernel, "config", None), "users", None)
    keys = getattr(users, "keys", None)
    return dict(keys) if isinstance(keys, Mapping) else {}


async def serve(kernel: Any, *, host: str = "127.0.0.1", port: int = 8080, uid: int | None = None,
                token: str | None = None, ready: Callable[[int], None] | None = None,
                keys: Mapping[str, str | int] | None = None, insecure: bool = False,
                allowed_hosts: Iterable[str] = (), max_body: int = MAX_BODY, reap_after: float = 600.0,
                keep_results: int = 1024, keep_bytes: int = 64 << 20, keep_for: float = 3600.0) -> None:
    """Serve ``kernel`` (already entered) until cancelled; ``ready(port)`` is called once listening.

    Clients act as the user their API key maps to: ``keys`` (default: the
    config's ``[users] keys``; values are user names or uids) plus ``token``,
    which maps to ``uid``.  With no key at all every client acts as ``uid``
    (default: the kernel's host user, never root by accident), which is
    refused on a non-loopback address unless ``insecure``.
    ``allowed_hosts`` adds Host header values to the listen address and
    loopback names.  A process spawned over HTTP is reaped once its result
    is read, or ``reap_after`` seconds after it ends; results stay readable
    (``keep_results`` and ``keep_bytes`` per user, ``keep_for`` seconds).

    uvicorn runs shielded and is stopped through its own ``should_exit`` flag,
    so cancelling this call shuts it down gracefully (open streams get two
    seconds) instead of abandoning its connections.
    """
    import uvicorn

    principals = resolve_keys(config_keys(kernel) if keys is None else keys)
    if uid is None:
        uid = int(getattr(getattr(kernel, "core", None), "host_uid", os.getuid()))
    sock = listen(host, port)
    try:
        bound = sock.getsockname()
        if not principals and token is None and not insecure and not is_loopback(bound[0]):
            raise SyscallError(Errno.EPERM, f"refusing to serve {host} without an API key: anyone who can "
                               f"reach it would act as uid {uid} (set [users] keys or --token, or pass "
                               "--insecure)")
        hosts = default_hosts(host, bound[1], allowed_hosts)
    except BaseException:
        sock.close()
        raise
    log_to_stderr()  # the access log, unless the program configured logging itself
    sessions = Sessions(kernel, reap_after=reap_after, keep_results=keep_results, keep_bytes=keep_bytes,
                        keep_for=keep_for)
    app = create_app(kernel, uid=uid, token=token, keys=principals, allowed_hosts=hosts, max_body=max_body,
                     sessions=sessions)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
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
                tg.start_soon(sessions.run)
                if ready is not None:
                    ready(bound[1])
                await done.wait()
            finally:
                server.should_exit = True
                tg.cancel_scope.cancel()  # the reaper; uvicorn is shielded and shuts down gracefully
    finally:
        sock.close()
        await sessions.close()
