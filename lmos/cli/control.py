"""The control socket: ``lmos ps`` / ``lmos kill`` reach a running kernel.

A kernel started by ``lmosh`` or ``lmos run`` on a state directory listens on
``STATE_DIR/lmos.sock`` (mode 0600: only its owner can connect).  Each request
is one JSON line ``{"call": NAME, "args": {...}}`` answered by one JSON line,
``{"ok": VALUE}`` or ``{"err": {"errno": N, "name": "ESRCH", "message": ...}}``;
calls are dispatched as init through the ordinary syscall table.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketStream

from lmos.errors import Errno, SyscallError
from lmos.kernel.kernel import INIT_PID
from lmos.syscalls.types import Err
from lmos.system import Kernel

MAX_LINE = 1 << 25  # a request carries a whole file (lmos cp: base64 of up to the store's limit)


def socket_path(state_dir: str) -> Path:
    return Path(state_dir).expanduser() / "lmos.sock"


async def serve(k: Kernel, path: Path) -> None:
    """Serve control requests until cancelled; removes the socket file on exit."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = await anyio.create_unix_listener(path)
    os.chmod(path, 0o600)
    try:
        async with listener:
            await listener.serve(lambda s: _handle(k, s))
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _handle(k: Kernel, stream: SocketStream) -> None:
    async with stream:
        buf = b""
        while b"\n" not in buf and len(buf) < MAX_LINE:
            try:
                buf += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
        try:
            req = msgspec.json.decode(buf.split(b"\n", 1)[0])
            call, args = req["call"], req.get("args") or {}
        except (msgspec.DecodeError, KeyError, TypeError):
            reply: dict[str, Any] = {"err": {"errno": int(Errno.EFAULT), "name": "EFAULT",
                                             "message": "bad control request"}}
        else:
            assert k.sys is not None
            res = await k.sys.dispatch(INIT_PID, call, args)
            if isinstance(res, Err):
                reply = {"err": {"errno": res.errno, "name": res.name, "message": res.message}}
            else:
                reply = {"ok": msgspec.to_builtins(res.value)}
        await stream.send(msgspec.json.encode(reply) + b"\n")


def call(state_dir: str, name: str, /, timeout: float = 10.0, **args: Any) -> Any:
    """Blocking client: one request to the kernel running on ``state_dir``."""
    path = socket_path(state_dir)
    if not path.exists():
        raise SyscallError(Errno.ENOENT, f"no kernel is running on {Path(state_dir).expanduser()} "
                           "(start one with lmosh or lmos run)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            raise SyscallError(Errno.ENOENT, f"no kernel is answering on {path}") from None
        s.sendall(msgspec.json.encode({"call": name, "args": args}) + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = msgspec.json.decode(buf)
    if "err" in reply:
        e = reply["err"]
        raise SyscallError(e["errno"], e["message"])
    return reply["ok"]
