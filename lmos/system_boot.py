"""Booting ``lmos.Kernel`` (:mod:`lmos.system`): its model driver, app store and userland.

``load_driver`` turns the ``model=`` argument into a Driver; ``_open_app_store``
gives the syscall layer the apps installed in the state directory;
``_register_userland`` registers the built-in apps and the operator's plugins.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lmos.config import Config
from lmos.drivers.base import Driver
from lmos.errors import Errno, SyscallError
from lmos.syscalls import tool as _tool
from lmos.syscalls.table import AppSpec, ProgramRegistry, Syscalls
from lmos.userland.tools import load_entry_points

log = logging.getLogger("lmos")
ModelArg = Driver | str | os.PathLike[str] | None


def load_driver(model: ModelArg, config: Config) -> Driver:
    """A Driver from a Driver, a local model directory, None (the built-in model), or a model
    behind an OpenAI-compatible server: ``openai+http(s)://host:port/v1#name`` or the name of a
    ``[models.NAME]`` table (:mod:`lmos.drivers.remote`).  With the ``cluster`` setting the model
    runs as replicas on a Ray cluster (:mod:`lmos.drivers.ray_cluster`)."""
    if model is not None and not isinstance(model, str | os.PathLike):
        return model
    if isinstance(model, str) and (model.startswith("openai+") or model in config.models):
        from lmos.drivers.remote import load_remote

        return load_remote(model, config)
    if model is None:
        from lmos.models import builtin_model_path

        path = Path(builtin_model_path())
    else:
        path = Path(model).expanduser()
    if config.cluster:  # replicas on a Ray cluster load the model directory on their own nodes
        from lmos.drivers.ray_cluster import load_from_config

        return load_from_config(str(path), config)
    if not path.is_dir():
        raise SyscallError(Errno.ENOENT, f"no model directory at {path}")
    from lmos.drivers.hf import HFDriver

    return HFDriver.from_pretrained(str(path), device=config.device, dtype=config.dtype,
                                    block_size=config.block_size, kv_memory=config.kv_memory,
                                    max_seqs=config.max_seqs, max_tokens_per_step=config.max_tokens_per_step,
                                    threads=config.threads)


def _open_app_store(sys: Syscalls) -> None:
    """Give the syscall layer its app store and register the apps installed in the state directory.

    Every name registered so far (built-in apps, coreutils, plugins) is held:
    an install cannot take it.  An installed app that no longer loads (this
    lmos refuses what an older one accepted) is skipped with a warning rather
    than failing the boot; ``lmos app remove`` still removes it.
    """
    from lmos.kernel.appdb import AppDB
    from lmos.syscalls.apps import AppService
    from lmos.userland.appstore import Loader, build_spec, package_from_files

    builtin = frozenset(sys.programs.apps)
    db = AppDB(sys.kernel.journal)
    sys.apps = AppService(Loader(), db, builtin)
    for rec in db.all():
        if rec.name in builtin:
            log.warning("installed app %s is shadowed by a built-in app of the same name", rec.name)
            continue
        try:
            spec = build_spec(package_from_files(rec.files, origin=rec.name), caps=frozenset(rec.caps),
                              trusted=rec.trusted, origin="installed")
        except SyscallError as exc:
            log.warning("installed app %s cannot be loaded: %s", rec.name, exc.message)
            continue
        sys.programs.register(spec)


def _register_userland(programs: ProgramRegistry, tools: _tool.ToolRegistry, plugins: bool) -> None:
    """Built-in apps from their manifests, then operator tools/apps from entry points."""
    from lmos.userland.apps import builtin_apps
    from lmos.userland.manifest import Manifest, app_spec

    for spec in builtin_apps():
        programs.register(spec)
    if not plugins:
        return
    for t in load_entry_points("lmos.tools"):
        if isinstance(t, _tool.Tool):
            tools.register(t)
    for a in load_entry_points("lmos.apps"):
        if isinstance(a, Manifest):
            a = app_spec(a, trusted=True)
        if isinstance(a, AppSpec):
            programs.register(a)
