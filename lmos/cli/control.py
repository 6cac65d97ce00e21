"""The control socket: how front ends reach the kernel process of a state directory.

One kernel process (:mod:`lmos.cli.kerneld`) serves a state directory on
``STATE_DIR/lmos.sock``; every front end (lmosh, ``lmos run``, ``lmos ps``,
``lmos serve``, :func:`lmos.connect`) attaches to it.  The connection is
multiplexed JSON lines in both directions:

- first a handshake: the client sends ``{"hello": {"version", "secret",
  "model", "as_root", "kind"}}``; the kernel checks the lmos version, the secret
  and the peer's uid (:mod:`lmos.cli.identity`), starts a *session* process for
  the front end and answers ``{"hello": {"pid", "uid", "kernel_pid", "model",
  ...}}`` or ``{"err": {...}}`` and closes;
- then requests ``{"id": N, "call": NAME, "args": {...}}`` (a syscall made as
  the session process) or ``{"id": N, "op": NAME, "args": {...}}`` (status,
  down, serve, stay), answered by ``{"id": N, "ok": VALUE}`` or ``{"id": N,
  "err": {"errno", "name", "message"}}`` in any order;
- and requests from the kernel: ``{"ask": K, "confirm": {"question", ...}}``
  when a process started from this front end needs the user's yes; the client
  answers ``{"answer": K, "ok": BOOL}``.

This module is the client half, kept light (no model, no kernel imports) so
attaching is fast; :mod:`lmos.cli.kerneld` is the server half and starting a
kernel that is not running lives in :mod:`lmos.cli.launch`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import anyio
import msgspec
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from lmos.errors import Errno, SyscallError

MAX_LINE = 1 << 25  # a request carries a whole file (lmos cp: base64 of up to the store's limit)
SOCKET, SECRET, PIDFILE, LOG = "lmos.sock", "kernel.secret", "kernel.pid", "kernel.log"
Confirm = Callable[[dict[str, Any]], Awaitable[bool]]


class Msg(msgspec.Struct, omit_defaults=True):
    """Any line of the protocol; which fields are set says what it is."""

    id: int | None = None
    call: str | None = None
    op: str | None = None
    args: dict[str, Any] | None = None
    ok: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    err: dict[str, Any] | None = None
    hello: dict[str, Any] | None = None
    ask: int | None = None
    confirm: dict[str, Any] | None = None
    answer: int | None = None


def state_path(state_dir: str) -> Path:
    return Path(state_dir).expanduser().absolute()


def socket_path(state_dir: str) -> Path:
    return state_path(state_dir) / SOCKET


def err_of(e: dict[str, Any]) -> SyscallError:
    try:
        code = Errno(int(e["errno"]))
    except (ValueError, KeyError, TypeError):
        code = Errno.EIO
    return SyscallError(code, str(e.get("message", "")))


def err_dict(exc: SyscallError) -> dict[str, Any]:
    return {"errno": int(exc.errno), "name": exc.errno.name, "message": exc.message}


def encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj) + b"\n"


class Stale(Exception):
    """Nothing answers on the socket (no kernel, or one that died); ``path`` may be left behind."""


async def dial(state_dir: str) -> SocketStream:
    """A connected stream to the kernel of ``state_dir``.

    Raises :class:`Stale` when no kernel is there, and a one-line
    :class:`SyscallError` when one is there but this user may not reach it."""
    path = socket_path(state_dir)
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise Stale() from None
    except PermissionError:
        raise SyscallError(Errno.EACCES, f"cannot reach the kernel on {path.parent}: permission denied "
                           f"(it belongs to {_owner(path.parent)}, who has not allowed you)") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise SyscallError(Errno.EEXIST, f"{path} is not a socket (move it away)")
    try:
        return await anyio.connect_unix(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        raise Stale() from None
    except PermissionError:
        from lmos.cli.identity import user_name

        raise SyscallError(Errno.EACCES, f"the kernel on {path.parent} belongs to {user_name(st.st_uid)}, "
                           "who has not allowed you ([users] local)") from None
    except OSError as exc:
        raise SyscallError(Errno.EIO, f"cannot reach the kernel on {path.parent}: {exc.strerror}") from None


def _owner(path: Path) -> str:
    from lmos.cli.identity import user_name

    try:
        return user_name(path.stat().st_uid)
    except OSError:
        return "another user"


def read_secret(state_dir: str) -> str:
    path = state_path(state_dir) / SECRET
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SyscallError(Errno.EACCES, f"the kernel secret {path} is missing (a kernel of another "
                           "installation? lmos down --force and start again)") from None
    except PermissionError:
        raise SyscallError(Errno.EACCES, f"cannot read the kernel secret {path}: permission denied "
                           "(the kernel belongs to another user who has not allowed you)") from None


class Connection:
    """An attached front end: syscalls as its session process, ops, and confirmations asked of it.

    Use :func:`open_connection` (an async context manager)."""

    def __init__(self, stream: SocketStream, reader: BufferedByteReceiveStream, hello: dict[str, Any],
                 state_dir: str) -> None:
        self.stream = stream
        self.reader = reader
        self.info = hello
        self.pid: int = int(hello["pid"])
        self.uid: int = int(hello["uid"])
        self.state_dir = state_dir
        self.on_confirm: Confirm | None = None  # None: confirmations are refused
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[anyio.Event, list[Msg]]] = {}
        self._send_lock = anyio.Lock()
        self._closed = False
        self.closed = anyio.Event()  # set when the kernel is gone (stopped, or died)
        self._tg: TaskGroup | None = None

    async def _send(self, obj: Any) -> None:
        async with self._send_lock:
            await self.stream.send(encode(obj))

    async def _request(self, obj: dict[str, Any]) -> Msg:
        if self._closed:
            raise SyscallError(Errno.EPIPE, "the kernel closed the connection")
        n = next(self._ids)
        slot: tuple[anyio.Event, list[Msg]] = (anyio.Event(), [])
        self._waiting[n] = slot
        try:
            await self._send({"id": n, **obj})
            await slot[0].wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise SyscallError(Errno.EPIPE, "the kernel closed the connection") from None
        finally:
            self._waiting.pop(n, None)
        if not slot[1]:
            raise SyscallError(Errno.EPIPE, "the kernel closed the connection (was it stopped?)")
        m = slot[1][0]
        if m.err is not None:
            raise err_of(m.err)
        return m

    async def call_raw(self, name: str, /, **args: Any) -> bytes:
        """A syscall as the session process; the reply's JSON bytes."""
        return bytes((await self._request({"call": name, "args": args})).ok)

    async def call(self, name: str, /, **args: Any) -> Any:
        """A syscall as the session process; the reply as builtins (dicts and lists)."""
        return msgspec.json.decode(await self.call_raw(name, **args))

    async def op(self, name: str, /, **args: Any) -> Any:
        """A kernel operation (status, down, serve, stay)."""
        m = await self._request({"op": name, "args": args})
        return msgspec.json.decode(bytes(m.ok)) if len(m.ok) else None

    async def _read(self) -> None:
        try:
            while True:
                line = await self.reader.receive_until(b"\n", MAX_LINE)
                m = msgspec.json.decode(line, type=Msg)
                if m.ask is not None:
                    assert self._tg is not None
                    self._tg.start_soon(self._answer, m.ask, m.confirm or {})
                elif m.id is not None and m.id in self._waiting:
                    ev, box = self._waiting[m.id]
                    box.append(m)
                    ev.set()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.ClosedResourceError, anyio.DelimiterNotFound, msgspec.DecodeError):
            pass
        finally:
            self._closed = True
            self.closed.set()
            for ev, _ in list(self._waiting.values()):
                ev.set()

    async def _answer(self, ask: int, req: dict[str, Any]) -> None:
        ok = False
        if self.on_confirm is not None:
            try:
                ok = bool(await self.on_confirm(req))
            except Exception:  # a failed prompt is a no, never a dead connection
                ok = False
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._send({"answer": ask, "ok": ok})


