"""Settings: one object, loaded from a TOML file, ``LMOS_*`` variables and arguments.

Precedence, lowest first: the defaults below, the TOML file (``LMOS_CONFIG`` or
``$LMOS_HOME/config.toml``), environment variables named ``LMOS_<FIELD>`` (upper
case), then keyword arguments.  Unknown keys are an error rather than silently
ignored, because a misspelt setting that does nothing is worse than a crash at boot.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from lmos.errors import Errno, SyscallError

Policy = Literal["fifo", "rr", "priority", "fair"]
KVPolicy = Literal["adaptive", "keep", "swap", "drop"]


class Users(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Who front ends act as (the ``[users]`` table; see lmos/cli/identity.py).

    A local front end is identified by SO_PEERCRED on the control socket plus the
    kernel's secret.  Root is not trusted to mean "run apps as root": its front
    ends act as ``root_runs_as`` unless ``--as-root`` is given, so a mistake in an
    app cannot do what only root can.  ``local`` names the other local users who
    may attach (the socket is private to its owner otherwise); ``keys`` maps HTTP
    API keys to a user name or numeric uid.
    """

    root_runs_as: str = "nobody"
    local: list[str] = msgspec.field(default_factory=list)
    keys: dict[str, str] = msgspec.field(default_factory=dict)


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 << 30


def _default_workers_total() -> int:
    """One live sandbox worker per GiB of memory (a worker may grow to its 512 MiB
    address-space ceiling), at least 4 and at most 256."""
    return max(4, min(256, _memory_bytes() >> 30))


