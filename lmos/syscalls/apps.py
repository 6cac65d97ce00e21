"""App store syscalls: inspect, install, remove, show and load apps from a folder or from files.

The policy lives here, next to the other checks of the syscall table: who may
install (the operator), what must be granted (every capability and tool the
manifest asks for, again when an upgrade asks for more), when ``force`` is
needed (same version with other content, a downgrade, removing a running
app), and that in-process Python needs an explicit ``trusted``.  What an app
*is* (reading a folder, parsing a manifest, compiling code, building the
runnable entry) belongs to userland, which this layer must not import: the
facade hands the syscall layer an :class:`AppService` whose ``loader`` does it.

Every step that can fail runs before anything is stored, the database write
is committed before the app is registered, and a running process keeps the
:class:`AppSpec` it was spawned with, so an upgrade or removal never changes
what is already running and an error never leaves half an app installed.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

import anyio
import msgspec
from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.kernel.appdb import AppDB, AppRecord
from lmos.syscalls.caps import grants
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Name, Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import AppSpec, Ctx

INSTALL_CAP = "app.install"  # not a manifest capability: only init and the shell (`*`) hold it
MAX_TEMP = 256  # temporary apps loaded and not yet run, kernel-wide
Action = Literal["install", "upgrade", "reinstall", "same", "downgrade"]
HostPath = Annotated[str, Meta(min_length=1, max_length=4096)]
Files = dict[Annotated[str, Meta(min_length=1, max_length=256)], Annotated[str, Meta(max_length=1 << 20)]]


class Package(Protocol):
    """An app read and parsed by the loader, not yet runnable (see ``lmos.userland.appstore``)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def caps(self) -> frozenset[str]: ...  # asked for: capabilities plus tool:NAME per tool
    @property
    def tools(self) -> list[str]: ...
    @property
    def hash(self) -> str: ...
    @property
    def files(self) -> dict[str, str]: ...


class AppLoader(Protocol):
    """What userland provides: read, validate and build apps."""

    def load_dir(self, path: str) -> Package:
        """A host folder (or its app.toml); EINVAL/ENOENT/EACCES with one line on bad input."""
        ...

    def from_files(self, files: dict[str, str]) -> Package: ...

    def check(self, pkg: Package) -> None:
        """Validate what can be without running anything (code compiles under the sandbox)."""
        ...

    def spec(self, pkg: Package, *, caps: frozenset[str], trusted: bool, origin: str) -> AppSpec:
        """The runnable app, with exactly ``caps``."""
        ...


@dataclass
class AppService:
    """Installed apps of one kernel: the loader, the table and the names built-in apps hold."""

    loader: AppLoader
    db: AppDB
    builtin: frozenset[str]
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    lock: anyio.Lock = field(default_factory=anyio.Lock)  # installs and removals, one at a time


class AppSource(Req):
    path: HostPath | None = None  # a host folder or its app.toml, read by the kernel (operator only)
    files: Files | None = None  # relative path -> text; the manifest is files["app.toml"]


class AppInspect(AppSource):
    pass


class AppInstall(AppSource):
    grant: bool = False  # the operator grants every capability and tool the manifest asks for
    force: bool = False  # allow a downgrade or other content under the same version
    trusted: bool = False  # allow entry.kind = "python" (in-process, unsandboxed)
    hash: str | None = None  # the hash app_inspect showed: refuse if the folder changed since


class AppLoad(AppSource):
    grant: bool = False
    hash: str | None = None


class AppRemove(Req):
    name: Name
    force: bool = False  # remove even while a process runs it (that process keeps running)


class AppShow(Req):
    name: Name


class AppPlan(Resp):
    name: str
    version: str
    kind: str
    description: str
    caps: list[str]
    tools: list[str]
    hash: str
    installed_version: str | None
    installed_hash: str | None
    action: str  # install | upgrade | reinstall | same | downgrade
    needs_grant: bool
    needs_force: bool
    trusted_needed: bool


class AppRemoved(Resp):
    name: str
    version: str
    running: list[int]  # pids still running the removed version


class AppDetails(Resp):
    name: str
    version: str
    hash: str
    origin: str  # builtin | installed
    kind: str
    description: str
    caps: list[str]
    tools: list[str]
    model: str | None
    trusted: bool = False
    installed_by: int | None = None
    installed_at: float | None = None
    files: dict[str, int] = msgspec.field(default_factory=dict)  # relative path -> size in bytes
    manifest: str = ""


class AppLoaded(Resp):
    app: str  # the temporary name to spawn, once, from the loading process
    plan: AppPlan