async def _handshake(stream: SocketStream, hello: dict[str, Any]
                     ) -> tuple[dict[str, Any], BufferedByteReceiveStream]:
    reader = BufferedByteReceiveStream(stream)
    try:
        await stream.send(encode({"hello": hello}))
        line = await reader.receive_until(b"\n", MAX_LINE)
    except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
        raise Stale() from None
    try:
        m = msgspec.json.decode(line, type=Msg)
    except msgspec.DecodeError:
        raise SyscallError(Errno.EFAULT, "bad handshake from the kernel") from None
    if m.err is not None:
        raise err_of(m.err)
    if m.hello is None:
        raise SyscallError(Errno.EFAULT, "bad handshake from the kernel")
    return m.hello, reader


def model_key(spec: str | None) -> str | None:
    """A --model spec in the form the kernel compares: model directories as absolute paths."""
    if spec is None:
        return None
    if spec == "builtin" or spec == "scripted" or spec.startswith(("scripted:", "openai+")):
        return spec
    if "/" not in spec and not Path(spec).expanduser().exists() and spec in _config_models():
        return spec  # a [models.NAME] table (a model behind a server, lmos/drivers/remote.py)
    return str(Path(spec).expanduser().absolute())


def _config_models() -> set[str]:
    from lmos.config import load_config

    try:
        return set(load_config().models)
    except SyscallError:
        return set()


