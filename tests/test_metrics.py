"""``GET /metrics`` and the access log: the figures move after real work, auth holds, lines are logged."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httputil import client, served
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

import lmos
from lmos.drivers.scripted import ScriptedDriver

pytestmark = pytest.mark.anyio
OP, USER = "op-key", "user-key"  # the operator's key and an ordinary user's
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


class Srv:
    def __init__(self, k: lmos.Kernel, op: httpx.AsyncClient, user: httpx.AsyncClient,
                 anon: httpx.AsyncClient) -> None:
        self.k, self.op, self.user, self.anon = k, op, user, anon


@pytest.fixture
async def srv() -> AsyncIterator[Srv]:
    keys = {OP: os.getuid(), USER: 4242}  # the test's own user owns the (in-memory) state: the operator
    async with lmos.Kernel(model=ScriptedDriver("echo", num_blocks=512), state_dir=":memory:") as k, \
            served(k, keys=keys) as base, client(base, OP) as op, client(base, USER) as user, \
            client(base) as anon:
        yield Srv(k, op, user, anon)


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(srv: Srv) -> Samples:
    r = await srv.op.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def get(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def delta(after: Samples, before: Samples, metric: str, /, **labels: str) -> float:
    return get(after, metric, **labels) - get(before, metric, **labels)


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum over every sample of ``metric`` whose labels include ``labels``."""
    return sum(v for (n, lab), v in samples.items()
               if n == metric and set(labels.items()) <= set(lab))


async def test_a_completion_moves_the_figures(srv: Srv) -> None:
    assert (await srv.op.get("/v1/health")).status_code == 200  # starts the key's session (one spawn)
    before = await scrape(srv)
    r = await srv.op.post("/v1/complete", json={"prompt": "hello metrics", "max_tokens": 64})
    assert r.status_code == 200, r.text
    body = r.json()
    after = await scrape(srv)
    name = srv.k.core.default_model if srv.k.core else ""
    m = {"model": name or ""}
    gen = delta(after, before, "lmos_tokens_generated_total", **m)
    assert gen == len(body["token_ids"]) == len("hello metrics") + 1  # the echo and its EOS
    assert delta(after, before, "lmos_tokens_prefilled_total", **m) >= len("hello metrics")
    assert delta(after, before, "lmos_scheduler_steps_total", **m) >= gen
    step_count = get(after, "lmos_scheduler_step_seconds_count", **m)
    assert step_count == get(after, "lmos_scheduler_steps_total", **m)
    assert get(after, "lmos_scheduler_tick_seconds_bucket", le="+Inf", **m) == step_count
    assert delta(after, before, "lmos_time_to_first_token_seconds_count", **m) == 1
    assert delta(after, before, "lmos_generate_requests_total", **m) == 1
    assert delta(after, before, "lmos_syscalls_total", name="spawn", errno="OK") == 1
    assert get(after, "lmos_syscall_duration_seconds_count", name="llm_generate") >= 1
    assert delta(after, before, "lmos_http_requests_total", method="POST", route="/v1/complete",
                 status="200") == 1
    assert get(after, "lmos_http_response_bytes_total", route="/v1/complete") == len(r.content)
    # the scrape itself is counted too (the one in flight shows up on the next)
    assert get(after, "lmos_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    # KV blocks partition the pool; the process table and the sandbox are reported
    assert total(after, "lmos_kv_blocks", **m) == 512
    assert get(after, "lmos_processes", state="running") >= 1  # init, the HTTP session
    assert ("lmos_sandbox_workers", ()) in after and ("lmos_run_queue_length", (("model", name),)) in after


async def test_syscall_errors_are_counted_by_errno(srv: Srv) -> None:
    r = await srv.op.delete("/v1/processes/999999")
    assert r.status_code == 404
    after = await scrape(srv)
    assert get(after, "lmos_syscalls_total", name="kill", errno="ESRCH") == 1
    # an unknown path is one label, however many different URLs are tried
    for path in ("/nope/1", "/nope/2"):
        assert (await srv.op.get(path)).status_code == 404
    after = await scrape(srv)
    assert get(after, "lmos_http_requests_total", method="GET", route="none", status="404") == 2


async def test_only_the_operator_may_scrape(srv: Srv) -> None:
    assert (await srv.anon.get("/metrics")).status_code == 401
    r = await srv.user.get("/metrics")
    assert r.status_code == 403 and r.json()["error"]["errno"] == "EPERM"
    bad_host = await srv.op.get("/metrics", headers={"host": "evil.example"})
    assert bad_host.status_code == 403
    ok = await srv.op.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in om_families(ok.text)}
    assert {"lmos_processes", "lmos_syscalls", "lmos_http_requests"} <= names
    # nothing lands in the process-wide default registry: many kernels share one process
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("lmos_")]


