"""The threads that blocking tool work may use: a small pool of their own.

anyio's default thread pool also runs file syscalls, journal writes and model
steps.  A tool that blocks (a DNS lookup, a library without an async API) must
not be able to take those threads from the kernel, so tools run blocking calls
through :func:`run_blocking`, which is bounded by a limiter that only tools
share.  Calls are abandoned when cancelled (a killed process, a tool deadline):
the caller returns at once and the thread finishes on its own, still counted
against this pool, never the kernel's.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

T = TypeVar("T")
TOOL_THREADS = 8  # blocking tool calls in flight at once, all processes together

# One limiter per event loop (a limiter belongs to the loop that created it).
_limiters: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def tool_limiter() -> anyio.CapacityLimiter:
    """The running event loop's limiter for blocking tool work."""
    key = anyio.lowlevel.current_token().native_token
    lim = _limiters.get(key)
    if lim is None:
        lim = _limiters[key] = anyio.CapacityLimiter(TOOL_THREADS)
    return lim


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a tool thread; cancellation abandons the thread rather than waiting for it."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=tool_limiter(), abandon_on_cancel=True)
