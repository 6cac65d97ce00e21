"""The cluster driver on a local Ray instance: two replica actors of a small random-init model.

Every check is token-level against a single replica (lmos's HF driver alone in this process,
same config and seed): placement with prefix affinity, a replica killed mid-generation,
migration by KV move and by recompute, the kernel on top; and bad input refused in one line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from models import Loop, prompt, tiny_config

from lmos.drivers.base import SamplingParams, StepItem, StepPlan
from lmos.drivers.ray import RayDriver
from lmos.drivers.ray_cluster import load_cluster
from lmos.drivers.ray_replica import ModelSpec, build_driver
from lmos.errors import Errno, SyscallError

pytestmark = pytest.mark.ray
GREEDY = SamplingParams(temperature=0.0)
NEW = 12
SYSTEM = prompt(99, 40)  # a shared "system prompt": two full blocks of 16 and a partial one


def spec(seed: int = 1234, **over: Any) -> ModelSpec:
    cfg = tiny_config("llama", **over).to_dict()
    return ModelSpec(config=cfg, seed=seed, device="cpu", kv_memory="4MiB", max_seqs=8,
                     max_tokens_per_step=128)


PROMPTS = [SYSTEM + prompt(i, 5 + 3 * i) for i in range(6)] + [prompt(50 + i, 20) for i in range(2)]
_REF: dict[int, list[int]] = {}


def single(prompts: list[list[int]]) -> list[list[int]]:
    """What one replica (the HF driver alone, here) produces greedily."""
    key = hash(tuple(map(tuple, prompts)))
    if key not in _REF:
        loop = Loop(build_driver(spec()))
        for i, p in enumerate(prompts):
            loop.add(i, p, NEW)
        out = loop.run()
        _REF[key] = [out[i] for i in range(len(prompts))]
    return [list(x) for x in _REF[key]]


@pytest.fixture(scope="module")
def shared(ray_local: Any) -> Iterator[RayDriver]:
    """Two replicas for the whole module (starting them is most of the time these tests take)."""
    drv = load_cluster("local", spec(), replicas=2, num_cpus=0.5, start_timeout=240)
    yield drv
    drv.close()


@pytest.fixture
def cluster(shared: RayDriver) -> Iterator[RayDriver]:
    """The shared cluster with fresh statistics; every sequence a test left is freed after it."""
    shared.placement.stats = type(shared.placement.stats)()
    shared.placement.mode, shared.bandwidth, shared.migrate = "affinity", 1e9, True
    yield shared
    for sid in list(shared.seqs):
        shared.free(sid)
    shared.step(StepPlan())  # flush the frees


def run(drv: RayDriver, prompts: list[list[int]], hook: Any = None, waves: int = 2) -> list[list[int]]:
    """Admit the prompts in ``waves`` (later ones after a step, so the shared prefix is computed
    and cached by then), then run to the end."""
    loop = Loop(drv)  # type: ignore[arg-type]
    per = -(-len(prompts) // waves)

    def step() -> None:
        for seq_id, tok in drv.step(loop.plan()).items():
            if tok is not None:
                loop.out[seq_id].append(tok)
        loop.steps += 1

    loop.add(0, prompts[0], NEW)
    step()  # the first sequence's prefill: its prompt blocks are cached now
    for i in range(1, len(prompts)):
        loop.add(i, prompts[i], NEW)
        if i % per == 0:
            step()
    out = loop.run(hook)
    return [out[i] for i in range(len(prompts))]


def test_tokens_equal_a_single_replica(cluster: RayDriver) -> None:
    got = run(cluster, PROMPTS)
    assert got == single(PROMPTS)
    st = cluster.stats
    assert st["live"] == 2 and min(st["loads"]) > 0  # both replicas served sequences
    # sequences admitted after the first one's prefill found its two full prompt blocks cached
    assert st["hit_tokens"] >= 2 * 32 and st["prefix_hit_rate"] > 0.2


@pytest.mark.parametrize("bandwidth", [1e15, 1.0])  # moving KV is free / recomputing is cheaper
def test_migration_keeps_tokens(cluster: RayDriver, bandwidth: float) -> None:
    cluster.bandwidth = bandwidth
    moved: list[int] = []

    def hook(step: int) -> None:
        if step in (5, 9):  # move every sequence to the other replica, twice
            for sid, seq in list(cluster.seqs.items()):
                cluster._migrate(sid, 1 - seq.replica)
                moved.append(sid)

    got = run(cluster, PROMPTS, hook)
    assert moved and got == single(PROMPTS)
    st = cluster.stats
    if bandwidth > 1:
        assert st["moved_kv"] > 0
    else:
        assert st["moved_kv"] == 0 and st["recomputed"] > 0


def test_imbalance_migrates(cluster: RayDriver) -> None:
    cluster.placement.mode = "least"
    prompts = PROMPTS
    loop = Loop(cluster)  # type: ignore[arg-type]
    for i, p in enumerate(prompts):
        loop.add(i, p, NEW)
    for sid in range(len(prompts)):  # pile every sequence onto replica 0 (recomputed there)
        if cluster.seqs[sid].replica != 0:
            cluster._migrate(sid, 0)
    before = cluster.placement.stats.migrations
    out = loop.run()
    assert cluster.placement.stats.migrations > before  # the rebalance moved some back
    assert [out[i] for i in range(len(prompts))] == single(prompts)


def test_fork_and_constrained_decoding(cluster: RayDriver) -> None:
    """A fork shares its parent's replica and KV; a constraint (a closure, pickled to the replica)
    limits what the child samples.  Both equal the HF driver given the same calls."""
    threes = tuple(range(0, 256, 3))

    def allowed(tokens: list[int]) -> tuple[int, ...]:
        return threes

    ref = build_driver(spec())
    base = len(PROMPTS[1])

    def gen(d: Any, sids: list[int], upto: int) -> None:
        while any(d.length(s) < base + upto for s in sids):
            items = [StepItem(s, d.pending(s)) for s in sids if d.length(s) < base + upto]
            d.step(StepPlan(items=items))

    for d in (cluster, ref):
        d.add(100, PROMPTS[1], GREEDY)
        gen(d, [100], 4)
        d.fork(100, 101)
        d.constrain(101, allowed)
        gen(d, [100, 101], 10)
    assert cluster.seqs[101].replica == cluster.seqs[100].replica
    assert [cluster.tokens(s) for s in (100, 101)] == [ref.tokens(s) for s in (100, 101)]
    assert all(t % 3 == 0 for t in cluster.tokens(101)[base + 4:])
    assert cluster.tokens(100)[base + 4:] != cluster.tokens(101)[base + 4:]


def test_kernel_on_the_cluster(cluster: RayDriver) -> None:
    import anyio

    import lmos

    async def main() -> list[list[int]]:
        out: list[list[int]] = [[] for _ in PROMPTS]
        async with lmos.Kernel(model=cluster, state_dir=":memory:") as k:
            async def one(i: int) -> None:
                await anyio.sleep(0.05 * i)
                r = await k.complete(PROMPTS[i], max_tokens=NEW, temperature=0)
                out[i] = r.token_ids

            async with anyio.create_task_group() as tg:
                for i in range(len(PROMPTS)):
                    tg.start_soon(one, i)
        return out

    assert anyio.run(main) == single(PROMPTS)


def test_kill_a_replica_mid_generation(cluster: RayDriver, ray_local: Any) -> None:
    killed: list[float] = []

    def hook(step: int) -> None:
        if step == 6 and not killed:
            ray_local.kill(cluster.handles[0], no_restart=True)
            killed.append(time.monotonic())

    got = run(cluster, PROMPTS, hook)
    assert killed
    assert got == single(PROMPTS)  # nothing lost: the survivor recomputed and continued
    st = cluster.stats
    assert st["replica_deaths"] == 1 and st["resumed"] > 0 and st["live"] == 1


def test_kernel_survives_a_replica_death(ray_local: Any) -> None:
    """Through the kernel: processes generating on both replicas, one replica killed once they
    are under way; every completion still equals a single replica's."""
    import anyio

    import lmos

    drv = load_cluster("local", spec(), replicas=2, num_cpus=0.5, start_timeout=240)

    async def main() -> list[list[int]]:
        out: list[list[int]] = [[] for _ in PROMPTS]
        async with lmos.Kernel(model=drv, state_dir=":memory:") as k:
            async def one(i: int) -> None:
                await anyio.sleep(0.05 * i)
                r = await k.complete(PROMPTS[i], max_tokens=NEW, temperature=0)
                out[i] = r.token_ids

            async def killer() -> None:
                start = drv.steps
                while drv.steps < start + 6 or not any(s.replica == 0 for s in drv.seqs.values()):
                    await anyio.sleep(0.005)  # until processes are under way on replica 0
                ray_local.kill(drv.handles[0], no_restart=True)

            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                for i in range(len(PROMPTS)):
                    tg.start_soon(one, i)
        return out

    try:
        got = anyio.run(main)
        assert drv.stats["replica_deaths"] == 1 and drv.stats["resumed"] > 0
        assert got == single(PROMPTS)
    finally:
        drv.close()