def service(ctx: Ctx) -> AppService:
    svc = ctx.sys.apps
    if svc is None:
        raise SyscallError(Errno.ENOSYS, "this kernel has no app store")
    return svc


def _operator(ctx: Ctx, what: str) -> None:
    if not ctx.kernel.is_operator(ctx.proc.uid, ctx.proc.pid):
        raise SyscallError(Errno.EPERM, f"{what} needs the operator (the owner of the state directory)")


async def _package(ctx: Ctx, req: AppSource) -> Package:
    """Read (a host folder, off the event loop) or take the files, refuse a built-in's name, check it."""
    svc = service(ctx)
    if (req.path is None) == (req.files is None):
        raise SyscallError(Errno.EINVAL, "give exactly one of path and files")
    if req.path is not None:
        # host files are the operator's, and only the shell or init (never an app the operator runs)
        # holds INSTALL_CAP: an app cannot probe the host through a manifest's error messages
        _operator(ctx, "reading a host folder")
        if not grants(ctx.proc.caps, INSTALL_CAP):
            raise SyscallError(Errno.EPERM, f"reading a host folder needs capability {INSTALL_CAP!r}")
        pkg = await anyio.to_thread.run_sync(svc.loader.load_dir, req.path)
    else:
        pkg = svc.loader.from_files(dict(req.files or {}))
    if pkg.name in svc.builtin:
        raise SyscallError(Errno.EEXIST, f"{pkg.name}: the name is held by a built-in app")
    expected = getattr(req, "hash", None)
    if expected is not None and expected != pkg.hash:
        raise SyscallError(Errno.EAGAIN, f"{pkg.name} changed since it was inspected; inspect it again")
    await anyio.to_thread.run_sync(svc.loader.check, pkg)  # compiles code in a sandbox worker: blocks
    return pkg


def _version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    parts = [p for p in re.split(r"[.+_-]", v.strip().lower().lstrip("v")) if p]
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()  # 1.0 == 1
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def plan(pkg: Package, installed: AppRecord | None) -> AppPlan:
    """What installing ``pkg`` over ``installed`` would do and what it needs."""
    caps = sorted(pkg.caps)
    if installed is None:
        action: Action = "install"
        needs_grant = bool(caps)
    elif installed.hash == pkg.hash:
        action, needs_grant = "same", False
    else:
        new, old = _version_key(pkg.version), _version_key(installed.version)
        action = "upgrade" if new > old else "reinstall" if new == old else "downgrade"
        needs_grant = not set(caps) <= set(installed.caps)
    return AppPlan(name=pkg.name, version=pkg.version, kind=pkg.kind, description=pkg.description, caps=caps,
                   tools=list(pkg.tools), hash=pkg.hash,
                   installed_version=installed.version if installed else None,
                   installed_hash=installed.hash if installed else None, action=action,
                   needs_grant=needs_grant, needs_force=action in ("reinstall", "downgrade"),
                   trusted_needed=pkg.kind == "python")


def asked(p: AppPlan) -> str:
    """The capabilities and tools an app asks for, in one line."""
    caps = [c for c in p.caps if not c.startswith("tool:")]
    return (f"capabilities: {', '.join(caps) or 'none'}; tools: {', '.join(p.tools) or 'none'}"
            + ("; runs Python in-process (trusted)" if p.trusted_needed else ""))


@syscall(90, "app_inspect", AppInspect, AppPlan)
async def sys_app_inspect(ctx: Ctx, req: AppInspect) -> AppPlan:
    """What installing an app (``path`` or ``files``) would do: what it asks for, upgrade or not."""
    pkg = await _package(ctx, req)
    return plan(pkg, service(ctx).db.get(pkg.name))


@syscall(91, "app_install", AppInstall, AppPlan, cap=INSTALL_CAP)
async def sys_app_install(ctx: Ctx, req: AppInstall) -> AppPlan:
    """Install (or upgrade) an app; operator only; needs ``grant`` for what it asks, durable when done."""
    _operator(ctx, "installing apps")
    async with service(ctx).lock:  # one change at a time: the plan still holds when it is stored
        return await _install(ctx, req)