async def test_one_access_log_line_per_request(srv: Srv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lmos.access")
    r = await srv.op.get("/v1/processes/1234567")
    assert r.status_code == 404
    assert (await srv.anon.get("/v1/health")).status_code == 401
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "lmos.access"]
    assert len(lines) == 2, lines
    first: dict[str, Any] = lines[0]
    assert first == {"method": "GET", "route": "/v1/processes/{pid}", "path": "/v1/processes/1234567",
                     "status": 404, "duration_s": first["duration_s"], "uid": os.getuid(),
                     "bytes": len(r.content)}
    assert 0 < first["duration_s"] < 10
    assert lines[1]["status"] == 401 and lines[1]["uid"] is None and lines[1]["route"] == "/v1/health"


async def test_streams_report_first_byte_and_whole_life(srv: Srv) -> None:
    async with srv.op.stream("POST", "/v1/complete", json={"prompt": "abcdef", "max_tokens": 8,
                                                           "stream": True}) as r:
        assert r.status_code == 200
        body = await r.aread()
    after = await scrape(srv)
    lab = {"method": "POST", "route": "/v1/complete"}
    assert get(after, "lmos_http_time_to_first_byte_seconds_count", **lab) == 1
    assert get(after, "lmos_http_response_bytes_total", route="/v1/complete") == len(body)
    assert get(after, "lmos_http_request_duration_seconds_sum", **lab) \
        >= get(after, "lmos_http_time_to_first_byte_seconds_sum", **lab)
    assert get(after, "lmos_http_requests_in_flight") == 1  # the scrape itself


async def test_prefix_cache_hits_and_cached_blocks() -> None:
    """With the HF driver: a second prompt sharing a prefix is served partly from the cache."""
    pytest.importorskip("transformers")
    from models import tiny_model

    from lmos.drivers.hf import HFDriver
    from lmos.server.metrics import KernelCollector

    drv = HFDriver(tiny_model("llama"), block_size=16, kv_memory="4MiB", max_seqs=4)
    shared = list(range(3, 51))  # three full blocks
    async with lmos.Kernel(model=drv, state_dir=":memory:") as k:
        await k.complete([*shared, 60, 61], max_tokens=3, temperature=0)
        await k.complete([*shared, 70, 71], max_tokens=3, temperature=0)
        got: Samples = {}
        for fam in KernelCollector(k).collect():
            for s in fam.samples:
                got[(s.name, tuple(sorted(s.labels.items())))] = s.value
        m = {"model": next(iter(k.core.schedulers)) if k.core else ""}
    assert get(got, "lmos_prefix_cache_query_tokens_total", **m) == 2 * 50
    assert get(got, "lmos_prefix_cache_hit_tokens_total", **m) == 48  # the second prompt's three blocks
    assert get(got, "lmos_prefix_cache_hit_ratio", **m) == pytest.approx(0.48)
    assert get(got, "lmos_tokens_prefilled_total", **m) == 100 - 48
    assert get(got, "lmos_kv_blocks", state="cached", **m) >= 3  # freed, still holding the prefix
    assert total(got, "lmos_kv_blocks", **m) == drv.limits.num_blocks