@contextlib.asynccontextmanager
async def open_connection(state_dir: str, *, model: str | None = None, as_root: bool = False,
                          kind: str = "lmos", start: bool = True, stay: bool = False,
                          quiet: bool = False) -> AsyncIterator[Connection]:
    """Attach to the kernel of ``state_dir``, starting one (with ``model``) when none is running
    and ``start`` is set; without ``start`` a missing kernel is ENOENT.  ``model`` None accepts
    whatever the running kernel has loaded."""
    from lmos import __version__

    if state_dir == ":memory:":  # nothing to share: a kernel in this process, same interface
        from lmos.cli import model_of
        from lmos.cli.local import open_local

        async with open_local(state_dir, model_of(model), kind=kind, as_root=as_root) as local:
            yield local  # type: ignore[misc]
        return
    key = model_key(model)
    if key is not None and key.startswith("/") and not Path(key).is_dir():  # before any kernel is asked
        raise SyscallError(Errno.ENOENT, f"no model directory at {key}")
    conn: Connection | None = None
    for attempt in range(4):
        try:
            stream = await dial(state_dir)
        except Stale:
            if not start:
                _no_kernel(state_dir)
            from lmos.cli.launch import start_kernel

            await start_kernel(state_dir, model, stay=stay, quiet=quiet)
            continue
        hello = {"version": __version__, "secret": read_secret(state_dir), "model": key,
                 "as_root": as_root, "kind": kind, "stay": stay}
        try:
            info, reader = await _handshake(stream, hello)
        except Stale:  # the kernel was stopping as we connected: try again (it may be gone now)
            await stream.aclose()
            await anyio.sleep(0.1 * (attempt + 1))
            continue
        except BaseException:
            await stream.aclose()
            raise
        conn = Connection(stream, reader, info, state_dir)
        break
    if conn is None:
        raise SyscallError(Errno.EAGAIN, f"the kernel on {state_path(state_dir)} did not answer")
    try:
        async with conn.stream, anyio.create_task_group() as tg:
            conn._tg = tg
            tg.start_soon(conn._read)
            try:
                yield conn
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the caller's own error, not wrapped by our task group
        only = _single(group)
        if only is None:
            raise
        raise only from None


def _single(group: BaseExceptionGroup) -> BaseException | None:
    if len(group.exceptions) != 1:
        return None
    inner = group.exceptions[0]
    return _single(inner) if isinstance(inner, BaseExceptionGroup) else inner


def _no_kernel(state_dir: str) -> NoReturn:
    path = socket_path(state_dir)
    note = ""
    pid = kernel_pid(state_dir)
    if pid is None or not pid_alive(pid):  # not a kernel still starting up: a dead one's leftovers
        with contextlib.suppress(OSError):
            if path.exists():
                path.unlink()
                note = " (removed the socket left by a kernel that died)"
        for name in (SECRET, PIDFILE):
            with contextlib.suppress(OSError):
                (state_path(state_dir) / name).unlink()
    raise SyscallError(Errno.ENOENT, f"no kernel is running on {state_path(state_dir)}{note}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kernel_pid(state_dir: str) -> int | None:
    try:
        return int((state_path(state_dir) / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None