async def _install(ctx: Ctx, req: AppInstall) -> AppPlan:
    svc = service(ctx)
    pkg = await _package(ctx, req)
    old = svc.db.get(pkg.name)
    p = plan(pkg, old)
    if p.action == "same":
        return p
    if p.trusted_needed and not req.trusted:
        raise SyscallError(Errno.EPERM, f"{pkg.name}: entry.kind = 'python' runs in-process; "
                           "only the operator may allow it (--trusted)")
    if p.needs_force and not req.force:
        was = old.version if old else "?"
        why = (f"is a downgrade from the installed {was}" if p.action == "downgrade"
               else "has other content than the installed copy of the same version")
        raise SyscallError(Errno.EEXIST, f"{pkg.name} {pkg.version} {why}; use force to replace it")
    if p.needs_grant and not req.grant:
        more = " more" if old is not None else ""
        raise SyscallError(Errno.EPERM, f"{pkg.name} {pkg.version} asks for{more} permissions that must be "
                           f"granted: {asked(p)}")
    caps = frozenset(pkg.caps)
    spec = svc.loader.spec(pkg, caps=caps, trusted=req.trusted, origin="installed")
    await svc.db.put(AppRecord(name=pkg.name, version=pkg.version, hash=pkg.hash,
                               manifest=pkg.files.get("app.toml", ""), files=dict(pkg.files),
                               caps=sorted(caps), trusted=p.trusted_needed, installed_by=ctx.proc.uid))
    ctx.sys.programs.register(spec)
    return p


@syscall(92, "app_remove", AppRemove, AppRemoved, cap=INSTALL_CAP)
async def sys_app_remove(ctx: Ctx, req: AppRemove) -> AppRemoved:
    """Remove an installed app; operator only; ``force`` while a process runs it (it keeps running)."""
    _operator(ctx, "removing apps")
    async with service(ctx).lock:
        return await _remove(ctx, req)


async def _remove(ctx: Ctx, req: AppRemove) -> AppRemoved:
    svc = service(ctx)
    if req.name in svc.builtin:
        raise SyscallError(Errno.EPERM, f"{req.name} is a built-in app and cannot be removed")
    rec = svc.db.get(req.name)
    if rec is None:
        raise SyscallError(Errno.ENOENT, f"no installed app {req.name}")
    running = sorted(p.pid for p in ctx.kernel.procs.values() if p.app == req.name and not p.ended)
    if running and not req.force:
        pids = ", ".join(map(str, running))
        raise SyscallError(Errno.EBUSY, f"{req.name} is running (pid {pids}); use force to remove it anyway")
    await svc.db.delete(req.name)
    ctx.sys.programs.unregister(req.name)
    return AppRemoved(name=req.name, version=rec.version, running=running)


@syscall(93, "app_info", AppShow, AppDetails)
async def sys_app_info(ctx: Ctx, req: AppShow) -> AppDetails:
    """One app in detail: version, hash, origin, granted capabilities, tools and files."""
    spec = ctx.sys.programs.get(req.name)
    x = spec.extra
    rec = ctx.sys.apps.db.get(req.name) if ctx.sys.apps is not None else None
    d = AppDetails(name=spec.name, version=str(x.get("version", "")), hash=str(x.get("hash", "")),
                   origin=str(x.get("origin", "builtin")), kind=str(x.get("kind", "python")),
                   description=spec.description, caps=sorted(spec.caps), tools=list(x.get("tools", [])),
                   model=spec.model, files={k: len(v.encode()) for k, v in x.get("files", {}).items()},
                   manifest=str(x.get("files", {}).get("app.toml", "")))
    if rec is not None and d.origin == "installed":
        d.trusted, d.installed_by, d.installed_at = rec.trusted, rec.installed_by, rec.installed_at
    return d


@syscall(94, "app_load", AppLoad, AppLoaded, cap="spawn")
async def sys_app_load(ctx: Ctx, req: AppLoad) -> AppLoaded:
    """Load an app without installing it: a temporary name only the caller can spawn, once.

    The grant rules are those of install; the spawned process still gets no
    capability its spawner lacks.  A process holds at most one loaded app.
    """
    svc = service(ctx)
    pkg = await _package(ctx, req)
    p = plan(pkg, None)
    if p.trusted_needed:
        raise SyscallError(Errno.EPERM, f"{pkg.name}: entry.kind = 'python' cannot run without installing")
    if p.needs_grant and not req.grant:
        raise SyscallError(Errno.EPERM, f"{pkg.name} {pkg.version} asks for permissions that must be "
                           f"granted: {asked(p)}")
    programs = ctx.sys.programs
    if len(programs.temp) >= MAX_TEMP:
        raise SyscallError(Errno.EAGAIN, "too many loaded apps waiting to run")
    spec = svc.loader.spec(pkg, caps=frozenset(pkg.caps), trusted=False, origin="loaded")
    name = f"{pkg.name}#{next(svc.seq)}"
    programs.add_temp(dataclasses.replace(spec, name=name), ctx.proc.pid)
    return AppLoaded(app=name, plan=p)
