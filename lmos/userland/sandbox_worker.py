"""The sandbox worker: one isolated process that runs untrusted programs.

The host starts this file as a script (``python -I -S -B``, empty environment,
new session) and talks to it over its stdin/stdout pipes, one JSON object per
line, never pickle.  At startup the worker claims the pipes for the protocol
(pointing fds 0 and 1 at ``/dev/null`` so nothing else can write into the
channel), loads the policy module by path (importing ``lmos`` here would pull
in the whole system), then locks itself down (``sandbox_wall.py``): no file
outside the standard library can be opened (Landlock, or an empty mount
namespace), no socket made, a private network namespace where the system
allows it, rlimits on CPU, address space, file size, open files and core
dumps, no-new-privileges, and when started as root a switch to ``nobody``
(root ignores ``RLIMIT_NPROC``) with ``RLIMIT_NPROC`` 0.  It reports what took
in its ``ready`` message.

Each ``run`` compiles inside this process (a hostile source can crash the
compiler), executes with fresh globals, and answers with a ``result``.  CPU
time is bounded twice: ``ITIMER_PROF`` ends a runaway Python loop precisely
(the handler reports and exits, so ``except BaseException`` cannot swallow it)
and the soft ``RLIMIT_CPU`` kills the process with ``SIGXCPU`` when the time
goes into one long C call (``10**10**10``).  The host enforces the wall clock.

A request may also carry the program's own modules (``import helpers``, each
compiled under the same policy and imported as a read-only namespace), ask for
the ``ask``/``agent`` helpers (``sandbox_agent.py``: lmos's agent loop over this
channel) and for ``echo`` (each ``print`` also goes out as a ``write`` syscall).
An uncaught ``SyscallError`` is reported with its errno.

Imports: the standard library and RestrictedPython.  Workers started for the
helpers (``agent`` in the config) also load, before lock-down,
``lmos.userland.agent`` and what it needs (``lmos.errors``, ``lmos.chatformat``,
msgspec) under bare package stubs; never ``lmos/__init__``, torch,
``lmos.kernel`` or ``lmos.syscalls``.  Programs never see a module.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from lmos.userland import sandbox_agent as helpers
    from lmos.userland import sandbox_policy as policy

EXIT_PROTOCOL = 3  # the host sent something unreadable or went away mid-run
EXIT_CPU = 4  # the CPU timer fired while the channel was busy
MAX_MESSAGE = 64 << 20
MAX_SYSCALL_ARGS = 4 << 20
ERROR_CHARS = 400
CACHE_ENTRIES = 64
CACHE_SOURCE_CHARS = 16 << 10


class Channel:
    """Line-delimited JSON over two private file descriptors."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self._in = os.fdopen(in_fd, "rb", buffering=1 << 16)
        self._out = out_fd
        self.busy = False

    def send(self, obj: dict[str, Any]) -> None:
        data = memoryview(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n")
        while data:
            data = data[os.write(self._out, data):]

    def recv(self) -> dict[str, Any] | None:
        line = self._in.readline(MAX_MESSAGE)
        if not line:
            return None
        if not line.endswith(b"\n"):
            os._exit(EXIT_PROTOCOL)
        msg = json.loads(line)
        if type(msg) is not dict:
            os._exit(EXIT_PROTOCOL)
        return msg


class _Calls:
    """Syscall bookkeeping for one run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.wait = 0.0
        self.exceeded = False


def _clean(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def describe(exc: BaseException) -> str:
    """One line: ``Type: message (line N)``, N the deepest sandbox line (``helpers.py
    line N`` when it is in one of the program's own modules)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename == policy.FILENAME:
            line = f"line {tb.tb_lineno}"
        elif filename.startswith(policy.FILENAME + "/"):
            line = f"{filename[len(policy.FILENAME) + 1:]} line {tb.tb_lineno}"
        tb = tb.tb_next
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    msg = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if line is not None:
        msg += f" ({line})"
    return _clean(" ".join(msg.split()))[:ERROR_CHARS]


def errno_of(exc: BaseException) -> str | None:
    """The errno name of an uncaught sandbox ``SyscallError`` (read from the instance's
    own dict, so no code of the program runs); the host validates it."""
    if not isinstance(exc, policy.SyscallError):
        return None
    errno = vars(exc).get("errno")
    return errno if type(errno) is str and errno.isascii() and errno.isalnum() and len(errno) <= 16 else None


class Worker:
    """Serves ``run`` requests until the host closes the channel."""

    def __init__(self, channel: Channel, config: dict[str, Any]) -> None:
        self.channel = channel
        self.config = config
        self._codes: dict[tuple[str, str], Any] = {}
        self._current: tuple[policy.RunPolicy, dict[str, Any]] | None = None
        signal.signal(signal.SIGPROF, self._on_cpu_limit)

    def serve(self, report: dict[str, Any]) -> None:
        self.channel.send({"op": "ready", **report, "pid": os.getpid(), "cpu": time.process_time()})
        while True:
            msg = self.channel.recv()
            if msg is None or msg.get("op") == "exit":
                return
            if msg.get("op") != "run":
                os._exit(EXIT_PROTOCOL)
            self.channel.send(self.run(msg))

    def _compile(self, source: str, filename: str | None = None) -> Any:
        filename = filename or policy.FILENAME
        key = (filename, source)
        code = self._codes.get(key)
        if code is None:
            code = policy.compile_source(source, filename)
            if len(source) <= CACHE_SOURCE_CHARS:  # small programs repeat (tools); big ones would hog memory
                if len(self._codes) >= CACHE_ENTRIES:
                    self._codes.pop(next(iter(self._codes)))
                self._codes[key] = code
        return code

    def _modules(self, sources: Any) -> dict[str, Any]:
        """Compile the program's own modules up front, so a module that breaks the
        rules fails the run even if the program never imports it (or catches the error)."""
        if sources is None:
            return {}
        if type(sources) is not dict:
            os._exit(EXIT_PROTOCOL)
        codes = {}
        for name, source in sources.items():
            if policy.module_name_error(name) is not None or type(source) is not str:
                os._exit(EXIT_PROTOCOL)
            codes[name] = self._compile(source, f"{policy.FILENAME}/{name}.py")
        return codes

    def _arm(self, limits: dict[str, Any]) -> None:
        cpu = float(limits["cpu_seconds"])
        _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(time.process_time() + cpu)
        resource.setrlimit(resource.RLIMIT_CPU, (min(soft, cpu_hard), cpu_hard))
        _, as_hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (min(int(limits["memory_bytes"]), as_hard), as_hard))
        signal.setitimer(signal.ITIMER_PROF, cpu)

    def _disarm(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0)
        _, as_hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (as_hard, as_hard))

    def _on_cpu_limit(self, signum: int, frame: Any) -> None:
        if self._current is not None:
            self.abort(f"cpu time limit exceeded ({self._current[1]['cpu_seconds']}s)")
        os._exit(EXIT_CPU)

    def abort(self, error: str) -> NoReturn:
        """End the run for good: report and exit.  An exception would not do,
        since the program may catch ``BaseException`` and carry on."""
        if self.channel.busy or self._current is None:
            os._exit(EXIT_CPU)
        pol, _ = self._current
        self.channel.busy = True
        try:
            self.channel.send({
                "op": "result", "ok": False, "stdout": _clean(pol.output.getvalue()), "namespace": {},
                "error": error, "cpu": None, "cpu_total": time.process_time(), "syscall_seconds": 0.0,
                "recycle": True,
            })
        finally:
            os._exit(EXIT_CPU)

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        limits = req["limits"]
        calls = _Calls(int(limits["max_syscalls"]))
        extra = self._syscall_functions(req.get("syscalls"), calls)
        echo = None
        if req.get("echo"):  # printed text also goes out as the process's output, as it is printed
            def echo(text: str) -> None:
                self._syscall("write", {"text": text}, calls)
        now = req.get("now")
        pol = policy.RunPolicy(output_limit=int(limits["output_bytes"]), seed=int(req["seed"]),
                               abort=self.abort, echo=echo, now=float(now) if now is not None else None)
        defaults = req.get("agent")
        if type(defaults) is dict:
            sys_call = extra["sys_call"]
            extra.update(helpers.helpers(lambda name, args: sys_call(name, **args), defaults))
        glb = pol.globals(req.get("inputs") or {}, extra)
        error: str | None = None
        errno: str | None = None
        recycle = False
        cpu0 = time.process_time()
        policy.REFUSALS.take()  # this run's guard refusals only
        self._current = (pol, limits)
        self._arm(limits)
        try:
            try:
                pol.app_codes = self._modules(req.get("modules"))
                exec(self._compile(req["source"]), glb)
            except policy.CompileFailed as exc:
                error = _clean(" ".join(f"compile error: {exc}".split()))[:ERROR_CHARS]
            except BaseException as exc:  # the program's failure is a result, whatever it raised
                error = describe(exc)
                errno = errno_of(exc)
                recycle = isinstance(exc, MemoryError)
            if pol.output.exceeded:
                error = f"output limit exceeded ({pol.output.limit} bytes)"
            elif calls.exceeded:
                error = f"syscall limit exceeded ({calls.limit})"
            only = req.get("only")
            if only is None:
                namespace = policy.namespace_of(glb, extra, int(limits["output_bytes"]))
            else:
                namespace, bad = self._only(glb, only, int(limits["output_bytes"]))
                error = error or bad
            # Drop every reference to the program's objects (its globals, its classes)
            # and collect now, so finalizers such as a suspended generator's ``finally``
            # run under this run's CPU timer rather than during some later run.
            glb.clear()
            pol.release()
            gc.collect()
        except MemoryError:
            error, namespace, recycle = "MemoryError: out of memory", {}, True
        finally:
            self._disarm()
            self._current = None
        cpu_total = time.process_time()
        _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
        if cpu_hard != resource.RLIM_INFINITY and cpu_total + self.config["cpu_ceiling"] + 2 > cpu_hard:
            recycle = True  # too little lifetime CPU left for another full-budget run
        return {
            "op": "result", "ok": error is None, "error": error, "stdout": _clean(pol.output.getvalue()),
            "namespace": namespace, "cpu": cpu_total - cpu0, "cpu_total": cpu_total,
            "syscall_seconds": calls.wait, "recycle": recycle, "errno": errno,
            "refused": policy.REFUSALS.take(),  # caught or not, every refusal goes to the host's audit
        }

    @staticmethod
    def _only(glb: dict[str, Any], names: Any, budget: int) -> tuple[dict[str, Any], str | None]:
        """Just ``names`` of the program's globals, each JSON data or an error."""
        out: dict[str, Any] = {}
        for name in names if type(names) is list else ():
            if type(name) is str and name in glb:
                try:
                    out[name], budget = policy.to_json(glb[name], budget)
                except (ValueError, RecursionError) as exc:
                    return out, f"TypeError: top-level {name!r} must be JSON data: {exc}"
        return out, None

    def _syscall_functions(self, names: list[str] | None, calls: _Calls) -> dict[str, Any]:
        """``sys_call(name, /, **args)`` plus one keyword-only function per exposed
        name; ``names`` None means any name (the host's callback decides).  The
        syscall name is positional-only, so arguments may be called anything,
        ``name`` included: ``sys_call("tool_call", name="calc", args={...})``."""
        allowed = None if names is None else frozenset(names)

        def sys_call(name: str, /, **args: Any) -> Any:
            if type(name) is not str:
                raise TypeError("syscall name must be a str")
            if not name.isascii():  # no syscall has such a name, and it may not even be text
                raise policy.SyscallError("ENOSYS", f"syscall {name!r} is not available", 38)
            if allowed is not None and name not in allowed:
                raise policy.SyscallError("ENOSYS", f"syscall {name!r} is not available", 38)
            return self._syscall(name, args, calls)

        def bind(name: str) -> Callable[..., Any]:
            def call(**args: Any) -> Any:
                return self._syscall(name, args, calls)

            call.__name__ = call.__qualname__ = name
            return call

        extra: dict[str, Any] = {"sys_call": sys_call}
        for name in names or ():
            extra[name] = bind(name)
        return extra

    def _syscall(self, name: str, args: dict[str, Any], calls: _Calls) -> Any:
        if calls.count >= calls.limit:
            if calls.exceeded:
                self.abort(f"syscall limit exceeded ({calls.limit})")
            calls.exceeded = True
            raise policy.SyscallError("EDQUOT", f"syscall limit of {calls.limit} reached", 122)
        calls.count += 1
        try:
            payload, _ = policy.to_json(args, MAX_SYSCALL_ARGS)
        except (ValueError, RecursionError) as exc:
            raise TypeError(f"syscall arguments must be JSON values ({exc})") from None
        t0 = time.perf_counter()
        self.channel.busy = True
        try:
            self.channel.send({"syscall": name, "args": payload})
            reply = self.channel.recv()
        finally:
            self.channel.busy = False
        calls.wait += time.perf_counter() - t0
        if reply is None:
            os._exit(EXIT_PROTOCOL)
        err = reply.get("error")
        if err is not None:
            raise policy.SyscallError(str(err.get("errno")), str(err.get("message")), int(err.get("code", 0)))
        return reply.get("value")


