"""File syscalls (50-54): read, write, list, stat and delete in the caller's own tree.

Capabilities are path-scoped (``fs.read:/docs`` grants ``/docs`` and below)
and are checked by the dispatcher on the *normalized* path, so ``/docs/../x``
is refused as a bad path before any capability can be fooled by it.  Files
are bytes; they cross this interface as text (UTF-8, ``data``), which is what
models read and write, or with ``binary`` as base64 (``data_b64``), so any
file round-trips through JSON (sandboxed code, the HTTP API).  Sizes are bytes.
Overwriting and deleting are irreversible and go through the confirmation
policy; reading a file written by someone else, or by a tainted process,
taints the reader, and so does listing a directory with such entries (a file
name is text another party chose).  A tainted process appending to an
existing file needs confirmation too.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Literal

from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_PATH, Stat, normalize
from lmos.syscalls import confirm
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

Path = Annotated[str, Meta(min_length=1, max_length=MAX_PATH)]


class FsRead(Req):
    path: Path
    binary: bool = False  # reply with data_b64 (base64 of the exact bytes) instead of text


class FsWrite(Req):
    path: Path
    data: Annotated[str, Meta(max_length=1 << 24)] | None = None  # text, stored as UTF-8
    data_b64: Annotated[str, Meta(max_length=1 << 25)] | None = None  # bytes, base64 (exactly one of the two)
    mode: Literal["create", "overwrite", "append"] = "overwrite"


class FsList(Req):
    path: Path = "/"
    recursive: bool = False  # every entry below path, not just its children


class FsStat(Req):
    path: Path


class FsDelete(Req):
    path: Path
    recursive: bool = False


class FileInfo(Resp):
    path: str
    kind: str
    size: int
    mtime: float
    owner: int
    tainted: bool = False
    name: str = ""  # the last path component ("" for the root)


class FsReadReply(Resp):
    path: str
    size: int  # bytes
    data: str | None = None  # the file as text (invalid UTF-8 replaced), unless binary was asked for
    data_b64: str | None = None  # the exact bytes in base64, when binary was asked for


class FsWriteReply(Resp):
    path: str
    size: int
    created: bool


class FsListReply(Resp):
    path: str
    entries: list[FileInfo]


class FsDeleteReply(Resp):
    removed: int


def info(st: Stat) -> FileInfo:
    return FileInfo(path=st.path, kind=st.kind, size=st.size, mtime=st.mtime, owner=st.owner,
                    tainted=st.tainted, name=st.path.rsplit("/", 1)[1])


def _read_cap(r: FsRead | FsList | FsStat) -> str:
    return f"fs.read:{normalize(r.path)}"


def _write_cap(r: FsWrite | FsDelete) -> str:
    return f"fs.write:{normalize(r.path)}"


def payload_bytes(req: FsWrite) -> bytes:
    """The bytes an ``fs_write`` carries: exactly one of ``data`` (text) and ``data_b64``."""
    if (req.data is None) == (req.data_b64 is None):
        raise SyscallError(Errno.EINVAL, "fs_write needs exactly one of data (text) and data_b64 (base64)")
    if req.data is not None:
        return req.data.encode("utf-8")
    try:
        return base64.b64decode(req.data_b64 or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SyscallError(Errno.EINVAL, f"data_b64 is not valid base64: {exc}") from None


@syscall(50, "fs_read", FsRead, FsReadReply, cap=_read_cap)
async def sys_fs_read(ctx: Ctx, req: FsRead) -> FsReadReply:
    """Read a whole file: as text (``data``), or with ``binary`` as base64 (``data_b64``)."""
    p = ctx.proc
    data, st = await ctx.kernel.files.read(p.uid, req.path)
    if st.tainted or st.owner != p.uid:
        confirm.taint(p)
    if req.binary:
        return FsReadReply(path=st.path, size=st.size, data_b64=base64.b64encode(data).decode("ascii"))
    return FsReadReply(path=st.path, size=st.size, data=data.decode("utf-8", errors="replace"))


@syscall(51, "fs_write", FsWrite, FsWriteReply, cap=_write_cap)
async def sys_fs_write(ctx: Ctx, req: FsWrite) -> FsWriteReply:
    """Create (``create``: EEXIST if present), replace (``overwrite``) or extend (``append``) a file.

    The content is ``data`` (text) or ``data_b64`` (base64 bytes), exactly one.
    Replacing an existing file needs the user's confirmation, and so does appending
    to one from a tainted process.  The reply means
    the write is committed to the kernel's database.
    """
    p = ctx.proc
    fs = ctx.kernel.files
    path = normalize(req.path)
    fs.mounts.check_write(path)  # EROFS before asking anyone to confirm anything
    data = payload_bytes(req)
    if len(data) > fs.max_file_bytes:
        raise SyscallError(Errno.EFBIG, f"{len(data)} bytes is over the {fs.max_file_bytes}-byte file limit")
    mode = req.mode
    if mode == "overwrite" and not await fs.exists(p.uid, path):
        mode = "create"  # a file that appears meanwhile fails with EEXIST instead of being replaced unasked
    elif mode == "overwrite":
        if (await fs.stat(p.uid, path)).kind == "dir":  # fail before asking the user for nothing
            raise SyscallError(Errno.EISDIR, f"is a directory: {path}")
        await confirm.require(ctx, "overwrite", path, f"{len(data)} bytes")
    elif mode == "append" and p.tainted and await fs.exists(p.uid, path):
        # an injected process could append instructions to a file the user or another program trusts
        await confirm.require(ctx, "append to", path, f"{len(data)} bytes")
    r = await fs.write(p.uid, path, data, mode=mode, writer=p.uid, tainted=p.tainted)
    return FsWriteReply(path=r.path, size=r.size, created=r.created)


@syscall(52, "fs_list", FsList, FsListReply, cap=_read_cap)
async def sys_fs_list(ctx: Ctx, req: FsList) -> FsListReply:
    """The entries of a directory (one level, or with ``recursive`` all below it), sorted by path."""
    path = normalize(req.path)
    files = ctx.kernel.files
    entries = await (files.tree if req.recursive else files.listdir)(ctx.proc.uid, path)
    if any(e.tainted or e.owner != ctx.proc.uid for e in entries):
        confirm.taint(ctx.proc)  # names chosen by someone else (or by a tainted process) are data too
    return FsListReply(path=path, entries=[info(e) for e in entries])


@syscall(53, "fs_stat", FsStat, FileInfo, cap=_read_cap)
async def sys_fs_stat(ctx: Ctx, req: FsStat) -> FileInfo:
    """Kind, size, modification time and owner of a path."""
    return info(await ctx.kernel.files.stat(ctx.proc.uid, req.path))


@syscall(54, "fs_delete", FsDelete, FsDeleteReply, cap=_write_cap)
async def sys_fs_delete(ctx: Ctx, req: FsDelete) -> FsDeleteReply:
    """Delete a file or (with ``recursive``, a non-empty) directory; needs confirmation."""
    p = ctx.proc
    fs = ctx.kernel.files
    path = normalize(req.path)
    fs.mounts.check_write(path, "delete")
    st = await fs.stat(p.uid, path)
    if path == "/":
        raise SyscallError(Errno.EACCES, "cannot delete the root directory")
    if st.kind == "dir" and not req.recursive and await fs.listdir(p.uid, path):
        raise SyscallError(Errno.ENOTEMPTY, f"directory not empty: {path}")
    await confirm.require(ctx, "delete", path, st.kind)
    return FsDeleteReply(removed=await fs.delete(p.uid, path, recursive=req.recursive))
