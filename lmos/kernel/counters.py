"""What the kernel counts for monitoring, kept where it happens and read at scrape time.

Most figures a monitoring system wants are state the kernel keeps anyway (the
process table, run queues, KV blocks, swap and drop counts) and are read when
somebody asks (``lmos.server.metrics``).  This module holds the few that
nothing else keeps: tokens generated and prefilled, prefix-cache hits, time to
first token, step and tick latency, and syscalls by name and errno with their
latency.  They are plain ints and fixed-bucket histograms, updated on the event
loop thread (never per token: per request, per step or per syscall), so the hot
path pays a bisect and a few additions and the kernel needs no metrics library.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmos.kernel.request import GenRequest

# Upper bounds in seconds (Prometheus "le" buckets; +Inf is implied).
STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SYSCALL_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25,
                   1.0, 5.0, 30.0)


class Histogram:
    """Observations counted into fixed buckets (each ``<=`` its bound) plus their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` for every bucket, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class GenCounters:
    """Generation figures of one model, counted once per ``llm_generate`` request.

    ``prefilled`` is what the model had to compute of each request's input at
    admission (prompt tokens minus prefix-cache hits; KV recomputed after a drop
    is counted by the scheduler's own ``tokens``).  Prefix-cache figures count
    new sequences only: a process's next turn reuses its own KV, which is no
    cache lookup.
    """

    __slots__ = ("generated", "prefilled", "prefix_hit", "prefix_query", "prompt", "requests", "ttft")

    def __init__(self) -> None:
        self.generated = 0
        self.prefilled = 0
        self.prompt = 0
        self.prefix_query = 0
        self.prefix_hit = 0
        self.requests = 0
        self.ttft = Histogram(TTFT_BUCKETS)

    def admitted(self, tokens: int, cached: int) -> None:
        """A new sequence of ``tokens`` tokens whose first ``cached`` came from the prefix cache."""
        self.prefix_query += tokens
        self.prefix_hit += cached

    def finished(self, req: GenRequest, started: float, prefilled: int) -> None:
        """``req`` ended (done, failed or cancelled); ``started``: when its syscall reached the kernel."""
        self.requests += 1
        self.generated += len(req.out)
        self.prompt += req.prompt_tokens
        self.prefilled += prefilled
        if req.first_at:
            self.ttft.observe(max(0.0, req.first_at - started))


class SyscallCounters:
    """Syscalls by (name, errno) and each name's latency; errno 0 is success."""

    __slots__ = ("calls", "latency")

    def __init__(self) -> None:
        self.calls: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}

    def record(self, name: str, errno: int, seconds: float) -> None:
        key = (name, errno)
        self.calls[key] = self.calls.get(key, 0) + 1
        h = self.latency.get(name)
        if h is None:
            h = self.latency[name] = Histogram(SYSCALL_BUCKETS)
        h.observe(seconds)


class KernelCounters:
    """The counters of one kernel: generation per model name."""

    __slots__ = ("models",)

    def __init__(self) -> None:
        self.models: dict[str, GenCounters] = {}

    def model(self, name: str) -> GenCounters:
        c = self.models.get(name)
        if c is None:
            c = self.models[name] = GenCounters()
        return c
