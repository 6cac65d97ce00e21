"""Starting a Ray cluster driver: reach the cluster, start the replicas, check they agree.

``load_cluster(address, spec, ...)`` returns a :class:`lmos.drivers.ray.RayDriver`.
``address`` is what ``lmos serve --cluster`` (or the ``cluster`` setting) says:

- ``ray://HOST:PORT`` : a remote cluster through Ray Client (the head's port 10001);
- ``HOST:PORT`` : a cluster this machine is part of, by its GCS address (``ray start`` prints it);
- ``auto`` : the cluster this machine already belongs to (``ray start`` ran here), else a local one;
- ``local`` : a fresh single-machine Ray instance owned by this process.

Bad input ends in one line, never a hang: an address that does not answer
a TCP connect within ``connect_timeout`` is reported before Ray is asked to
connect (Ray Client would otherwise retry for minutes); replicas that do not
come up within ``start_timeout`` (no resources, a node without the model) are
killed and reported; replicas whose model config or weights differ are killed
and the driver refuses to start.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from lmos.config import Config
from lmos.drivers.ray import RayDriver
from lmos.drivers.ray_placement import PlacementMode
from lmos.drivers.ray_replica import ModelSpec, Replica, ReplicaInfo
from lmos.errors import Errno, SyscallError

log = logging.getLogger("lmos.ray")


def _import_ray() -> Any:
    try:
        import ray

        if not hasattr(ray, "remote"):  # a folder named ray on sys.path, not the package
            raise ImportError("no ray")
    except ImportError:
        raise SyscallError(Errno.ENOENT, "the cluster driver needs Ray: pip install 'lmos[ray]'") from None
    return ray


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``ray://HOST:PORT`` or ``HOST:PORT``; None for ``auto`` / ``local``."""
    rest = address.removeprefix("ray://")
    if rest in ("auto", "local", ""):
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SyscallError(Errno.EINVAL, f"bad cluster address {address!r} (ray://HOST:PORT, HOST:PORT, auto "
                           "or local)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """One TCP connect to the address, so that a dead address fails in seconds."""
    hp = host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise SyscallError(Errno.EIO, f"no Ray cluster answers at {address} ({why})") from None


def connect(address: str, *, num_cpus: int | None = None, timeout: float = 30.0) -> Callable[[], None] | None:
    """``ray.init`` for ``address``; returns the function that disconnects (and stops the Ray
    instance this process started), or None when Ray was already initialised by the caller.
    A connection that does not complete within ``timeout`` is an error.

    ``ray.init`` runs on a thread that lives until the disconnect: a local instance's processes
    (GCS, raylet) are started with a parent-death signal, which Linux sends when the *thread*
    that forked them exits, so an init on a short-lived worker thread would kill them at once.
    """
    ray = _import_ray()
    check_reachable(address)
    if ray.is_initialized():
        return None
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING}
    attempts: list[dict[str, Any]]
    if address == "local":
        attempts = [{"num_cpus": num_cpus}]
    elif address == "auto":  # this machine's cluster, else a local instance
        attempts = [{"address": "auto"}, {"num_cpus": num_cpus}]
    else:
        attempts = [{"address": address}]
    failure: list[BaseException] = []
    ready, stop = threading.Event(), threading.Event()

    def home() -> None:
        for i, kw in enumerate(attempts):
            try:
                ray.init(**common, **kw)
                failure.clear()
                break
            except BaseException as exc:  # reported on the caller's thread
                failure.append(exc)
                if i == len(attempts) - 1:
                    ready.set()
                    return
        ready.set()
        stop.wait()
        ray.shutdown()

    t = threading.Thread(target=home, name="lmos-ray", daemon=True)
    t.start()
    if not ready.wait(timeout):
        raise SyscallError(Errno.ETIMEDOUT, f"the Ray cluster at {address} did not accept a connection "
                           f"within {timeout:.0f} s")
    if failure:
        first = str(failure[-1]).strip().splitlines()
        raise SyscallError(Errno.EIO, f"cannot join the Ray cluster at {address}: "
                           f"{first[0] if first else type(failure[-1]).__name__}")

    def disconnect() -> None:
        stop.set()
        t.join(30)

    return disconnect


def check_consistent(infos: list[ReplicaInfo]) -> None:
    """Every replica must compute the same function: same config, same weights."""
    ref = infos[0]
    for info in infos[1:]:
        for what, a, b in (("config", ref.config_hash, info.config_hash),
                           ("weights", ref.weights_hash, info.weights_hash)):
            if a != b:
                raise SyscallError(Errno.EINVAL, f"replicas load different models: replica {info.index} "
                                   f"on {info.node} has {what} hash {b}, replica {ref.index} on {ref.node} "
                                   f"has {a}")


def start_replicas(specs: list[ModelSpec], *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                   timeout: float = 600.0) -> tuple[list[Any], list[ReplicaInfo]]:
    """One replica actor per spec, spread over the nodes; their infos once every one has loaded."""
    ray = _import_ray()
    actor = ray.remote(Replica)
    handles = [actor.options(num_cpus=num_cpus, num_gpus=num_gpus, scheduling_strategy="SPREAD",
                             max_restarts=0, max_task_retries=0).remote(spec, i)
               for i, spec in enumerate(specs)]
    refs = [h.info.remote() for h in handles]
    _ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    try:
        if waiting:
            n = len(waiting)
            raise SyscallError(Errno.ETIMEDOUT, f"{n} of {len(refs)} replicas did not start within "
                               f"{timeout:.0f} s (too few free CPUs/GPUs in the cluster?)")
        infos: list[ReplicaInfo] = []
        for i, ref in enumerate(refs):
            try:
                infos.append(ray.get(ref))
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                msg = cause.message if isinstance(cause, SyscallError) else str(exc).strip().splitlines()[-1]
                raise SyscallError(Errno.EIO, f"replica {i} failed to load its model: {msg}") from None
            except ray.exceptions.RayActorError as exc:
                raise SyscallError(Errno.EIO, f"replica {i} died while loading its model: "
                                   f"{str(exc).strip().splitlines()[0]}") from None
        check_consistent(infos)
    except BaseException:
        for h in handles:
            ray.kill(h)
        raise
    return handles, infos


def load_cluster(address: str, spec: ModelSpec | list[ModelSpec], *, replicas: int = 0,
                 num_cpus: float = 1.0, num_gpus: float | None = None, local_cpus: int | None = None,
                 placement: PlacementMode = "affinity", start_timeout: float = 600.0,
                 connect_timeout: float = 30.0, step_timeout: float = 120.0) -> RayDriver:
    """Join (or start) the Ray cluster at ``address`` and start the replicas.

    ``spec`` is the model every replica loads (a list gives each its own: tests use it to
    check that differing models are refused).  ``replicas`` 0 = one per alive node (two
    on a single-node cluster).  ``num_gpus`` None = one per replica when the cluster has that
    many GPUs, an equal share of them when it has fewer, none when it has none.
    """
    ray = _import_ray()
    disconnect = connect(address, num_cpus=local_cpus, timeout=connect_timeout)
    try:
        specs = spec if isinstance(spec, list) else []
        if not specs:
            assert isinstance(spec, ModelSpec)
            n = replicas
            if n <= 0:
                nodes = [x for x in ray.nodes() if x.get("Alive")]
                n = len(nodes) if len(nodes) > 1 else 2
            specs = [spec] * n
        if num_gpus is None:  # a GPU each, or a share of them when there are fewer GPUs than replicas
            gpus = float(ray.cluster_resources().get("GPU", 0))
            num_gpus = min(1.0, gpus / len(specs)) if gpus > 0 else 0.0
        handles, infos = start_replicas(specs, num_cpus=num_cpus, num_gpus=num_gpus, timeout=start_timeout)
        tokenizer = ray.get(handles[0].tokenizer.remote())
    except BaseException:
        if disconnect is not None:
            disconnect()
        raise
    log.info("cluster of %d replicas: %s", len(handles), ", ".join(f"{i.node} ({i.device})" for i in infos))
    return RayDriver(handles, infos, tokenizer=tokenizer, placement=placement, step_timeout=step_timeout,
                     on_close=disconnect)


def load_from_config(path: str, config: Config) -> RayDriver:
    """The cluster driver the ``cluster*`` settings describe, every replica loading ``path``
    (the same model directory on every node)."""
    spec = ModelSpec(path=path, device=config.device, dtype=config.dtype, block_size=config.block_size,
                     kv_memory=config.kv_memory, max_seqs=config.max_seqs,
                     max_tokens_per_step=config.max_tokens_per_step)
    return load_cluster(config.cluster, spec, replicas=config.cluster_replicas,
                        num_cpus=config.cluster_replica_cpus, placement=config.cluster_placement)
