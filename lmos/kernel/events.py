"""Per-process event streams: tokens, state changes and exit, for subscribers.

Events exist only while somebody listens: the scheduler emits per-token events
just for processes with a subscriber, so unobserved processes pay nothing.  A
subscriber that falls too far behind is disconnected (its stream ends with an
``overflow`` event) rather than letting the kernel buffer without bound.

Streaming at scale: each subscriber is a plain FIFO (:class:`Subscription`)
that the kernel appends to while a step's results are applied, and its reader
drains in batches.  The reader is woken only when it is waiting on an empty
queue, and only once until it runs again; because the scheduler applies a whole
step before it yields, a reader wakes at most once per tick however many tokens
the tick produced for it, then takes them all without another trip through the
event loop.  A memory object stream, by contrast, costs a hand-off and a
checkpoint per token per subscriber, which at 256 streamed processes cost the
kernel 90% of its throughput.

"Too far" is measured in events *and* bytes: a process writing megabyte outputs
to a subscriber that does not read would otherwise make the kernel hold
``buffer`` times a megabyte.  Each subscriber has its own budget
(``max_bytes``, the text and data of the events waiting in its queue), so one
slow or hostile reader is dropped alone, the writer never blocks, and the
kernel's memory per subscriber is bounded.  A uid's subscribers together
also have a budget (``max_owner_bytes``), so watching many processes at once
cannot multiply the per-subscriber limit.  Bytes are released when the reader
takes the events, closes its subscription, or drops it (garbage collection).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One thing that happened to a process.

    Not tracked by the garbage collector (``gc=False``): a streamed kernel holds one per
    token per subscriber, and an event never refers back to anything that refers to it.
    """

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
# Token events wake their reader at the end of a tick, and at most once per this interval: while
# ticks are shorter, a reader takes several ticks' tokens per wake-up instead of one (a wake-up, a
# trip of the reader's task through the event loop, costs more than the token it carries).  The
# first tokens after a quiet spell (a stream's first) go out at the end of their tick, and ticks
# longer than this (a real model's) wake readers every tick: the added latency is at most this,
# only between tokens of a stream that is already flowing fast.
FLUSH_INTERVAL = 0.020


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


class Subscription:
    """One subscriber's queue of a process's events, read in batches.

    The reader side offers what a memory object receive stream does
    (``receive_nowait``, ``receive``, ``async for``, ``close``, ``async with``)
    plus :meth:`drain` and :meth:`batch`, which take everything waiting at
    once.  ``async for`` takes queued events without a checkpoint, so a reader
    that fell behind catches up in one go.
    """

    __slots__ = ("_bus", "_waiters", "closed", "deferred", "ended", "held", "owner", "pid", "queue", "sizes",
                 "woken_at")

    def __init__(self, bus: EventBus, pid: int, owner: int | None) -> None:
        self._bus = bus
        self.pid = pid
        self.owner = owner  # the watching uid (None: the host's own streams)
        self.queue: deque[Event] = deque()
        self.sizes: deque[int] = deque()  # bytes charged for each queued event (0: the overflow marker)
        self.held = 0
        self.ended = False  # no more events will come (exit, overflow, kernel shutdown)
        self.closed = False  # the reader let go
        self.deferred = False  # on the bus's list of readers to wake at the end of the tick
        self.woken_at = 0.0  # when the bus last woke the reader for tokens (monotonic)
        # Readers parked on this queue (usually one; a cancelled wait takes itself off).
        self._waiters: list[asyncio.Future[None] | anyio.Event] = []

    # -- the reader --------------------------------------------------------
    def drain(self, limit: int | None = None) -> list[Event]:
        """Every queued event (at most ``limit``), oldest first; their bytes are released."""
        q = self.queue
        if limit is None or limit >= len(q):
            out = list(q)
            q.clear()
            self.sizes.clear()
            freed, self.held = self.held, 0
        else:
            out = [q.popleft() for _ in range(limit)]
            sizes = self.sizes
            freed = sum(sizes.popleft() for _ in range(limit))
            self.held -= freed
        if freed:
            self._bus._release(self.owner, freed)
        return out

    def receive_nowait(self) -> Event:
        if self.closed:
            raise anyio.ClosedResourceError
        if self.queue:
            size = self.sizes.popleft()
            if size:
                self.held -= size
                self._bus._release(self.owner, size)
            return self.queue.popleft()
        if self.ended:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def wait(self) -> None:
        """Until an event is queued or the stream has ended."""
        while not self.queue and not self.ended and not self.closed:
            w = self._bus._new_waiter()  # each reader its own: cancelling one leaves the others waiting
            self._waiters.append(w)
            try:
                await (w if isinstance(w, asyncio.Future) else w.wait())
            except BaseException:  # cancelled (a long poll's timeout): stop being counted as waiting
                if w in self._waiters:
                    self._waiters.remove(w)
                raise

    async def receive(self) -> Event:
        try:
            return self.receive_nowait()
        except anyio.WouldBlock:
            await self.wait()
            return self.receive_nowait()

    async def batch(self, limit: int | None = None) -> list[Event]:
        """The next events (waiting for the first); ``[]`` once the stream has ended."""
        if self.closed:
            raise anyio.ClosedResourceError
        await self.wait()
        return self.drain(limit)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self.queue:  # (no exceptions on the fast path: this runs once per token)
            if self.ended or self.closed:
                raise StopAsyncIteration
            await self.wait()
        size = self.sizes.popleft()
        if size:
            self.held -= size
            self._bus._release(self.owner, size)
        return self.queue.popleft()

    def close(self) -> None:
        """The reader is done: what it did not read is released and nothing more is queued."""
        if self.closed:
            return
        self.closed = True
        self.queue.clear()
        self.sizes.clear()
        freed, self.held = self.held, 0
        if freed:
            self._bus._release(self.owner, freed)
        self._bus._detach(self)
        self._wake()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # an abandoned reader must not keep its uid's budget used
        if self.held:
            self._bus._release(self.owner, self.held)
            self.held = 0

    # -- the kernel side ---------------------------------------------------
    def _wake(self) -> None:
        ws = self._waiters
        if ws:
            self._waiters = []
            for w in ws:
                if not isinstance(w, asyncio.Future):
                    w.set()
                elif not w.done():  # (a cancelled reader's future is done already)
                    w.set_result(None)


