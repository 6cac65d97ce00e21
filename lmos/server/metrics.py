"""``GET /metrics`` (Prometheus text format) and the access log of the HTTP API.

**What is measured, and where.**  Most figures are state the kernel keeps
anyway, read when Prometheus scrapes (:class:`KernelCollector`), so serving
requests pays nothing for them: the process table by state, each model's run
queue, KV blocks (used, free, still holding a cached prefix), swap and drop
decisions, event buffers, live sandbox workers.  What nothing else keeps is
counted at the source with plain ints and fixed-bucket histograms
(:mod:`lmos.kernel.counters`: tokens generated and prefilled, prefix-cache hits,
time to first token, step and tick latency, syscalls by name and errno with
their latency) and converted here.  HTTP requests are counted by the ASGI
middleware (:class:`Observed`), which also writes the access log.

**One registry per server.**  Each app gets its own
:class:`prometheus_client.CollectorRegistry`, never the process-global default
one, so several kernels in one process (the test suite, an embedder) never
share or collide on metrics.

**Who may scrape.**  ``/metrics`` passes the same checks as every route (Host,
Origin, API key: :mod:`lmos.server.access`) and then needs the *operator*: a
principal :meth:`KernelCore.is_operator` accepts (the owner of the state
directory, root, or its ``root_runs_as`` alias).  The figures are kernel-wide
(other users' token counts, syscall mix and timings are a side channel into
their work), so any other key gets 403 instead of a view it should not have.
With no key configured the server's default principal is the host user, who
normally is the operator, so a loopback ``lmos serve`` is scrapeable as is.

**The access log.**  One JSON object per request on the ``lmos.access`` logger
(INFO): ``method``, ``route`` (the route template, ``/v1/processes/{pid}``),
``path``, ``status``, ``duration_s`` (to the last byte: a stream's whole life),
``uid`` (the key's principal; null when refused before one was known) and
``bytes`` (response body).  :func:`log_to_stderr` gives it a handler when the
program configured no logging at all (``lmos serve``: the kernel's log file).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmos.errors import Errno
from lmos.server.access import Access
from lmos.server.wire import HTTPError, error_response
from lmos.system import Kernel

if TYPE_CHECKING:
    from lmos.kernel.counters import Histogram as Hist

ACCESS = logging.getLogger("lmos.access")
PROCESS_STATES = ("new", "ready", "running", "blocked", "stopped", "exited", "killed")
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0)


def _errno_name(n: int) -> str:
    if n == 0:
        return "OK"
    try:
        return Errno(n).name
    except ValueError:
        return str(n)


def _histogram(fam: HistogramMetricFamily, labels: list[str], h: Hist) -> None:
    buckets = [("+Inf" if b == float("inf") else repr(b), float(n)) for b, n in h.cumulative()]
    fam.add_metric(labels, buckets, h.sum)


class KernelCollector(Collector):
    """The kernel's figures, read at scrape time from the state it keeps."""

    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel

    def collect(self) -> Iterator[Any]:
        from lmos import __version__

        info = GaugeMetricFamily("lmos_build_info", "lmos version (always 1)", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        core, sys_ = self.k.core, self.k.sys
        if core is None:
            return
        yield from self._processes(core)
        yield from self._models(core)
        yield from self._events(core)
        if sys_ is not None:
            yield from self._syscalls(sys_.counters)
        yield from self._sandbox()

    @staticmethod
    def _processes(core: Any) -> Iterator[Any]:
        by_state = dict.fromkeys(PROCESS_STATES, 0)
        for p in list(core.procs.values()):
            st = p.state.value
            by_state[st] = by_state.get(st, 0) + 1
        g = GaugeMetricFamily("lmos_processes", "processes in the table by state (init and unreaped "
                              "zombies included)", labels=["state"])
        for st, n in by_state.items():
            g.add_metric([st], n)
        yield g
        yield GaugeMetricFamily("lmos_process_table_size", "slots in the process table",
                                value=core.config.max_procs)

    @staticmethod
    def _models(core: Any) -> Iterator[Any]:
        m = ["model"]
        gen = CounterMetricFamily("lmos_tokens_generated", "tokens sampled by llm_generate", labels=m)
        pre = CounterMetricFamily("lmos_tokens_prefilled", "input tokens the model had to compute at "
                                  "admission (prompt minus prefix-cache hits)", labels=m)
        prompt = CounterMetricFamily("lmos_prompt_tokens", "prompt tokens submitted to llm_generate",
                                     labels=m)
        computed = CounterMetricFamily("lmos_tokens_computed", "tokens through forward passes (prefill, "
                                       "decode and recompute)", labels=m)
        reqs = CounterMetricFamily("lmos_generate_requests", "llm_generate requests ended", labels=m)
        steps = CounterMetricFamily("lmos_scheduler_steps", "scheduler steps (batched forward passes)",
                                    labels=m)
        step_h = HistogramMetricFamily("lmos_scheduler_step_seconds", "time inside driver.step per step",
                                       labels=m)
        tick_h = HistogramMetricFamily("lmos_scheduler_tick_seconds", "whole scheduler ticks, planning "
                                       "and result handling included", labels=m)
        ttft = HistogramMetricFamily("lmos_time_to_first_token_seconds", "from llm_generate reaching the "
                                     "kernel to its first sampled token", labels=m)
        queue = GaugeMetricFamily("lmos_run_queue_length", "processes waiting for or in a step", labels=m)
        running = GaugeMetricFamily("lmos_running_sequences", "sequences in the latest step", labels=m)
        blocks = GaugeMetricFamily("lmos_kv_blocks", "device KV blocks: used, cached (free but holding a "
                                   "prefix a lookup can revive) and free; they add up to the pool",
                                   labels=["model", "state"])
        seqs = GaugeMetricFamily("lmos_kv_sequences", "sequences by where their KV is",
                                 labels=["model", "location"])
        q_tok = CounterMetricFamily("lmos_prefix_cache_query_tokens", "prompt tokens of new sequences "
                                    "looked up in the prefix cache", labels=m)
        hit_tok = CounterMetricFamily("lmos_prefix_cache_hit_tokens", "of those, tokens served from the "
                                      "cache", labels=m)
        ratio = GaugeMetricFamily("lmos_prefix_cache_hit_ratio", "hit tokens / query tokens since start "
                                  "(rate() the two counters for a window)", labels=m)
        moves = CounterMetricFamily("lmos_kv_moves", "KV swapped out or dropped: when a process blocked "
                                    "(blocked) or to make room for a step (evicted)",
                                    labels=["model", "move", "reason"])
        keeps = CounterMetricFamily("lmos_kv_keeps", "blocking processes whose KV stayed on the device",
                                    labels=m)
        for name, sched in list(core.schedulers.items()):
            lab = [name]
            c = core.counters.models.get(name)
            if c is not None:
                gen.add_metric(lab, c.generated)
                pre.add_metric(lab, c.prefilled)
                prompt.add_metric(lab, c.prompt)
                reqs.add_metric(lab, c.requests)
                q_tok.add_metric(lab, c.prefix_query)
                hit_tok.add_metric(lab, c.prefix_hit)
                ratio.add_metric(lab, c.prefix_hit / c.prefix_query if c.prefix_query else 0.0)
                _histogram(ttft, lab, c.ttft)
            computed.add_metric(lab, sched.tokens)
            steps.add_metric(lab, sched.steps)
            _histogram(step_h, lab, sched.step_hist)
            _histogram(tick_h, lab, sched.tick_hist)
            queue.add_metric(lab, len(sched.runnable))
            running.add_metric(lab, len(sched.running))
            drv = sched.driver
            total, free = drv.limits.num_blocks, drv.kv_free()
            cached_fn = getattr(drv, "kv_cached", None)  # optional: drivers with a prefix cache
            cached = int(cached_fn()) if callable(cached_fn) else 0
            blocks.add_metric([name, "used"], total - free)
            blocks.add_metric([name, "cached"], cached)
            blocks.add_metric([name, "free"], free - cached)
            where = {"device": 0, "host": 0, "none": 0}
            for loc in list(sched.kv.loc.values()):
                where[loc] = where.get(loc, 0) + 1
            for loc, n in where.items():
                seqs.add_metric([name, loc], n)
            counts = sched.kv.counts
            for move in ("swap", "drop"):
                moves.add_metric([name, move, "blocked"], counts.get(move, 0))
                moves.add_metric([name, move, "evicted"], counts.get("evict_" + move, 0))
            keeps.add_metric(lab, counts.get("keep", 0))
        yield from (gen, pre, prompt, computed, reqs, steps, step_h, tick_h, ttft, queue, running, blocks,
                    seqs, q_tok, hit_tok, ratio, moves, keeps)

    @staticmethod
    def _events(core: Any) -> Iterator[Any]:
        bus = core.events
        subs = getattr(bus, "subs", {})
        yield GaugeMetricFamily("lmos_event_subscribers", "event stream subscribers",
                                value=sum(len(v) for v in list(subs.values())))
        yield GaugeMetricFamily("lmos_event_queue_bytes", "bytes of events waiting for subscribers to "
                                "read them (as of the latest publish)", value=getattr(bus, "held", 0))
        yield CounterMetricFamily("lmos_event_subscribers_dropped", "subscribers disconnected for falling "
                                  "behind (overflow)", value=getattr(bus, "dropped", 0))

    @staticmethod
    def _syscalls(counters: Any) -> Iterator[Any]:
        calls = CounterMetricFamily("lmos_syscalls", "syscalls by name and errno (OK: success; name '?': "
                                    "an unknown syscall)", labels=["name", "errno"])
        for (name, errno), n in sorted(counters.calls.items()):
            calls.add_metric([name, _errno_name(errno)], n)
        yield calls
        lat = HistogramMetricFamily("lmos_syscall_duration_seconds", "syscall latency, dispatch to "
                                    "result (blocking calls included)", labels=["name"])
        for name, h in sorted(counters.latency.items()):
            _histogram(lat, [name], h)
        yield lat

    @staticmethod
    def _sandbox() -> Iterator[Any]:
        from lmos.userland.sandbox_slots import caps, worker_slots

        try:
            slots = worker_slots()  # the kernel's loop's slots: scrapes run on that loop
        except RuntimeError:  # collected outside an event loop (a direct registry read)
            return
        _, total = caps()
        yield GaugeMetricFamily("lmos_sandbox_workers", "live sandbox worker processes", value=slots.total)
        yield GaugeMetricFamily("lmos_sandbox_workers_peak", "most live sandbox workers at once",
                                value=slots.peak_total)
        yield GaugeMetricFamily("lmos_sandbox_workers_limit", "cap on live sandbox workers ([sandbox] "
                                "workers_total)", value=total)


class Metrics:
    """One server's registry: the kernel collector and the HTTP request metrics."""

    def __init__(self, kernel: Kernel, access: Access) -> None:
        self.k = kernel
        self.access = access
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(KernelCollector(kernel))
        r = self.registry
        self.requests = Counter("lmos_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.duration = Histogram("lmos_http_request_duration_seconds", "HTTP request time to the last "
                                  "byte (a stream's whole life)", ["method", "route"], buckets=HTTP_BUCKETS,
                                  registry=r)
        self.first_byte = Histogram("lmos_http_time_to_first_byte_seconds", "HTTP request time to the "
                                    "first body byte (the first token of a stream)", ["method", "route"],
                                    buckets=HTTP_BUCKETS, registry=r)
        self.sent = Counter("lmos_http_response_bytes", "HTTP response body bytes", ["route"], registry=r)
        self.in_flight = Gauge("lmos_http_requests_in_flight", "HTTP requests being served (open streams "
                               "included)", registry=r)

    async def scrape(self, request: Request) -> Response:
        """``GET /metrics``: the operator only (see the module docstring)."""
        try:
            who = self.access.check(request)
            request.state.uid = who.uid
            core = self.k.core
            if core is None or not core.is_operator(who.uid):
                raise HTTPError(403, "EPERM", "/metrics is for the operator of this kernel; this key acts "
                                f"as uid {who.uid}")
        except HTTPError as exc:
            return error_response(exc.status, exc.errno, exc.message)
        encode, ctype = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self.registry), headers={"content-type": ctype})

    def done(self, scope: Scope, status: int, sent: int, seconds: float, first: float | None) -> None:
        """One request ended: count it and write its access-log line."""
        route = getattr(scope.get("route"), "path", None)
        label = route if isinstance(route, str) else "none"  # unrouted paths: one label, not one per URL
        method = scope.get("method", "")
        m = method if method in HTTP_METHODS else "other"
        self.requests.labels(m, label, str(status)).inc()
        self.duration.labels(m, label).observe(seconds)
        if first is not None:
            self.first_byte.labels(m, label).observe(first)
        self.sent.labels(label).inc(sent)
        if ACCESS.isEnabledFor(logging.INFO):
            uid = scope.get("state", {}).get("uid")
            ACCESS.info(msgspec.json.encode({
                "method": method, "route": route, "path": scope.get("path", ""), "status": status,
                "duration_s": round(seconds, 6), "uid": uid, "bytes": sent}).decode())


class Observed:
    """ASGI middleware: times every HTTP request, notes its status and bytes, reports to :class:`Metrics`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status, sent = 500, 0  # an exception before the response started is a 500 from Starlette
        first: float | None = None

        async def observe(msg: Message) -> None:
            nonlocal status, sent, first
            kind = msg["type"]
            if kind == "http.response.start":
                status = int(msg["status"])
            elif kind == "http.response.body":
                body = msg.get("body", b"")
                if body and first is None:
                    first = time.perf_counter() - t0
                sent += len(body)
            await send(msg)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.done(scope, status, sent, time.perf_counter() - t0, first)


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a replaced stream is followed)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def log_to_stderr() -> None:
    """Send access-log lines to stderr if the program configured no logging at all.

    ``lmos serve`` runs in the kernel process, whose stderr is the state
    directory's ``kernel.log``; a program that set up logging (or a test's log
    capture) keeps full control, and nothing is added twice.
    """
    if ACCESS.handlers or logging.getLogger().handlers:
        return
    ACCESS.addHandler(_Stderr())
    if ACCESS.level == logging.NOTSET:
        ACCESS.setLevel(logging.INFO)
