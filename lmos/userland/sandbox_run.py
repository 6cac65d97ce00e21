"""The host's side of one sandbox worker: its pipe (``_Worker``) and one run on it (``_Run``).

A run sends the request as one JSON line, serves the syscalls the program
makes while it runs (awaiting the host's handler, which checks capabilities),
enforces the wall clock by killing the worker's process group, and turns every
way a program can fail into a :class:`Result`.  Workers are hostile: every
message is size-bounded and schema-checked.  The pool that starts and reuses
workers is :class:`lmos.userland.sandbox.Sandbox`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from lmos.errors import Errno, SyscallError
from lmos.userland.sandbox_protocol import Call, Done, Isolation, Limits, Result, error_reply
from lmos.userland.sandbox_worker import EXIT_CPU

SyscallHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class _ProtocolError(Exception):
    pass


def _death_message(code: int | None, limits: Limits) -> str:
    if code in (-signal.SIGXCPU, EXIT_CPU):
        return f"cpu time limit exceeded ({limits.cpu_seconds}s)"
    if code == -signal.SIGXFSZ:
        return "file size limit exceeded"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"sandbox worker died ({name})"
    return f"sandbox worker exited unexpectedly (status {code})"


class _Worker:
    """One worker process and its channel."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None and process.stdin is not None
        self.reader = BufferedByteReceiveStream(process.stdout)
        self.info: Isolation | None = None
        self.cpu = 0.0  # cumulative CPU seconds at the last report
        self.runs = 0

    async def send(self, data: bytes) -> bool:
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True

    async def recv(self, max_bytes: int) -> bytes | None:
        try:
            return await self.reader.receive_until(b"\n", max_bytes)
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError,
                anyio.ClosedResourceError):
            return None
        except anyio.DelimiterNotFound:
            raise _ProtocolError("oversized message") from None

    def cpu_now(self) -> float | None:
        """Cumulative CPU of the (possibly dying) process, from /proc."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    async def kill(self) -> int | None:
        """SIGKILL the worker's whole process group and reap it."""
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            with anyio.move_on_after(5):
                await self.process.aclose()
        return self.process.returncode


class _Run:
    """One run on one worker: the request, the syscall service and the verdict."""

    def __init__(self, worker: _Worker, request: bytes, limits: Limits, handler: SyscallHandler | None,
                 names: frozenset[str] | None) -> None:
        self.worker, self.request, self.limits = worker, request, limits
        self.handler, self.names = handler, names
        self.start = time.monotonic()
        self.waited = 0.0
        self.calls = 0
        self.quota_hit = False
        self.max_bytes = 16 * limits.output_bytes + (40 << 20)

    def fail(self, error: str, cpu: float | None) -> Result:
        return Result(ok=False, error=error, cpu_seconds=max(cpu or 0.0, 0.0),
                      wall_seconds=time.monotonic() - self.start, syscalls=self.calls,
                      syscall_seconds=self.waited)

    async def _die(self, error: str | None) -> Result:
        """The worker is dead or must die: kill it and explain."""
        total = self.worker.cpu_now()
        code = await self.worker.kill()
        cpu = None if total is None else total - self.worker.cpu
        if cpu is None and code in (-signal.SIGXCPU, EXIT_CPU):
            cpu = self.limits.cpu_seconds
        return self.fail(error or _death_message(code, self.limits), cpu)

    def _remaining(self) -> float:
        """Wall-clock budget left; time spent in syscall handlers is given back."""
        return max(self.start + self.limits.wall_seconds + self.waited - time.monotonic(), 0.0)

    async def _send(self, data: bytes) -> Result | None:
        """Send within the deadline (a hostile worker may stop reading); a Result means it died."""
        with anyio.move_on_after(self._remaining()):
            if await self.worker.send(data):
                return None
            return await self._die(None)
        return await self._die(f"wall-clock limit exceeded ({self.limits.wall_seconds}s)")

    async def drive(self) -> tuple[Result, bool]:
        """Returns the result and whether the worker may be reused."""
        self.worker.runs += 1
        failed = await self._send(self.request)
        if failed is not None:
            return failed, False
        while True:
            line: bytes | None = None
            with anyio.move_on_after(self._remaining()) as scope:
                try:
                    line = await self.worker.recv(self.max_bytes)
                except _ProtocolError:
                    return await self._die("sandbox worker sent an oversized message"), False
            if scope.cancelled_caught:
                return await self._die(f"wall-clock limit exceeded ({self.limits.wall_seconds}s)"), False
            if line is None:
                return await self._die(None), False
            try:
                msg = msgspec.json.decode(line)
                if type(msg) is dict and "syscall" in msg:
                    call = msgspec.convert(msg, Call)
                else:
                    done = msgspec.convert(msg, Done)
            except msgspec.MsgspecError:
                return await self._die("sandbox worker protocol error"), False
            if type(msg) is dict and "syscall" in msg:
                t0 = time.monotonic()
                reply = await self._serve(call)
                self.waited += time.monotonic() - t0
                failed = await self._send(reply)
                if failed is not None:
                    return failed, False
                continue
            return self._finish(done), not done.recycle

    def _finish(self, done: Done) -> Result:
        cpu = done.cpu if done.cpu is not None else done.cpu_total - self.worker.cpu
        cpu = min(max(cpu, 0.0), self.limits.cpu_seconds + 2.0)  # the worker's word, so bounded
        self.worker.cpu = done.cpu_total
        error = done.error
        if self.quota_hit and error is None:
            error = f"syscall limit exceeded ({self.limits.max_syscalls})"
        return Result(ok=error is None, error=error, stdout=done.stdout, namespace=done.namespace,
                      cpu_seconds=cpu, wall_seconds=time.monotonic() - self.start, syscalls=self.calls,
                      syscall_seconds=self.waited, errno=done.errno if error is not None else None,
                      refused=done.refused.count if done.refused else 0,
                      refusals=list(done.refused.first) if done.refused else [])

    async def _serve(self, call: Call) -> bytes:
        """Forward one syscall to the host's handler; always produce a reply."""
        try:
            if self.names is not None and call.syscall not in self.names:
                raise SyscallError(Errno.ENOSYS, f"syscall {call.syscall!r} is not exposed to this program")
            if self.calls >= self.limits.max_syscalls:
                self.quota_hit = True
                raise SyscallError(Errno.EDQUOT, f"syscall limit of {self.limits.max_syscalls} reached")
            if self.handler is None:
                raise SyscallError(Errno.ENOSYS, "no syscall handler is attached to this sandbox run")
            self.calls += 1
            value = await self.handler(call.syscall, call.args)
        except SyscallError as exc:
            return error_reply(exc)
        except Exception as exc:  # a handler bug must not take the run down with it
            return error_reply(SyscallError(Errno.EIO, f"{call.syscall} failed: {type(exc).__name__}"))
        try:
            return msgspec.json.encode({"op": "reply", "value": value}) + b"\n"
        except (TypeError, ValueError, OverflowError, msgspec.MsgspecError):
            return error_reply(SyscallError(Errno.EFAULT, f"{call.syscall} returned a non-JSON value"))
