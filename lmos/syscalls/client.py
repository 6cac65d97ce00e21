"""``Sys``: how a program makes syscalls.

A program receives a ``Sys`` bound to its pid.  Every method is a thin typed
wrapper over :meth:`Syscalls.call`, so programs get return types and errors as
:class:`lmos.errors.SyscallError`, while the kernel still sees one dispatch path.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from lmos.errors import Errno, SyscallError
from lmos.syscalls.audit import host_audit
from lmos.syscalls.types import GenerateReply, PidInfo, ProcInfo, TimeReply, TraceEntry, WaitReply

if TYPE_CHECKING:
    from lmos.syscalls.table import Syscalls


class Sys:
    def __init__(self, table: Syscalls, pid: int) -> None:
        self._table = table
        self.pid = pid

    async def call(self, call: str | int, /, **args: Any) -> Any:
        """Any syscall by name or number, with keyword arguments."""
        return await self._table.call(self.pid, call, args)

    async def llm_generate(self, prompt: str | None = None, **args: Any) -> GenerateReply:
        if prompt is not None:
            args["prompt"] = prompt
        r: GenerateReply = await self.call("llm_generate", **args)
        return r

    async def getpid(self) -> PidInfo:
        r: PidInfo = await self.call("getpid")
        return r

    async def report_violation(self, detail: str) -> None:
        """Host side of a sandbox run (``lmos.userland.codeapp``): audit that a guard refused
        something.  Not a syscall a program can make (see :mod:`lmos.syscalls.audit`)."""
        with host_audit():
            await self._table.call(self.pid, "audit", {"event": "sandbox_violation", "detail": detail})

    async def exit(self, status: int = 0, result: Any = None) -> None:
        await self.call("exit", status=status, result=result)

    async def spawn(self, app: str, argv: list[str] | None = None, **args: Any) -> int:
        r = await self.call("spawn", app=app, argv=list(argv or []), **args)
        return int(r.pid)

    async def wait(self, pid: int | None = None, timeout: float | None = None) -> WaitReply:
        r: WaitReply = await self.call("wait", pid=pid, timeout=timeout)
        return r

    async def kill(self, pid: int, signal: str | int = "TERM") -> None:
        await self.call("kill", pid=pid, signal=signal)

    async def ps(self) -> list[ProcInfo]:
        r = await self.call("ps")
        return list(r.procs)

    async def sleep(self, seconds: float) -> None:
        await self.call("sleep", seconds=seconds)

    async def time(self) -> TimeReply:
        r: TimeReply = await self.call("time")
        return r

    async def trace(self, pid: int | None = None, limit: int = 100) -> list[TraceEntry]:
        r = await self.call("trace", pid=pid, limit=limit)
        return list(r.entries)

    async def chan_open(self, name: str, capacity: int = 64) -> int:
        r = await self.call("chan_open", name=name, capacity=capacity)
        return int(r.chan)

    async def send(self, chan: int, data: Any, timeout: float | None = None) -> None:
        await self.call("send", chan=chan, data=data, timeout=timeout)

    async def recv(self, chan: int, timeout: float | None = None) -> Any:
        r = await self.call("recv", chan=chan, timeout=timeout)
        return r.data

    async def chan_close(self, chan: int) -> None:
        await self.call("chan_close", chan=chan)

    # -- context memory (syscalls/mem.py) --------------------------------------
    async def mem_stat(self, pid: int | None = None, pages: bool = False) -> Any:
        return await self.call("mem_stat", pid=pid, pages=pages)

    async def mem_page_in(self, page_ids: list[int]) -> list[int]:
        r = await self.call("mem_page_in", page_ids=list(page_ids))
        return list(r.paged_in)

    async def mem_recall(self, query: str, k: int = 3, page_in: bool = True) -> Any:
        return await self.call("mem_recall", query=query, k=k, page_in=page_in)

    async def mem_read(self, name: str | None = None) -> dict[str, str]:
        r = await self.call("mem_read", name=name)
        return dict(r.fields)

    async def mem_write(self, name: str, value: str | None) -> None:
        await self.call("mem_write", name=name, value=value)

    async def mem_ctl(self, **settings: Any) -> Any:
        return await self.call("mem_ctl", **settings)

    async def mem_append(self, text: str, role: str = "user", pin: bool = False) -> list[int]:
        r = await self.call("mem_append", text=text, role=role, pin=pin)
        return list(r.pages)

    # -- files and tools (lmos.syscalls.fs, lmos.syscalls.tool) ------------------
    async def fs_read(self, path: str) -> str:
        r = await self.call("fs_read", path=path)
        return str(r.data)

    async def fs_read_bytes(self, path: str) -> bytes:
        """The file's exact bytes (``fs_read`` with ``binary``)."""
        r = await self.call("fs_read", path=path, binary=True)
        return base64.b64decode(r.data_b64)

    async def fs_write(self, path: str, data: str, mode: str = "overwrite") -> int:
        r = await self.call("fs_write", path=path, data=data, mode=mode)
        return int(r.size)

    async def fs_write_bytes(self, path: str, data: bytes, mode: str = "overwrite") -> int:
        """Write bytes exactly (``fs_write`` with ``data_b64``); returns the file's size."""
        r = await self.call("fs_write", path=path, data_b64=base64.b64encode(data).decode("ascii"), mode=mode)
        return int(r.size)

    async def fs_list(self, path: str = "/", recursive: bool = False) -> list[Any]:
        r = await self.call("fs_list", path=path, recursive=recursive)
        return list(r.entries)

    async def fs_stat(self, path: str) -> Any:
        return await self.call("fs_stat", path=path)

    async def fs_delete(self, path: str, recursive: bool = False) -> int:
        r = await self.call("fs_delete", path=path, recursive=recursive)
        return int(r.removed)

    # -- the per-user key-value store (lmos.syscalls.kv) ---------------------------
    async def kv_get(self, key: str, default: str | None = None) -> str | None:
        """The value under ``key``, or ``default`` if there is none (other errors raise)."""
        try:
            r = await self.call("kv_get", key=key)
        except SyscallError as exc:
            if exc.errno == Errno.ENOENT:
                return default
            raise
        return str(r.value)

    async def kv_set(self, key: str, value: str) -> bool:
        """Store ``value`` under ``key``; True if the key is new."""
        r = await self.call("kv_set", key=key, value=value)
        return bool(r.created)

    async def kv_list(self, prefix: str = "", limit: int = 1000) -> list[str]:
        r = await self.call("kv_list", prefix=prefix, limit=limit)
        return list(r.keys)

    async def kv_delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        r = await self.call("kv_delete", key=key)
        return bool(r.removed)

    async def tool_call(self, name: str, args: dict[str, Any] | None = None) -> str:
        r = await self.call("tool_call", name=name, args=dict(args or {}))
        return str(r.text)

    async def tool_list(self) -> list[Any]:
        r = await self.call("tool_list")
        return list(r.tools)