def _check(channel: Channel) -> None:
    """Check mode (installing an app): compile each file of one request, report the
    errors and exit.  The compiler meets untrusted source only in here."""
    msg = channel.recv()
    files = msg.get("files") if msg is not None else None
    if type(files) is not dict:
        os._exit(EXIT_PROTOCOL)
    errors: dict[str, str] = {}
    for rel, text in files.items():
        try:
            policy.compile_source(str(text), f"{policy.FILENAME}/{rel}")
        except policy.CompileFailed as exc:
            errors[str(rel)] = _clean(" ".join(str(exc).split()))[:ERROR_CHARS]
    channel.send({"op": "checked", "errors": errors})


def _claim_stdio() -> tuple[int, int]:
    """Move the protocol pipes to private fds; fds 0 and 1 become /dev/null."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return in_fd, out_fd


def main(argv: list[str]) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    interpreter = list(sys.path)
    sys.path[:0] = [here, argv[1]]
    config = json.loads(argv[2])
    in_fd, out_fd = _claim_stdio()
    globals()["policy"] = importlib.import_module("sandbox_policy")
    globals()["helpers"] = importlib.import_module("sandbox_agent")
    wall = importlib.import_module("sandbox_wall")
    if config.get("agent"):  # lmos's agent loop for the ask/agent helpers, loaded while files are readable
        helpers.load(here)
    # Modules the interpreter imports lazily (strptime; NFKC for non-ASCII identifiers): load them
    # now, while the files are still readable and openable.  So is the local time zone (glibc
    # reads /etc/localtime once and then only checks that it did not change).
    for name in ("_strptime", "unicodedata"):
        importlib.import_module(name)
    time.localtime()
    os.chdir("/")
    report = wall.isolate(config, wall.interpreter_paths(interpreter))
    if config.get("check"):
        _check(Channel(in_fd, out_fd))
        return
    gc.freeze()  # startup objects move to a permanent generation: per-run collections stay cheap
    Worker(Channel(in_fd, out_fd), config).serve(report)


if __name__ == "__main__":
    main(sys.argv)
