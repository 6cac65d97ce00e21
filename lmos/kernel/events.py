"""Per-process event streams: tokens, state changes and exit, for subscribers.

Events exist only while somebody listens: the scheduler emits per-token events
just for processes with a subscriber, so unobserved processes pay nothing.  A
subscriber that falls too far behind is disconnected (its stream ends with an
``overflow`` event) rather than letting the kernel buffer without bound.

"Too far" is measured in events *and* bytes: a process writing megabyte outputs
to a subscriber that does not read would otherwise make the kernel hold
``buffer`` times a megabyte.  Each subscriber has its own budget
(``max_bytes``, the text and data of the events waiting in its buffer), so one
slow or hostile reader is dropped alone, the writer never blocks, and the
kernel's memory per subscriber is bounded.  A uid's subscribers together
also have a budget (``max_owner_bytes``), so watching many processes at once
cannot multiply the per-subscriber limit.  The budgets live in this one class,
whatever the shape of the queue behind it.
"""

from __future__ import annotations

import time
from collections import deque
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


EVENT_OVERHEAD = 96  # bytes an event costs besides its text and data (the object, its fields)
MAX_SUBSCRIBER_BYTES = 4 << 20
MAX_OWNER_BYTES = 64 << 20  # all subscribers of one uid together


def event_size(ev: Event) -> int:
    """What holding ``ev`` costs, roughly: fixed overhead plus its text, state and data."""
    n = EVENT_OVERHEAD + len(ev.text) + len(ev.state)
    d = ev.data
    if d is None:
        return n
    if isinstance(d, (str, bytes)):
        return n + len(d)
    try:
        return n + len(msgspec.json.encode(d))
    except (TypeError, ValueError, OverflowError, msgspec.MsgspecError):
        return n + 1024


class _Sub:
    """A subscriber's sending end and the sizes of its events still in the buffer.

    The buffer is FIFO, so when its length drops the oldest recorded events were
    read: their bytes are released (:meth:`settle`).  An event handed straight
    to a waiting reader never enters the buffer and is never charged.  Returns
    are the change in bytes held, for the bus's total.
    """

    __slots__ = ("held", "owner", "send", "sizes")

    def __init__(self, send: MemoryObjectSendStream[Event], owner: int | None) -> None:
        self.send = send
        self.owner = owner  # the watching uid (None: the host's own streams)
        self.sizes: deque[int] = deque()
        self.held = 0

    def settle(self) -> int:
        used = self.send.statistics().current_buffer_used
        before = self.held
        while len(self.sizes) > used:
            self.held -= self.sizes.popleft()
        return self.held - before

    def push(self, ev: Event, size: int) -> int:
        self.send.send_nowait(ev)
        if self.send.statistics().current_buffer_used > len(self.sizes):
            self.sizes.append(size)
            self.held += size
            return size
        return 0


