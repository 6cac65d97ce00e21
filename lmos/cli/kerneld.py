"""The kernel process: one per state directory, serving every front end.

``python -m lmos.cli.kerneld --state-dir D --model M`` is started by the first
front end on ``D`` (:mod:`lmos.cli.launch`), in a session of its own so that
closing that terminal ends nobody's work.  It boots the facade, writes
``kernel.pid`` and the per-kernel secret ``kernel.secret`` (0600), listens on
``D/lmos.sock`` (protocol: :mod:`lmos.cli.control`) and then serves:

- each connection is checked (lmos version, SO_PEERCRED uid, secret, model)
  and becomes a session process (:mod:`lmos.cli.sessions`) acting as that user;
- a confirmation a process asks for goes to the front end whose session
  started it (walking ppid up), and is refused when there is none;
- ``status``, ``down``, ``stay`` (``lmos up``) and ``serve`` (HTTP from this
  process, for as long as the asking front end stays attached) are operations.

Without ``--stay`` the kernel ends once no front end is attached and nothing
it started is still running (after a short linger, so a script's consecutive
commands share one kernel).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from lmos import __version__
from lmos.cli import identity
from lmos.cli.control import LOG, MAX_LINE, PIDFILE, SECRET, SOCKET, Msg, encode, err_dict
from lmos.cli.sessions import SessionApps
from lmos.errors import Errno, SyscallError
from lmos.syscalls.confirm import ConfirmRequest
from lmos.syscalls.io import tuning_of
from lmos.syscalls.types import Err
from lmos.system import Kernel

LINGER = 1.0  # seconds idle before a kernel started without `lmos up` ends
HELLO_TIMEOUT = 10.0


class Front:
    """One attached front end: its session process and its connection."""

    def __init__(self, pid: int, uid: int, kind: str, stream: SocketStream, peer: int) -> None:
        self.pid, self.uid, self.kind = pid, uid, kind
        self.peer = peer  # the local user behind the connection (SO_PEERCRED), before root_runs_as
        self.since = time.time()
        self.stream = stream
        self.lock = anyio.Lock()
        self.asks: dict[int, tuple[anyio.Event, list[bool]]] = {}
        self.next_ask = 0
        self.tg: TaskGroup | None = None

    async def send(self, obj: Any) -> None:
        async with self.lock:
            await self.stream.send(encode(obj))

    async def confirm(self, req: ConfirmRequest) -> bool:
        """Ask this front end's user; no on a closed connection."""
        self.next_ask += 1
        n = self.next_ask
        slot: tuple[anyio.Event, list[bool]] = (anyio.Event(), [])
        self.asks[n] = slot
        try:
            await self.send({"ask": n, "confirm": {"question": req.describe(), **msgspec.to_builtins(req)}})
            await slot[0].wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        finally:
            self.asks.pop(n, None)
        return bool(slot[1] and slot[1][0])

    def hang_up(self) -> None:
        for ev, _ in self.asks.values():
            ev.set()