def _default_workers_per_uid() -> int:
    """A quarter of the global cap, so no single user can take every worker."""
    return max(2, _default_workers_total() // 4)


class SandboxConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The sandbox for untrusted code (the ``[sandbox]`` table; lmos/userland/sandbox.py).

    ``allow_weak_isolation``: run untrusted code even where the worker process has no
    file wall (neither Landlock nor mount namespaces on this system).  A worker that
    is not root then keeps the user's uid, so a program that escaped the restricted
    language could read the user's files and the state database; off by default.
    ``workers_total`` / ``workers_per_uid``: caps on live sandbox workers, sized to
    the machine's memory by default.
    """

    allow_weak_isolation: bool = False
    workers_per_uid: int = msgspec.field(default_factory=_default_workers_per_uid)
    workers_total: int = msgspec.field(default_factory=_default_workers_total)

    def __post_init__(self) -> None:
        if self.workers_per_uid < 1 or self.workers_total < 1:
            raise ValueError("sandbox.workers_per_uid and sandbox.workers_total must be at least 1")


class RemoteModel(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A model behind an OpenAI-compatible server (a ``[models.NAME]`` table; lmos/drivers/remote.py).

    ``lmos.Kernel(model="NAME")`` (or ``--model NAME``) loads it.  The API key is read from
    the environment variable ``api_key_env`` names, never from the file.  ``tokenizer``:
    a local model directory or "builtin" whose tokenizer is the server model's; with it,
    prompts go as token ids to ``/v1/completions`` (if the server accepts them), without
    it the process's messages go to ``/v1/chat/completions``.  ``context_window`` 0 =
    what the server's ``/v1/models`` reports (``max_model_len``), else 4096.
    """

    url: str  # the API base, e.g. "http://127.0.0.1:8000/v1"
    model: str  # the model name the server serves
    api_key_env: str = "LMOS_REMOTE_API_KEY"
    max_in_flight: int = 8  # requests on the server at once (models on one host:port share the least)
    timeout: float = 60.0  # seconds without a byte from the server before a request is retried
    retries: int = 3  # retries of a timeout, 5xx or lost connection before the syscall fails with EIO
    context_window: int = 0
    tokenizer: str = ""
    api: Literal["auto", "completions", "chat"] = "auto"

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.retries < 0 or not self.timeout > 0 or self.context_window < 0:
            raise ValueError("models: max_in_flight >= 1, retries >= 0, timeout > 0, context_window >= 0")


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every tunable of a kernel instance."""

    # storage
    state_dir: str = ""  # "" = $LMOS_HOME or ~/.lmos; ":memory:" keeps nothing
    # scheduling
    policy: Policy = "fair"
    quantum_tokens: int = 16  # round-robin quantum
    aging_per_second: float = 4.0  # priority boost per second spent waiting
    max_procs: int = 4096  # live (not yet reaped) processes in the table
    max_procs_per_uid: int = 2048
    # the last procs_reserve slots of the table go only to uids with fewer than procs_reserved_per_uid
    # processes: users who fill the rest together cannot lock a third one out
    procs_reserve: int = 512
    procs_reserved_per_uid: int = 16
    # IPC (kernel/ipc.py): channels a uid may hold open, bytes queued in one channel and per uid
    ipc_channels_per_uid: int = 256
    ipc_channel_bytes: int = 4 << 20
    ipc_bytes_per_uid: int = 64 << 20
    max_queue: int = 4096  # pending generation requests per driver
    max_children: int = 1024  # per process
    # driver defaults (a driver may clamp these)
    device: str = "auto"  # "cpu", "cuda", "cuda:N" or "auto"
    dtype: str = "auto"  # "auto" = fp32 on CPU, the checkpoint's dtype on CUDA
    block_size: int = 16
    kv_memory: str = "0.5"  # bytes ("512MiB") or a fraction of free device memory
    # 0 = sized at start from a short measured probe of the model (lmos/drivers/autotune.py)
    max_seqs: int = 0
    max_tokens_per_step: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch's default (the physical cores)
    kv_policy: KVPolicy = "adaptive"
    # a CPU step predicted shorter than this runs on the event-loop thread (faster: one OpenMP team),
    # longer ones in a worker thread so the loop stays responsive; 0 = always a worker thread
    inline_step_ms: float = 50.0
    # tracing
    trace_per_process: int = 256  # syscall trace entries kept in memory per process
    # context memory: keep an ended process's pages in the store (for replay; they count against its
    # owner's store quota) rather than delete them when it ends (kernel/memmanager.py)
    keep_ended_pages: bool = False
    # the syscall journal (kernel/sysjournal.py, docs/durability.md): every completed syscall of a
    # process, durable before the program sees its result; None = on when the state dir is on disk
    journal: bool | None = None
    journal_keep_seconds: float = 7 * 86400.0  # a reaped process's journal is kept this long (0: not)
    # identity of front ends (TOML table [users])
    users: Users = msgspec.field(default_factory=Users)
    # the sandbox for untrusted code (TOML table [sandbox])
    sandbox: SandboxConfig = msgspec.field(default_factory=SandboxConfig)
    # models behind OpenAI-compatible servers, by name (TOML tables [models.NAME])
    models: dict[str, RemoteModel] = msgspec.field(default_factory=dict)
    # the cluster driver (lmos/drivers/ray*.py; lmos serve --cluster): "" = none; "ray://HOST:PORT" (Ray
    # Client), "HOST:PORT" (a GCS address), "auto" (the cluster of this machine, else a local one) or
    # "local": the model runs as replicas on Ray actors, one step-level driver over them
    cluster: str = ""
    cluster_replicas: int = 0  # 0 = one per alive node (two on a single machine)
    cluster_replica_cpus: float = 1.0  # CPUs each replica actor reserves (and a GPU, if the cluster has them)
    cluster_placement: Literal["affinity", "random", "least"] = "affinity"


def default_home() -> Path:
    return Path(os.environ.get("LMOS_HOME") or Path.home() / ".lmos")


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    fields = set(Config.__struct_fields__)
    out: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith("LMOS_") or key in ("LMOS_HOME", "LMOS_CONFIG"):
            continue
        name = key[5:].lower()
        if name in fields:
            out[name] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build a :class:`Config`; raises ``SyscallError(EINVAL)`` on a bad setting."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    file = Path(path) if path else None
    if file is None and env.get("LMOS_CONFIG"):
        file = Path(env["LMOS_CONFIG"])
    if file is None:
        candidate = Path(env.get("LMOS_HOME") or default_home()) / "config.toml"
        file = candidate if candidate.is_file() else None
    if file is not None:
        try:
            doc = tomllib.loads(file.read_text())
            merged.update(doc.get("lmos", {}))
            if "users" in doc:
                merged["users"] = doc["users"]
            if "sandbox" in doc:
                merged["sandbox"] = doc["sandbox"]
            if "models" in doc:
                merged["models"] = doc["models"]
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SyscallError(Errno.EINVAL, f"config file {file}: {exc}") from None
    merged.update(_from_env(env))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise SyscallError(Errno.EINVAL, f"bad setting: {exc}") from None


def parse_bytes(text: str) -> int:
    """'512MiB' / '2GB' / '1048576' -> bytes."""
    units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6,
             "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30}
    s = text.strip().lower()
    num = s.rstrip("abgikm")
    unit = s[len(num):]
    if unit not in units:
        raise SyscallError(Errno.EINVAL, f"bad size {text!r}")
    try:
        return int(float(num) * units[unit])
    except ValueError:
        raise SyscallError(Errno.EINVAL, f"bad size {text!r}") from None