class EventBus:
    """Subscribers per pid, each bounded by ``buffer`` events and ``max_bytes`` bytes."""

    def __init__(self, buffer: int = 8192, max_bytes: int = MAX_SUBSCRIBER_BYTES,
                 max_owner_bytes: int = MAX_OWNER_BYTES) -> None:
        self.buffer = buffer
        self.max_bytes = max_bytes
        self.max_owner_bytes = max_owner_bytes
        self.subs: dict[int, list[_Sub]] = {}
        self.dropped = 0  # subscribers disconnected for falling behind (a figure for benchmarks)
        self.held = 0  # bytes waiting in all buffers, as of the last publish
        self.peak_held = 0
        self.by_owner: dict[int, int] = {}  # bytes waiting for each watching uid
        # Ended streams whose reader has not drained or closed them yet: their events still
        # take memory, so they stay counted until then (see _reclaim).
        self.draining: dict[int | None, list[_Sub]] = {}

    def subscribe(self, pid: int, owner: int | None = None) -> MemoryObjectReceiveStream[Event]:
        """A stream of ``pid``'s events for a reader of uid ``owner`` (None: the host itself)."""
        # One slot more than the limit: the overflow marker always fits.
        send, recv = anyio.create_memory_object_stream[Event](self.buffer + 1)
        self.subs.setdefault(pid, []).append(_Sub(send, owner))
        return recv

    def _account(self, sub: _Sub, delta: int) -> None:
        if not delta:
            return
        self.held += delta
        if sub.owner is not None:
            n = self.by_owner.get(sub.owner, 0) + delta
            if n > 0:
                self.by_owner[sub.owner] = n
            else:
                self.by_owner.pop(sub.owner, None)

    def _full(self, sub: _Sub, size: int) -> bool:
        if len(sub.sizes) >= self.buffer or sub.held + size > self.max_bytes:
            return True
        if sub.owner is None or self.by_owner.get(sub.owner, 0) + size <= self.max_owner_bytes:
            return False
        self._reclaim(sub.owner)  # over budget: first count what ended streams' readers let go of
        return self.by_owner.get(sub.owner, 0) + size > self.max_owner_bytes

    def _reclaim(self, owner: int | None) -> None:
        """Release the bytes of ended streams of ``owner`` that were read or whose reader closed."""
        keep = []
        for sub in self.draining.pop(owner, []):
            self._account(sub, sub.settle())
            if sub.held and sub.send.statistics().open_receive_streams:
                keep.append(sub)
            else:
                self._account(sub, -sub.held)
                sub.held = 0
                sub.sizes.clear()
        if keep:
            self.draining[owner] = keep

    def has(self, pid: int) -> bool:
        return pid in self.subs

    def held_bytes(self) -> int:
        """Bytes of events waiting in all subscribers' buffers."""
        for subs in self.subs.values():
            for sub in subs:
                self._account(sub, sub.settle())
        for owner in list(self.draining):
            self._reclaim(owner)
        return self.held

    def publish(self, pid: int, **fields: Any) -> None:
        subs = self.subs.get(pid)
        if not subs:
            return
        ev = Event(pid=pid, ts=time.time(), **fields)
        size = event_size(ev)
        for sub in list(subs):
            self._account(sub, sub.settle())
            try:
                if self._full(sub, size):
                    self._overflow(pid, sub)
                    continue
                self._account(sub, sub.push(ev, size))
            except anyio.WouldBlock:
                self._overflow(pid, sub)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(pid, sub)
        self.peak_held = max(self.peak_held, self.held)

    def _overflow(self, pid: int, sub: _Sub) -> None:
        """The subscriber is at its limit: its stream ends with an ``overflow`` marker."""
        self.dropped += 1
        try:
            sub.send.send_nowait(Event(pid=pid, kind="overflow", ts=time.time()))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self._drop(pid, sub)

    def close(self, pid: int) -> None:
        """The process is gone: end its subscribers' streams."""
        for sub in self.subs.pop(pid, []):
            self._retire(sub)

    def unsubscribe(self, pid: int, recv: MemoryObjectReceiveStream[Event]) -> None:
        recv.close()
        # Closed receivers are dropped lazily on the next publish (BrokenResourceError).

    def _retire(self, sub: _Sub) -> None:
        """End ``sub``'s stream; what its reader has not read yet stays counted until it is."""
        sub.send.close()
        if sub.held:
            waiting = self.draining.setdefault(sub.owner, [])
            waiting.append(sub)
            if len(waiting) > 64:  # amortised: the list never grows past what readers still hold
                self._reclaim(sub.owner)

    def _drop(self, pid: int, sub: _Sub) -> None:
        self._retire(sub)
        lst = self.subs.get(pid)
        if lst is not None and sub in lst:
            lst.remove(sub)
            if not lst:
                del self.subs[pid]

    def close_all(self) -> None:
        for pid in list(self.subs):
            self.close(pid)