def test_mismatched_models_are_refused(ray_local: Any) -> None:
    with pytest.raises(SyscallError) as err:
        load_cluster("local", [spec(), spec(seed=7)], num_cpus=0.5, start_timeout=240)
    assert err.value.errno is Errno.EINVAL
    assert "replicas load different models" in err.value.message and "weights hash" in err.value.message
    assert "\n" not in err.value.message


def test_unreachable_address_fails_fast() -> None:
    t0 = time.monotonic()
    with pytest.raises(SyscallError) as err:
        load_cluster("ray://127.0.0.1:1", spec())
    assert err.value.errno is Errno.EIO and "no Ray cluster answers at ray://127.0.0.1:1" in err.value.message
    assert time.monotonic() - t0 < 10


def test_kernel_selects_the_cluster_from_its_settings(tmp_path: Any) -> None:
    """``cluster = "local"`` (what ``lmos serve --cluster local`` sets): the kernel starts its own Ray
    instance and replicas of a model directory, in a fresh process, and generates what one
    replica does.  (Ray's processes must outlive the thread that started them.)"""
    import json
    import os
    import subprocess
    import sys

    from models import save_model_dir, tiny_model

    save_model_dir(tiny_model("llama"), tmp_path)  # what spec() builds: same config, same seed
    code = (
        "import anyio, json, sys, lmos\n"
        "async def main():\n"
        f"    async with lmos.Kernel(model={str(tmp_path)!r}, state_dir=':memory:') as k:\n"
        f"        r = await k.complete({PROMPTS[0]!r}, max_tokens={NEW}, temperature=0)\n"
        "        print(json.dumps([r.token_ids, k.core.scheduler('default').driver.name]))\n"
        "anyio.run(main)\n"
    )
    env = dict(os.environ, LMOS_CLUSTER="local", LMOS_CLUSTER_REPLICA_CPUS="0.5", LMOS_KV_MEMORY="4MiB",
               LMOS_MAX_SEQS="8", LMOS_MAX_TOKENS_PER_STEP="128", RAY_ADDRESS="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    tokens, name = json.loads(out.stdout.strip().splitlines()[-1])
    assert name.startswith("ray:") and name.endswith("x2")
    assert tokens == single(PROMPTS)[0]
