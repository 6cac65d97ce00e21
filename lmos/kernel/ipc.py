"""Channels: named, bounded message queues between processes.

A channel is opened by name (the first opener creates it) and carries JSON
values.  ``send`` blocks while the channel is full and ``recv`` while it is
empty, each with an optional timeout; closing wakes every waiter with EPIPE.
Bounded buffers give back-pressure, so a fast producer cannot make the kernel
hold unbounded memory on behalf of a slow consumer.

What bounds them, and who cannot interfere:

- **Names are per uid.**  Each uid has its own namespace, so another user can
  neither open nor pre-create ("squat") a name a program is about to use.
- **Private channels** get a kernel-assigned, unguessable name; only the
  creating process and its descendants may open one, so not even another
  process of the same uid can read the answers a parent gathers from its
  children (``team``, ``pipeline``).
- **Bytes, not only messages.**  A channel holds at most ``capacity`` messages
  and ``max_bytes`` bytes (the JSON size of what is queued); a full channel
  blocks its senders.  A uid may have ``max_per_uid`` channels and
  ``bytes_per_uid`` bytes queued over all of them; past that its next open or
  send gets EAGAIN.  The limits fall on the process at fault, never the kernel.
"""

from __future__ import annotations

import math
import secrets
import time
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
    max_bytes: int = 4 << 20
    owner_pid: int = 0  # the creator; for a private channel, the root of who may open it
    private: bool = False
    items: deque[tuple[Any, int]] = field(default_factory=deque)  # (value, its JSON size)
    nbytes: int = 0
    closed: bool = False
    openers: set[int] = field(default_factory=set)
    opened: float = field(default_factory=time.time)  # wall clock: matches its journal rows at recovery
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _usage: dict[int, int] | None = None  # the table's queued bytes per uid, charged to owner_uid

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait(self, deadline: float) -> None:
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope:
            await self._changed.wait()
        if scope.cancelled_caught:
            raise SyscallError(Errno.ETIMEDOUT, f"channel {self.name!r}: timed out")

    def _charge(self, n: int) -> None:
        self.nbytes += n
        if self._usage is not None:
            self._usage[self.owner_uid] = self._usage.get(self.owner_uid, 0) + n

    async def send(self, value: Any, timeout: float | None, size: int = 0, uid_limit: int = 0) -> None:
        """Queue ``value`` (``size`` bytes of JSON); block while full, EAGAIN at once with ``timeout=0``.

        ``uid_limit`` bounds the bytes queued in all channels of the owner's uid:
        reaching it is EAGAIN, not a wait, since only this uid's own readers could free it.
        """
        if size > self.max_bytes:
            raise SyscallError(Errno.E2BIG, f"message of {size} bytes exceeds channel {self.name!r}'s "
                                            f"limit of {self.max_bytes} bytes")
        deadline = anyio.current_time() + (math.inf if timeout is None else timeout)
        while True:
            if self.closed:
                raise SyscallError(Errno.EPIPE, f"channel {self.name!r} is closed")
            if len(self.items) < self.capacity and self.nbytes + size <= self.max_bytes:
                if uid_limit and self._usage is not None and \
                        self._usage.get(self.owner_uid, 0) + size > uid_limit:
                    raise SyscallError(Errno.EAGAIN, f"uid {self.owner_uid} has {uid_limit} bytes queued "
                                                     "in its channels; receive some first")
                self.items.append((value, size))
                self._charge(size)
                self._notify()
                return
            if timeout == 0:
                raise SyscallError(Errno.EAGAIN, f"channel {self.name!r} is full")
            await self._wait(deadline)

    async def recv(self, timeout: float | None) -> Any:
        deadline = anyio.current_time() + (math.inf if timeout is None else timeout)
        while True:
            if self.items:
                value, size = self.items.popleft()
                self._charge(-size)
                self._notify()
                return value
            if self.closed:
                raise SyscallError(Errno.EPIPE, f"channel {self.name!r} is closed and empty")
            await self._wait(deadline)

    def close(self) -> None:
        self.closed = True
        self._notify()

    def drop(self) -> None:
        """Close and free what is queued (the channel is gone: nobody can receive it any more)."""
        self.close()
        self._charge(-self.nbytes)
        self.items.clear()


