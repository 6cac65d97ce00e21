"""Mount syscalls (55-57): show a host folder read-only inside the file store.

Who may mount: the operator (root, or the owner of the state directory, see
``KernelCore.is_operator``) through a process holding the ``fs.mount``
capability, which no app manifest can ask for (only ``*`` holders: init and
the operator's shell).  Both checks, because an app run *by* the operator must
not be able to mount ``/`` and read the host through its own files.

What may be mounted: an existing folder (absolute path) that the operator can
read -- judged by the folder's permission bits for the operator's uid, as well
as by ``os.access`` for the kernel's own process, so a root-run kernel does
not mount for its operator what the operator could not list themselves.

Where it shows and what reading it needs: see :mod:`lmos.kernel.mounts`
(system-wide, read-only, contained, tainting).  Reads go through the ordinary
``fs_read``/``fs_list``/``fs_stat``, so the ``fs.read:`` capability of the
reader is checked on the store path as for any file.
"""

from __future__ import annotations

import os
import pwd
import stat as _stat
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_PATH, normalize
from lmos.kernel.mounts import Mount
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

Path = Annotated[str, Meta(min_length=1, max_length=MAX_PATH)]
HostPath = Annotated[str, Meta(min_length=1, max_length=4096)]


class FsMount(Req):
    host_path: HostPath
    path: Path
    ro: bool = True


class FsUmount(Req):
    path: Path


class FsMounts(Req):
    pass


class MountInfo(Resp):
    path: str
    host_path: str  # "" when the caller is not the operator
    ro: bool
    uid: int
    created: float


class FsMountsReply(Resp):
    mounts: list[MountInfo]


def _info(m: Mount, show_host: bool = True) -> MountInfo:
    return MountInfo(path=m.path, host_path=m.host if show_host else "", ro=m.ro, uid=m.uid,
                     created=m.created)


def _need_operator(ctx: Ctx, what: str) -> None:
    if not ctx.kernel.is_operator(ctx.proc.uid, ctx.proc.pid):
        raise SyscallError(Errno.EPERM, f"only the operator may {what} (uid {ctx.kernel.operator_uid} "
                           "or root)")


def _groups(uid: int) -> set[int]:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return set()
    return set(os.getgrouplist(pw.pw_name, pw.pw_gid))


def _allows(st: os.stat_result, uid: int, groups: set[int], bits: int) -> bool:
    """Do ``st``'s permission bits give ``uid`` all of ``bits`` (as r=4, w=2, x=1)?"""
    if uid == 0:
        return True
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid in groups:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def check_host_folder(host_path: str, operator: int) -> str:
    """The real path of ``host_path`` if it is a folder ``operator`` may read; else ENOENT/ENOTDIR/EACCES."""
    if not os.path.isabs(host_path):
        raise SyscallError(Errno.EINVAL, f"the host folder must be an absolute path: {host_path!r}")
    try:
        st = os.stat(host_path)
    except FileNotFoundError:
        raise SyscallError(Errno.ENOENT, f"no such host folder: {host_path}") from None
    except NotADirectoryError:
        raise SyscallError(Errno.ENOTDIR, f"not a folder: {host_path}") from None
    except PermissionError:
        raise SyscallError(Errno.EACCES, f"cannot reach host folder {host_path}: permission denied") from None
    except OSError as exc:
        raise SyscallError(Errno.EACCES, f"cannot reach host folder {host_path}: {exc.strerror}") from None
    if not _stat.S_ISDIR(st.st_mode):
        raise SyscallError(Errno.ENOTDIR, f"not a folder: {host_path}")
    real = os.path.realpath(host_path)
    if not os.access(real, os.R_OK | os.X_OK):
        raise SyscallError(Errno.EACCES, f"the kernel cannot read host folder {host_path}")
    groups = _groups(operator)
    d = real
    while True:  # the folder must be listable, and every folder above it passable, by the operator
        bits = 5 if d == real else 1
        if not _allows(os.stat(d), operator, groups, bits):
            raise SyscallError(Errno.EACCES, f"host folder {host_path} is not readable by the operator "
                               f"(uid {operator}): {d}")
        if d == "/":
            break
        d = os.path.dirname(d)
    return real


@syscall(55, "fs_mount", FsMount, MountInfo, cap="fs.mount")
async def sys_fs_mount(ctx: Ctx, req: FsMount) -> MountInfo:
    """Show the host folder ``host_path`` read-only at ``path`` in every user's tree (operator only).

    The folder must exist and be readable by the operator; the mount persists
    in the state directory until ``fs_umount``.  ``ro`` must be true: lmos
    does not write to the host.
    """
    _need_operator(ctx, "mount folders")
    if not req.ro:
        raise SyscallError(Errno.EINVAL, "only read-only mounts are supported (ro=true)")
    path = normalize(req.path)
    # Root acting for the host (init, or a root shell) answers for the state directory's owner.
    who = ctx.kernel.operator_uid if ctx.proc.uid == 0 or ctx.proc.pid == 1 else ctx.proc.uid
    real = check_host_folder(req.host_path, who)
    files = ctx.kernel.files
    if await files.exists(ctx.proc.uid, path) and (await files.stat(ctx.proc.uid, path)).kind != "dir":
        raise SyscallError(Errno.ENOTDIR, f"cannot mount on {path}: it is a file")
    return _info(await files.mounts.add(path, real, ctx.proc.uid))


@syscall(56, "fs_umount", FsUmount, MountInfo, cap="fs.mount")
async def sys_fs_umount(ctx: Ctx, req: FsUmount) -> MountInfo:
    """Remove the mount at ``path`` (operator only); the store's own entries there show again."""
    _need_operator(ctx, "unmount folders")
    return _info(await ctx.kernel.files.mounts.remove(req.path))


@syscall(57, "fs_mounts", FsMounts, FsMountsReply)
async def sys_fs_mounts(ctx: Ctx, req: FsMounts) -> FsMountsReply:
    """The mount points (host folders are shown to the operator only)."""
    op = ctx.kernel.is_operator(ctx.proc.uid, ctx.proc.pid)
    return FsMountsReply(mounts=[_info(m, op) for m in ctx.kernel.files.mounts.all()])