class EventBus:
    """Subscribers per pid, each bounded by ``buffer`` events and ``max_bytes`` bytes."""

    def __init__(self, buffer: int = 8192, max_bytes: int = MAX_SUBSCRIBER_BYTES,
                 max_owner_bytes: int = MAX_OWNER_BYTES, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.buffer = buffer
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self.max_owner_bytes = max_owner_bytes
        self.subs: dict[int, list[Subscription]] = {}  # live subscriptions by watched pid
        self.dropped = 0  # subscribers disconnected for falling behind (a figure for benchmarks)
        self.held = 0  # bytes waiting in all queues
        self.peak_held = 0
        self.by_owner: dict[int, int] = {}  # bytes waiting for each watching uid
        self.wakeups = 0  # readers woken (a figure for tests and benchmarks)
        self._deferred: list[Subscription] = []  # readers waiting for tokens queued this tick
        self._loop: asyncio.AbstractEventLoop | None = None  # readers' asyncio loop (None: not asyncio)
        self._loop_known = False
        self._next_due = 0.0  # when the first deferred reader may be woken (monotonic)
        self.sticky: dict[int, Event] = {}  # a first event for late subscribers too (publish_sticky)

    def subscribe(self, pid: int, owner: int | None = None) -> Subscription:
        """A stream of ``pid``'s events for a reader of uid ``owner`` (None: the host itself)."""
        sub = Subscription(self, pid, owner)
        self.subs.setdefault(pid, []).append(sub)
        first = self.sticky.get(pid)
        if first is not None:
            self._put(sub, first, event_size(first))
        return sub

    def has(self, pid: int) -> bool:
        return pid in self.subs

    def _new_waiter(self) -> asyncio.Future[None] | anyio.Event:
        """What a reader parks on.  Under asyncio a bare future: an ``anyio.Event`` costs three
        times as much per wake-up (measured: 4.2 against 1.3 µs), and readers wake every tick."""
        if not self._loop_known:  # the kernel's loop, found at the first wait
            token = getattr(anyio.lowlevel, "current_token", None)  # (anyio >= 4.11)
            native = getattr(token(), "native_token", None) if token is not None else None
            self._loop = native if isinstance(native, asyncio.AbstractEventLoop) else None
            self._loop_known = True
        if self._loop is not None:
            return self._loop.create_future()
        return anyio.Event()

    def held_bytes(self) -> int:
        """Bytes of events waiting in all subscribers' queues."""
        return self.held

    # -- publishing --------------------------------------------------------
    def publish(self, pid: int, **fields: Any) -> None:
        """Queue one event for every subscriber of ``pid`` and wake the waiting readers."""
        subs = self.subs.get(pid)
        if not subs:
            return
        ev = Event(pid=pid, ts=time.time(), **fields)
        size = event_size(ev)
        for sub in list(subs):
            self._put(sub, ev, size)

    def publish_sticky(self, pid: int, **fields: Any) -> None:
        """Publish an event that later subscribers of ``pid`` also get first, until it ends: a
        recovered process's "recovered at step N", published before anybody can subscribe again."""
        ev = self.sticky[pid] = Event(pid=pid, ts=time.time(), **fields)
        size = event_size(ev)
        for sub in list(self.subs.get(pid, ())):
            self._put(sub, ev, size)

    def token(self, pid: int, token_id: int, text: str, ts: float) -> None:
        """A generated token: the scheduler's per-token path (one event shared by all subscribers).

        The reader is not woken here but by :meth:`flush` at the end of the tick, unless
        its queue is half full.  This runs for every streamed token, so it is written flat.
        """
        subs = self.subs.get(pid)
        if not subs:
            return
        ev = Event(pid=pid, kind="token", token_id=token_id, text=text, ts=ts)
        size = EVENT_OVERHEAD + len(text)
        for sub in subs if len(subs) == 1 else list(subs):
            q = sub.queue
            held = sub.held + size
            owner = sub.owner
            if (len(q) >= self.buffer or held > self.max_bytes
                    or (owner is not None and self.by_owner.get(owner, 0) + size > self.max_owner_bytes)):
                self._overflow(sub)
                continue
            q.append(ev)
            sub.sizes.append(size)
            sub.held = held
            total = self.held = self.held + size
            if total > self.peak_held:
                self.peak_held = total
            if owner is not None:
                self.by_owner[owner] = self.by_owner.get(owner, 0) + size
            if sub._waiters:
                if 2 * len(q) >= self.buffer or 2 * held >= self.max_bytes:
                    self.wakeups += 1  # half full: the reader must not wait for the flush
                    sub._wake()
                elif not sub.deferred:
                    sub.deferred = True
                    self._deferred.append(sub)
                    if sub.woken_at + self.flush_interval < self._next_due:
                        self._next_due = sub.woken_at + self.flush_interval

    def flush(self, force: bool = False) -> None:
        """End of a scheduler tick: wake the readers that tokens wait for (see ``FLUSH_INTERVAL``).

        ``force``: the scheduler is about to wait for work, so nothing queued may wait longer.
        """
        if not self._deferred:
            return
        now = time.monotonic()
        if not force and now < self._next_due:
            return  # (nobody due yet: skip the walk over the waiting readers)
        due = now - self.flush_interval
        later: list[Subscription] = []
        for sub in self._deferred:
            if not sub._waiters:  # woken meanwhile by another event (or closed)
                sub.deferred = False
            elif force or sub.woken_at <= due:
                sub.deferred = False
                sub.woken_at = now
                self.wakeups += 1
                sub._wake()
            else:
                later.append(sub)
        self._deferred = later
        self._next_due = min((sub.woken_at for sub in later), default=now) + self.flush_interval

    def _put(self, sub: Subscription, ev: Event, size: int) -> None:
        """Queue ``ev`` for ``sub`` (or end its stream if it is full) and wake its reader."""
        owner = sub.owner
        if (len(sub.queue) >= self.buffer or sub.held + size > self.max_bytes
                or (owner is not None and self.by_owner.get(owner, 0) + size > self.max_owner_bytes)):
            self._overflow(sub)
            return
        sub.queue.append(ev)
        sub.sizes.append(size)
        sub.held += size
        held = self.held = self.held + size
        if held > self.peak_held:
            self.peak_held = held
        if owner is not None:
            self.by_owner[owner] = self.by_owner.get(owner, 0) + size
        if sub._waiters:
            self.wakeups += 1
            sub._wake()

    def _release(self, owner: int | None, size: int) -> None:
        self.held -= size
        if owner is not None:
            n = self.by_owner.get(owner, 0) - size
            if n > 0:
                self.by_owner[owner] = n
            else:
                self.by_owner.pop(owner, None)

    # -- ending streams ----------------------------------------------------
    def _overflow(self, sub: Subscription) -> None:
        """The subscriber is at its limit: its stream ends with an ``overflow`` marker."""
        self.dropped += 1
        sub.queue.append(Event(pid=sub.pid, kind="overflow", ts=time.time()))
        sub.sizes.append(0)  # the marker is never charged: it always fits
        self._end(sub)

    def _end(self, sub: Subscription) -> None:
        sub.ended = True
        self._detach(sub)
        sub._wake()

    def _detach(self, sub: Subscription) -> None:
        lst = self.subs.get(sub.pid)
        if lst is not None and sub in lst:
            lst.remove(sub)
            if not lst:
                del self.subs[sub.pid]

    def close(self, pid: int) -> None:
        """The process is gone: end its subscribers' streams (what they hold stays readable)."""
        self.sticky.pop(pid, None)
        for sub in list(self.subs.get(pid, ())):
            self._end(sub)

    def unsubscribe(self, pid: int, recv: Subscription) -> None:
        recv.close()

    def close_all(self) -> None:
        for pid in list(self.subs):
            self.close(pid)
