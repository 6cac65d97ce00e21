"""A kernel in the front end's own process, behind the same interface as an attached one.

Two front ends do not attach to a kernel process:

- ``--state-dir :memory:`` keeps nothing, so there is nothing to share: the
  kernel lives and dies with the command;
- storage commands (``lmos cp``, ``lmos app ...``) with no kernel running open
  the state directory for their calls without a model (``Kernel(model=False)``)
  rather than start a kernel process that would load weights to copy a file.

:class:`LocalConnection` has the methods of :class:`lmos.cli.control.Connection`
that front ends use (``call``, ``call_raw``, ``op``, ``on_confirm``, ``pid``,
``uid``), and its calls are made the same way: as a session process of the
caller's uid, so who does what does not depend on whether a kernel was running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec

from lmos.cli import identity
from lmos.cli.control import Confirm
from lmos.cli.sessions import SessionApps
from lmos.errors import Errno, SyscallError
from lmos.syscalls.confirm import ConfirmRequest
from lmos.syscalls.types import Err
from lmos.system import Kernel


class LocalConnection:
    def __init__(self, k: Kernel, pid: int, uid: int) -> None:
        self.k = k
        self.pid = pid
        self.uid = uid
        self.info: dict[str, Any] = {"pid": pid, "uid": uid, "kernel_pid": os.getpid()}
        self.on_confirm: Confirm | None = None
        self._serving: list[anyio.CancelScope] = []

    async def confirm(self, req: ConfirmRequest) -> bool:
        if self.on_confirm is None:
            return False
        return bool(await self.on_confirm({"question": req.describe(), **msgspec.to_builtins(req)}))

    async def call_raw(self, name: str, /, **args: Any) -> bytes:
        assert self.k.sys is not None
        res = await self.k.sys.dispatch(self.pid, name, args)
        if isinstance(res, Err):
            raise SyscallError(Errno(res.errno), res.message)
        return msgspec.json.encode(res.value)

    async def call(self, name: str, /, **args: Any) -> Any:
        return msgspec.json.decode(await self.call_raw(name, **args))

    async def op(self, name: str, /, **args: Any) -> Any:
        if name != "serve":
            raise SyscallError(Errno.ENOSYS, f"{name}: there is no kernel process (state directory :memory:)")
        from lmos.server import serve as serve_http

        said: list[int] = []
        ready = anyio.Event()

        def bound(port: int) -> None:
            said.append(port)
            ready.set()

        async def run() -> None:
            await serve_http(self.k, host=str(args.get("host", "127.0.0.1")),
                             port=int(args.get("port", 8080)), uid=self.uid,
                             token=args.get("token"), ready=bound, insecure=bool(args.get("insecure")),
                             allowed_hosts=[str(h) for h in args.get("allowed_hosts") or []])

        assert self.k._tg is not None
        self.k._tg.start_soon(run)  # a bind error ends the kernel's task group, and so the command
        await ready.wait()
        return {"port": said[0]}


@contextlib.asynccontextmanager
async def open_local(state_dir: str, model: Any, *, kind: str = "lmos", as_root: bool = False,
                     quiet: bool = True) -> AsyncIterator[LocalConnection]:
    """A kernel on ``state_dir`` in this process, and a session on it for this user."""
    k = Kernel(model=model, state_dir=state_dir)
    await k.__aenter__()
    try:
        sessions = SessionApps(k)
        users = k.config.users
        if os.getuid() == 0 and k.core is not None:
            k.core.operator_aliases.add(identity.acts_as(0, False, users))
        uid = identity.acts_as(os.getuid(), as_root, users)
        pid = await sessions.open(uid, kind)
        conn = LocalConnection(k, pid, uid)
        assert k.sys is not None
        k.sys.confirm_policy = conn.confirm
        try:
            yield conn
        finally:
            await sessions.close(pid)
    finally:
        await k.aclose()  # not shielded: it exits the kernel's task group, entered in this task