class Daemon:
    def __init__(self, k: Kernel, state_dir: Path, model: str, stay: bool) -> None:
        self.k = k
        self.dir = state_dir
        self.model = model
        self.stay = stay
        self.owner = os.getuid()
        self.users = k.config.users
        self.secret = secrets.token_urlsafe(32)
        self.sessions = SessionApps(k)
        self.fronts: dict[int, Front] = {}
        self.started = time.time()
        self.stop = anyio.Event()
        assert k.sys is not None and k.core is not None
        k.sys.confirm_policy = self.route_confirm
        if self.owner == 0:  # root's front ends act as root_runs_as: that uid operates this kernel
            k.core.operator_aliases.add(identity.acts_as(0, False, self.users))

    # -- confirmations -----------------------------------------------------------
    async def route_confirm(self, req: ConfirmRequest) -> bool:
        """Ask the front end whose session started the asking process; no front end: refused."""
        core = self.k.core
        pid, seen = req.pid, set()
        while core is not None and pid and pid not in seen:
            front = self.fronts.get(pid)
            if front is not None:
                return await front.confirm(req)
            seen.add(pid)
            p = core.procs.get(pid)
            pid = p.ppid if p is not None else 0
        return False

    # -- connections ---------------------------------------------------------------
    def check_hello(self, stream: SocketStream, hello: dict[str, Any]) -> tuple[int, int]:
        """The peer's uid and the uid this connection acts as, or a one-line SyscallError."""
        version = str(hello.get("version", "?"))
        if version != __version__:
            raise SyscallError(Errno.EINVAL, f"the kernel on {self.dir} runs lmos {__version__}; this front "
                               f"end is lmos {version} (stop it with lmos down, then start again)")
        raw = stream.extra(SocketAttribute.raw_socket)
        peer = identity.peer_uid(raw)
        if not identity.allowed(peer, self.owner, self.users):
            raise SyscallError(Errno.EACCES, f"{identity.user_name(peer)} may not attach to the kernel of "
                               f"{identity.user_name(self.owner)} on {self.dir} (not in [users] local)")
        given = hello.get("secret")
        if not isinstance(given, str) or not given:
            raise SyscallError(Errno.EACCES, "no kernel secret was presented")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            raise SyscallError(Errno.EACCES, f"wrong kernel secret (not the one in {self.dir / SECRET})")
        want = hello.get("model")
        if want is not None and want != self.model:
            raise SyscallError(Errno.EINVAL, f"the kernel on {self.dir} runs model {self.model}, not {want} "
                               "(leave out --model, or lmos down first)")
        return peer, identity.acts_as(peer, bool(hello.get("as_root")), self.users)

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            try:
                with anyio.fail_after(HELLO_TIMEOUT):
                    m = msgspec.json.decode(await reader.receive_until(b"\n", MAX_LINE), type=Msg)
                if m.hello is None:
                    raise SyscallError(Errno.EFAULT, "the first line must be a hello")
                peer, uid = self.check_hello(stream, m.hello)
            except SyscallError as exc:
                with contextlib.suppress(Exception):
                    await stream.send(encode({"err": err_dict(exc)}))
                return
            except Exception:  # garbage, a timeout, a client gone: nothing to answer
                return
            if self.stop.is_set():
                return  # stopping: the client starts a new kernel
            kind = str(m.hello.get("kind", "lmos"))
            pid = await self.sessions.open(uid, kind)
            front = self.fronts[pid] = Front(pid, uid, kind, stream, peer)
            if m.hello.get("stay"):
                self.stay = True
            try:
                await front.send({"hello": {"pid": pid, "uid": uid, "kernel_pid": os.getpid(),
                                            "model": self.model, "version": __version__}})
                async with anyio.create_task_group() as tg:
                    front.tg = tg
                    await self._serve(front, reader, tg)
                    tg.cancel_scope.cancel()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            finally:
                front.hang_up()
                self.fronts.pop(pid, None)
                await self.sessions.close(pid)

    async def _serve(self, front: Front, reader: BufferedByteReceiveStream, tg: TaskGroup) -> None:
        while True:
            try:
                line = await reader.receive_until(b"\n", MAX_LINE)
                m = msgspec.json.decode(line, type=Msg)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                    anyio.ClosedResourceError, anyio.DelimiterNotFound, msgspec.DecodeError):
                return
            if m.answer is not None:
                slot = front.asks.get(m.answer)
                if slot is not None:
                    slot[1].append(bool(len(m.ok) and msgspec.json.decode(bytes(m.ok)) is True))
                    slot[0].set()
            elif m.id is not None and m.call is not None:
                tg.start_soon(self._call, front, m.id, m.call, m.args or {})
            elif m.id is not None and m.op is not None:
                tg.start_soon(self._op, front, m.id, m.op, m.args or {})

    async def _call(self, front: Front, n: int, name: str, args: dict[str, Any]) -> None:
        assert self.k.sys is not None
        res = await self.k.sys.dispatch(front.pid, name, args)
        if isinstance(res, Err):
            reply: dict[str, Any] = {"id": n, "err": {"errno": res.errno, "name": res.name,
                                                      "message": res.message}}
        else:
            reply = {"id": n, "ok": res.value}
        try:
            await front.send(reply)
        except (TypeError, msgspec.EncodeError) as exc:
            await front.send({"id": n, "err": err_dict(SyscallError(Errno.EIO, f"{name}: reply not "
                                                                    f"encodable: {exc}"))})

    async def _op(self, front: Front, n: int, name: str, args: dict[str, Any]) -> None:
        try:
            value = await self.op(front, name, args)
        except SyscallError as exc:
            await front.send({"id": n, "err": err_dict(exc)})
            return
        await front.send({"id": n, "ok": value})
        if name == "down":
            self.stop.set()  # after the reply, so the asking front end hears it

    # -- operations ----------------------------------------------------------------
    async def op(self, front: Front, name: str, args: dict[str, Any]) -> Any:
        if name == "status":
            return self.status()
        if name == "stay":
            self.stay = True
            return {"stay": True}
        if name == "down":
            if front.peer not in (self.owner, 0):
                raise SyscallError(Errno.EPERM, f"only {identity.user_name(self.owner)} (who started it) or "
                                   "root may stop this kernel")
            busy = self.sessions.running()
            others = [f for f in self.fronts.values() if f.pid != front.pid]
            if (busy or others) and not args.get("force"):
                what = []
                if busy:
                    apps = ", ".join(sorted({p.app for p in busy}))
                    what.append(f"{len(busy)} process(es) running ({apps})")
                if others:
                    what.append(f"{len(others)} other front end(s) attached")
                raise SyscallError(Errno.EBUSY, f"{' and '.join(what)}; lmos down --force ends them")
            return {"stopping": os.getpid()}
        if name == "serve":
            return await self.serve(front, args)
        raise SyscallError(Errno.ENOSYS, f"no such kernel operation: {name}")

    def status(self) -> dict[str, Any]:
        running = self.sessions.running()
        return {"pid": os.getpid(), "version": __version__, "state_dir": str(self.dir), "model": self.model,
                "models": sorted(self.k.core.schedulers) if self.k.core else [],
                "tuning": {name: tuning_of(s.driver) for name, s in self.k.core.schedulers.items()}
                if self.k.core else {},
                "uptime": time.time() - self.started, "stay": self.stay,
                "processes": len(running),
                "procs": [{"pid": p.pid, "uid": p.uid, "app": p.app, "state": p.state.value}
                          for p in running],
                "frontends": [{"pid": f.pid, "uid": f.uid, "kind": f.kind, "since": f.since}
                              for f in self.fronts.values()]}

    async def serve(self, front: Front, args: dict[str, Any]) -> dict[str, Any]:
        """HTTP from this process, acting as the asking front end's user, until it detaches."""
        from lmos.server import serve as serve_http

        assert front.tg is not None
        said: list[int | SyscallError] = []
        ready = anyio.Event()

        def bound(port: int) -> None:
            said.append(port)
            ready.set()

        async def run() -> None:
            try:
                await serve_http(self.k, host=str(args.get("host", "127.0.0.1")),
                                 port=int(args.get("port", 8080)), uid=front.uid,
                                 token=args.get("token"), ready=bound, insecure=bool(args.get("insecure")),
                                 allowed_hosts=[str(h) for h in args.get("allowed_hosts") or []])
            except SyscallError as exc:
                said.append(exc)
            ready.set()

        front.tg.start_soon(run)
        await ready.wait()
        if not said:
            raise SyscallError(Errno.EIO, "the HTTP server stopped before it was ready")
        if isinstance(said[0], SyscallError):
            raise said[0]
        return {"port": said[0]}

    # -- lifecycle -----------------------------------------------------------------
    async def watch_idle(self) -> None:
        idle_since: float | None = None
        while not self.stop.is_set():
            await anyio.sleep(0.1)
            if self.stay or self.fronts or self.sessions.running():
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= LINGER:
                self.stop.set()

    async def watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
            async for _ in sigs:
                self.stop.set()
                return


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