class ChannelTable:
    """All channels of one kernel: by id, by (uid, name), and private ones by name."""

    def __init__(self, max_channels: int = 65536, *, per_uid: int = 256, channel_bytes: int = 4 << 20,
                 bytes_per_uid: int = 64 << 20) -> None:
        self.by_id: dict[int, Channel] = {}
        self.by_name: dict[tuple[int, str], Channel] = {}
        self.private: dict[str, Channel] = {}
        self._next = 1
        self.max_channels = max_channels
        self.per_uid = per_uid
        self.channel_bytes = channel_bytes
        self.bytes_per_uid = bytes_per_uid
        self.count: dict[int, int] = {}  # open channels per owner uid
        self.by_pid: dict[int, set[int]] = {}  # channel ids each process has open (for release)
        self.queued: dict[int, int] = {}  # bytes queued per owner uid

    def _create(self, name: str, pid: int, uid: int, capacity: int, private: bool) -> Channel:
        if self.count.get(uid, 0) >= self.per_uid:
            raise SyscallError(Errno.EAGAIN, f"uid {uid} has {self.per_uid} channels open; close some first")
        if len(self.by_id) >= self.max_channels:
            raise SyscallError(Errno.EAGAIN, "too many channels")
        ch = Channel(self._next, name, uid, capacity, max_bytes=self.channel_bytes, owner_pid=pid,
                     private=private, _usage=self.queued)
        self._next += 1
        self.by_id[ch.chan_id] = ch
        self.count[uid] = self.count.get(uid, 0) + 1
        return ch

    def open(self, name: str, pid: int, uid: int, capacity: int) -> Channel:
        """Open ``name`` in ``uid``'s namespace, creating it if needed."""
        ch = self.by_name.get((uid, name))
        if ch is None or ch.closed:
            ch = self._create(name, pid, uid, capacity, private=False)
            self.by_name[(uid, name)] = ch
        self.attach(ch, pid)
        return ch

    def open_private(self, label: str, pid: int, uid: int, capacity: int) -> Channel:
        """A new channel with a kernel-assigned name ``label.<random>`` that only ``pid``'s tree may open."""
        name = f"{label}.{secrets.token_hex(12)}"
        while name in self.private:
            name = f"{label}.{secrets.token_hex(12)}"
        ch = self._create(name, pid, uid, capacity, private=True)
        self.private[name] = ch
        self.attach(ch, pid)
        return ch

    def attach(self, ch: Channel, pid: int) -> None:
        """``pid`` has ``ch`` open (it may send, receive and close it)."""
        ch.openers.add(pid)
        self.by_pid.setdefault(pid, set()).add(ch.chan_id)

    def find_private(self, name: str) -> Channel | None:
        ch = self.private.get(name)
        return ch if ch is not None and not ch.closed else None

    def get(self, chan_id: int, pid: int) -> Channel:
        ch = self.by_id.get(chan_id)
        if ch is None or pid not in ch.openers:
            raise SyscallError(Errno.ENOENT, f"no open channel {chan_id}")
        return ch

    def close(self, chan_id: int, pid: int) -> None:
        ch = self.get(chan_id, pid)
        self._forget(ch)

    def release(self, pid: int) -> None:
        """A process ended: drop it from every channel; unreferenced ones go."""
        for chan_id in self.by_pid.pop(pid, set()):
            ch = self.by_id.get(chan_id)
            if ch is None:
                continue
            ch.openers.discard(pid)
            if not ch.openers:
                self._forget(ch)

    def _forget(self, ch: Channel) -> None:
        ch.drop()
        for pid in ch.openers:
            held = self.by_pid.get(pid)
            if held is not None:
                held.discard(ch.chan_id)
        if self.by_id.pop(ch.chan_id, None) is not None:
            self.count[ch.owner_uid] = self.count.get(ch.owner_uid, 1) - 1
        if self.by_name.get((ch.owner_uid, ch.name)) is ch:
            del self.by_name[(ch.owner_uid, ch.name)]
        if self.private.get(ch.name) is ch:
            del self.private[ch.name]
