"""Channels: named, bounded message queues between processes.

A channel is opened by name (the first opener creates it) and carries JSON
values.  ``send`` blocks while the channel is full and ``recv`` while it is
empty, each with an optional timeout; closing wakes every waiter with EPIPE.
Bounded buffers give back-pressure, so a fast producer cannot make the kernel
hold unbounded memory on behalf of a slow consumer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio

from lmos.errors import Errno, SyscallError


@dataclass(eq=False)
class Channel:
    chan_id: int
    name: str
    owner_uid: int
    capacity: int
    items: deque[Any] = field(default_factory=deque)
    closed: bool = False
    openers: set[int] = field(default_factory=set)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait(self, deadline: float) -> None:
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope:
            await self._changed.wait()
        if scope.cancelled_caught:
            raise SyscallError(Errno.ETIMEDOUT, f"channel {self.name!r}: timed out")

    async def send(self, value: Any, timeout: float | None) -> None:
        deadline = anyio.current_time() + (math.inf if timeout is None else timeout)
        while True:
            if self.closed:
                raise SyscallError(Errno.EPIPE, f"channel {self.name!r} is closed")
            if len(self.items) < self.capacity:
                self.items.append(value)
                self._notify()
                return
            await self._wait(deadline)

    async def recv(self, timeout: float | None) -> Any:
        deadline = anyio.current_time() + (math.inf if timeout is None else timeout)
        while True:
            if self.items:
                value = self.items.popleft()
                self._notify()
                return value
            if self.closed:
                raise SyscallError(Errno.EPIPE, f"channel {self.name!r} is closed and empty")
            await self._wait(deadline)

    def close(self) -> None:
        self.closed = True
        self._notify()


class ChannelTable:
    """All channels of one kernel, by id and by name."""

    def __init__(self, max_channels: int = 65536) -> None:
        self.by_id: dict[int, Channel] = {}
        self.by_name: dict[str, Channel] = {}
        self._next = 1
        self.max_channels = max_channels

    def open(self, name: str, pid: int, uid: int, capacity: int) -> Channel:
        ch = self.by_name.get(name)
        if ch is None or ch.closed:
            if len(self.by_id) >= self.max_channels:
                raise SyscallError(Errno.EAGAIN, "too many channels")
            ch = Channel(self._next, name, uid, capacity)
            self._next += 1
            self.by_id[ch.chan_id] = ch
            self.by_name[name] = ch
        ch.openers.add(pid)
        return ch

    def get(self, chan_id: int, pid: int) -> Channel:
        ch = self.by_id.get(chan_id)
        if ch is None or pid not in ch.openers:
            raise SyscallError(Errno.ENOENT, f"no open channel {chan_id}")
        return ch

    def close(self, chan_id: int, pid: int) -> None:
        ch = self.get(chan_id, pid)
        ch.close()
        self._forget(ch)

    def release(self, pid: int) -> None:
        """A process ended: drop it from every channel; unreferenced ones go."""
        for ch in list(self.by_id.values()):
            ch.openers.discard(pid)
            if not ch.openers:
                ch.close()
                self._forget(ch)

    def _forget(self, ch: Channel) -> None:
        self.by_id.pop(ch.chan_id, None)
        if self.by_name.get(ch.name) is ch:
            del self.by_name[ch.name]