async def boot(model: str, state_dir: Path) -> Kernel:
    """The facade on ``state_dir``; waits (a little) for a kernel that is still stopping to let go."""
    from lmos.cli import model_of

    deadline = time.monotonic() + 20
    while True:
        k = Kernel(model=model_of(model), state_dir=str(state_dir))
        try:
            await k.__aenter__()
            return k
        except SyscallError as exc:
            if exc.errno != Errno.EBUSY or time.monotonic() > deadline:
                raise
        await anyio.sleep(0.1)


async def run(state_dir: Path, model: str, stay: bool, ready_fd: int | None) -> int:
    def say(text: str) -> None:
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, (text + "\n").encode())
                os.close(ready_fd)

    try:
        k = await boot(model, state_dir)
    except SyscallError as exc:
        say(f"{exc.errno.name} {exc.message}")
        return 1
    except Exception as exc:
        say(f"EIO cannot start the kernel: {type(exc).__name__}: {exc}")
        raise
    sock = state_dir / SOCKET
    try:
        d = Daemon(k, state_dir, model, stay)
        shared = bool(d.users.local)
        _write_private(state_dir / SECRET, d.secret, 0o644 if shared else 0o600)
        _write_private(state_dir / PIDFILE, str(os.getpid()), 0o644)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()  # we hold the journal's lock: any socket here is a dead kernel's
        listener = await anyio.create_unix_listener(sock)
        os.chmod(sock, 0o666 if shared else 0o600)
        if shared:
            os.chmod(state_dir, 0o711)  # others reach the socket and the secret, list nothing
        say("ok")
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, d.handle)
            tg.start_soon(d.watch_idle)
            tg.start_soon(d.watch_signals)
            await d.stop.wait()
            tg.cancel_scope.cancel()
    finally:
        for name in (SOCKET, SECRET):
            with contextlib.suppress(FileNotFoundError):
                (state_dir / name).unlink()
        with contextlib.suppress(OSError):
            if (state_dir / PIDFILE).read_text().strip() == str(os.getpid()):
                (state_dir / PIDFILE).unlink()
        await k.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lmos-kerneld",
                                 description="the lmos kernel process of a state directory")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--stay", action="store_true", help="keep running with no front end (lmos up)")
    ap.add_argument("--ready-fd", type=int, default=None)
    a = ap.parse_args(argv)
    state_dir = Path(a.state_dir).expanduser().absolute()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(f"lmos kernel {os.getpid()} starting on {state_dir} (model {a.model}; log {state_dir / LOG})",
          file=sys.stderr, flush=True)
    return anyio.run(run, state_dir, a.model, a.stay, a.ready_fd)


if __name__ == "__main__":
    raise SystemExit(main())
