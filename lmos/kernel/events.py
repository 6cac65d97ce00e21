"""Per-process event streams: tokens, state changes and exit, for subscribers.

Events exist only while somebody listens: the scheduler emits per-token events
just for processes with a subscriber, so unobserved processes pay nothing.  A
subscriber that falls too far behind is disconnected (its stream ends with an
``overflow`` event) rather than letting the kernel buffer without bound.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened to a process."""

    pid: int
    kind: str  # "token" | "state" | "exit" | "overflow" | "output"
    token_id: int | None = None
    text: str = ""  # for "token": the new text; for "output": what the program wrote
    state: str = ""
    exit_status: int | None = None
    ts: float = 0.0
    data: Any = None


class EventBus:
    def __init__(self, buffer: int = 8192) -> None:
        self.buffer = buffer
        self.subs: dict[int, list[MemoryObjectSendStream[Event]]] = {}

    def subscribe(self, pid: int) -> MemoryObjectReceiveStream[Event]:
        send, recv = anyio.create_memory_object_stream[Event](self.buffer)
        self.subs.setdefault(pid, []).append(send)
        return recv

    def has(self, pid: int) -> bool:
        return pid in self.subs

    def publish(self, pid: int, **fields: Any) -> None:
        streams = self.subs.get(pid)
        if not streams:
            return
        ev = Event(pid=pid, ts=time.time(), **fields)
        for s in list(streams):
            try:
                s.send_nowait(ev)
            except anyio.WouldBlock:
                try:
                    s.send_nowait(Event(pid=pid, kind="overflow", ts=time.time()))
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
                self._drop(pid, s)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(pid, s)

    def close(self, pid: int) -> None:
        """The process is gone: end its subscribers' streams."""
        for s in self.subs.pop(pid, []):
            s.close()

    def unsubscribe(self, pid: int, recv: MemoryObjectReceiveStream[Event]) -> None:
        recv.close()
        # Closed receivers are dropped lazily on the next publish (BrokenResourceError).

    def _drop(self, pid: int, s: MemoryObjectSendStream[Event]) -> None:
        s.close()
        lst = self.subs.get(pid)
        if lst is not None and s in lst:
            lst.remove(s)
            if not lst:
                del self.subs[pid]

    def close_all(self) -> None:
        for pid in list(self.subs):
            self.close(pid)
