"""Key-value syscalls (80-83): a small persistent store per user.

Programs and agents remember things across runs (a user's preferences, a
counter, the last report) without inventing file formats.  Each uid has its own
namespace in the kernel's database (``KernelCore.files``, table ``kvstore``),
so one user never sees another's keys and values survive a restart.  All four
calls need capability ``kv``; like every syscall they are checked and audited
by the one dispatch path, and the ``kv_get``/``kv_set`` tools are thin wrappers
over them.  Keys are 1-256 characters without control characters; values are
text up to 64 KiB (UTF-8), and a user holds at most 10,000 keys.

Taint follows the values: one written by a tainted process (it had read
untrusted content) is marked, and reading it taints the reader, as files do.
A tainted process replacing or deleting an existing value needs the user's
confirmation (the value may be a preference or a plan another program trusts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from msgspec import Meta

from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_KV_KEY, MAX_KV_KEYS, MAX_KV_VALUE
from lmos.syscalls import confirm
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx

Key = Annotated[str, Meta(min_length=1, max_length=MAX_KV_KEY)]
# Characters are checked by msgspec, bytes by the handler (E2BIG); the bound here
# only keeps a hostile payload from being decoded in full.
Value = Annotated[str, Meta(max_length=4 * MAX_KV_VALUE)]


class KvGet(Req):
    key: Key


class KvSet(Req):
    key: Key
    value: Value


class KvList(Req):
    prefix: Annotated[str, Meta(max_length=MAX_KV_KEY)] = ""
    limit: Annotated[int, Meta(ge=1, le=MAX_KV_KEYS)] = 1000


class KvDelete(Req):
    key: Key


class KvValue(Resp):
    key: str
    value: str


class KvSetReply(Resp):
    key: str
    created: bool  # the key did not exist before


class KvListReply(Resp):
    keys: list[str]


class KvDeleteReply(Resp):
    removed: bool


def _check_key(key: str) -> str:
    bad = next((c for c in key if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise SyscallError(Errno.EINVAL, f"key contains a control character {bad!r}")
    return key


@syscall(80, "kv_get", KvGet, KvValue, cap="kv")
async def sys_kv_get(ctx: Ctx, req: KvGet) -> KvValue:
    """The value stored under ``key`` by the caller's user; ENOENT if there is none."""
    entry = await ctx.kernel.files.kv_entry(ctx.proc.uid, _check_key(req.key))
    if entry is None:
        raise SyscallError(Errno.ENOENT, f"no such key: {req.key}")
    value, tainted = entry
    if tainted:
        confirm.taint(ctx.proc)
    return KvValue(key=req.key, value=value)


@syscall(81, "kv_set", KvSet, KvSetReply, cap="kv")
async def sys_kv_set(ctx: Ctx, req: KvSet) -> KvSetReply:
    """Store ``value`` under ``key`` (replacing any old value); committed when it returns.

    From a tainted process, replacing an existing value needs confirmation.
    """
    size = len(req.value.encode("utf-8"))
    if size > MAX_KV_VALUE:
        raise SyscallError(Errno.E2BIG, f"value is {size} bytes; the limit is {MAX_KV_VALUE}")
    p, files = ctx.proc, ctx.kernel.files
    key = _check_key(req.key)
    if p.tainted and await files.kv_entry(p.uid, key) is not None:
        await confirm.require(ctx, "overwrite kv key", key, f"{size} bytes")
    created = await files.kv_set(p.uid, key, req.value, tainted=p.tainted)
    return KvSetReply(key=req.key, created=created)


@syscall(82, "kv_list", KvList, KvListReply, cap="kv")
async def sys_kv_list(ctx: Ctx, req: KvList) -> KvListReply:
    """The caller's keys that start with ``prefix``, sorted, at most ``limit`` of them."""
    keys = await ctx.kernel.files.kv_keys(ctx.proc.uid, req.prefix, req.limit)
    if any(tainted for _, tainted in keys):
        confirm.taint(ctx.proc)  # a key a tainted process named is text it chose
    return KvListReply(keys=[key for key, _ in keys])


@syscall(83, "kv_delete", KvDelete, KvDeleteReply, cap="kv")
async def sys_kv_delete(ctx: Ctx, req: KvDelete) -> KvDeleteReply:
    """Remove ``key``; ``removed`` says whether it existed (deleting a missing key is not an error)."""
    p, files = ctx.proc, ctx.kernel.files
    key = _check_key(req.key)
    if p.tainted and await files.kv_entry(p.uid, key) is not None:
        await confirm.require(ctx, "delete kv key", key)
    return KvDeleteReply(removed=await files.kv_delete(p.uid, key))
