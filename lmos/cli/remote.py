"""A ``Sys`` whose syscalls travel over the control socket.

lmosh runs in the front end's own process (its terminal, jobs and history are
there) and makes its syscalls as its session process in the kernel process.
:class:`RemoteSys` is :class:`lmos.syscalls.client.Sys` with ``call``
overridden: each reply is decoded into the syscall table's response type, so
the shell (and any program written against ``Sys``) cannot tell it from the
in-process one.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lmos.cli.control import Connection
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.registry import BY_NR, TABLE


class RemoteSys(Sys):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pid = conn.pid
        self.uid = conn.uid

    async def call(self, call: str | int, /, **args: Any) -> Any:
        import lmos.syscalls.table  # noqa: F401  (fills the registry with every family)

        d = BY_NR.get(call) if isinstance(call, int) and not isinstance(call, bool) else TABLE.get(str(call))
        if d is None:
            raise SyscallError(Errno.ENOSYS, f"no such syscall: {call!r}")
        raw = await self.conn.call_raw(d.name, **args)
        try:
            return msgspec.json.decode(raw, type=d.resp)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise SyscallError(Errno.EFAULT, f"{d.name}: undecodable reply: {exc}") from None
