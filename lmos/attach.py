"""``lmos.connect``: attach a program to the kernel process of a state directory.

The embedding API (:class:`lmos.Kernel`) runs a kernel inside the calling
program.  A program that wants to use the kernel lmosh and ``lmos run`` share
instead attaches to it, as its user, the way they do (:mod:`lmos.cli.control`);
a kernel is started when none runs (``start=False``: ENOENT instead).

    async with lmos.connect("~/.lmos") as k:
        pid = await k.spawn("echo", ["hi"], stream=True)
        async for ev in k.stream(pid):
            print(ev.kind, ev.text)
        print((await k.wait(pid)).exit_status)

Everything goes through the connection's session process, so the program's
uid applies and its processes are the session's children (they are killed if
the program detaches while they run, like jobs of a closed terminal).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from lmos.config import default_home
from lmos.syscalls.types import ProcInfo, WaitReply


class Attached:
    """A program's handle on a running kernel (see :func:`connect`)."""

    def __init__(self, conn: Any) -> None:
        from lmos.cli.remote import RemoteSys

        self.conn = conn
        self.sys = RemoteSys(conn)
        self.pid: int = conn.pid  # this program's session process
        self.uid: int = conn.uid

    async def syscall(self, call: str | int, /, **args: Any) -> Any:
        """Any syscall, as this program's session; the reply as the syscall's response type."""
        return await self.sys.call(call, **args)

    async def spawn(self, app: str, argv: list[str] | None = None, **args: Any) -> int:
        """Start ``app``; ``stream=True`` subscribes to its events at once (nothing is missed)."""
        return await self.sys.spawn(app, argv, **args)

    async def wait(self, pid: int, timeout: float | None = None) -> WaitReply:
        return await self.sys.wait(pid, timeout)

    async def kill(self, pid: int, signal: str | int = "TERM") -> None:
        await self.sys.kill(pid, signal)

    async def ps(self) -> list[ProcInfo]:
        return await self.sys.ps()

    async def status(self) -> dict[str, Any]:
        """The kernel process: pid, model, uptime, processes, front ends."""
        st: dict[str, Any] = await self.conn.op("status")
        return st

    async def stream(self, pid: int) -> AsyncIterator[Any]:
        """Events of ``pid`` (spawned with ``stream=True``, or subscribed from here on) until it ends."""
        while True:
            r = await self.sys.call("events", pid=pid, timeout=None)
            for ev in r.events:
                yield ev
            if r.ended:
                return


@contextlib.asynccontextmanager
async def connect(state_dir: str | None = None, *, model: str | None = None, start: bool = True,
                  as_root: bool = False) -> AsyncIterator[Attached]:
    """Attach to the kernel of ``state_dir`` (default ``$LMOS_HOME`` or ``~/.lmos``)."""
    from lmos.cli.control import open_connection

    d = state_dir or str(default_home())
    async with open_connection(d, model=model, as_root=as_root, kind="lmos.connect", start=start,
                               quiet=True) as conn:
        yield Attached(conn)
