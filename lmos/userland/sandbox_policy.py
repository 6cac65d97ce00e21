"""What sandboxed code may touch: guards, safe builtins and module proxies.

RestrictedPython rewrites untrusted source so that every attribute read, item
read, iteration, unpacking, augmented assignment, write and ``print`` goes
through a hook named ``_getattr_``, ``_getitem_`` and so on.  This module
supplies those hooks.  It is loaded inside the sandbox worker process (by file
path, so importing it never drags in the rest of lmos) and imports only the
standard library and RestrictedPython.

The policy rests on three rules, each a backstop for the others:

* no name or attribute that starts with ``_`` (compile time and run time),
  plus RestrictedPython's list of inspection attributes (``gi_frame``,
  ``f_back``, ``tb_frame`` ...) and ``str.format``;
* no module, frame, code or traceback object ever comes out of a guard: a
  module reached by any route (``json.codecs.sys``) is refused, and code only
  ever sees small read-only proxies that carry chosen functions, never the
  modules behind them (proxies have no ``__name__``, so ``from json import
  decoder`` cannot fall back to ``sys.modules`` either);
* every run gets fresh globals, a fresh copy of the builtins and a fresh class
  registry, so nothing one program does is visible to the next.
"""

from __future__ import annotations

import builtins
import operator
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from RestrictedPython import compile_restricted_exec
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safer_getattr,
)
from RestrictedPython.Guards import raise_ as _RAISE
from RestrictedPython.transformer import ALLOWED_FUNC_NAMES

if TYPE_CHECKING or __package__:
    from lmos.userland.sandbox_output import OutputBuffer, OutputLimitExceeded, _Printer
    from lmos.userland.sandbox_proxies import (
        IMPORTABLE,
        SHARED_MODULES,
        SafeNamespace,
        clock_namespace,
        module_name_error,
        random_namespace,
    )
    from lmos.userland.sandbox_values import namespace_of, to_json
else:  # inside the worker these modules are loaded by path, outside any package
    from sandbox_output import OutputBuffer, OutputLimitExceeded, _Printer
    from sandbox_proxies import (  # noqa: F401  (module_name_error is re-exported for the worker)
        IMPORTABLE,
        SHARED_MODULES,
        SafeNamespace,
        clock_namespace,
        module_name_error,
        random_namespace,
    )
    from sandbox_values import namespace_of, to_json  # noqa: F401  (re-exported for the worker)

FILENAME = "<sandbox>"
_MISSING: Any = object()
# Objects that lead out of the sandbox: refused as a guard's input or output.
_OPAQUE = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)
_GENERATORS = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_GENERATOR_OK = frozenset({"send", "throw", "close"})
_CLASS_KEYS = frozenset({"__module__", "__qualname__", "__doc__", "__firstlineno__", "__static_attributes__"})
# Modules that the C code of allowed modules imports for itself (datetime's strftime, strptime and
# timetuple).  C code imports through the ``__import__`` of the calling frame's builtins, the
# sandbox's, with an empty *list* as fromlist (the ``import`` statement passes None or a tuple).
_C_HELPERS = ("time", "_strptime")
_E = TypeVar("_E", bound=BaseException)


class Refusals:
    """Every refusal a guard makes during a run, for the host's audit log.

    Recorded where the guard raises, so a program that catches the exception
    (``try: x.__class__ except AttributeError: pass``) still cannot hide that it
    tried.  The worker takes the record at the end of each run and sends it
    with the result; only the first :attr:`KEEP` messages are kept, with a
    count of all, so a loop of refusals cannot grow the report.  Sandboxed code
    cannot reach this object (it is no builtin and has no public path to it).
    """

    KEEP = 16

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []

    def add(self, exc: _E) -> _E:
        self.count += 1
        if len(self.first) < self.KEEP:
            self.first.append(f"{type(exc).__name__}: {exc}"[:300])
        return exc

    def take(self) -> dict[str, Any]:
        """The record so far (``{"count", "first"}``), and start a new one."""
        out = {"count": self.count, "first": self.first}
        self.count, self.first = 0, []
        return out


REFUSALS = Refusals()


class SyscallError(Exception):
    """A failed syscall as sandboxed code sees it: ``errno`` (a name such as
    ``"EPERM"``), ``code`` (its number) and ``message``."""

    def __init__(self, errno: str, message: str, code: int = 0) -> None:
        super().__init__(f"{errno}: {message}")
        self.errno = errno
        self.message = message
        self.code = code


def _check_value(value: Any) -> Any:
    if isinstance(value, _OPAQUE):
        raise REFUSALS.add(AttributeError(f"{type(value).__name__} objects are not reachable in the sandbox"))
    return value


def guarded_getattr(obj: Any, name: Any, default: Any = _MISSING) -> Any:
    """``_getattr_`` and the ``getattr`` builtin: RestrictedPython's
    ``safer_getattr`` plus an exact-``str`` name, no ``_`` prefix, no
    attributes of opaque objects and no opaque results."""
    if type(name) is not str:
        raise TypeError("attribute name must be a str")
    if name[:1] == "_":
        private = f'"{name}" is not accessible (names starting with "_" are private)'
        raise REFUSALS.add(AttributeError(private))
    if isinstance(obj, _OPAQUE) or (isinstance(obj, _GENERATORS) and name not in _GENERATOR_OK):
        raise REFUSALS.add(AttributeError(f'"{name}" of {type(obj).__name__} objects is not accessible'))
    try:
        value = safer_getattr(obj, name, _RAISE)
    except AttributeError:
        if default is _MISSING:
            raise
        return default
    return _check_value(value)


def guarded_hasattr(obj: Any, name: Any) -> bool:
    try:
        guarded_getattr(obj, name)
    except (AttributeError, NotImplementedError):
        return False
    return True


def guarded_getitem(obj: Any, key: Any) -> Any:
    return _check_value(obj[key])


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "@=": operator.imatmul,
}


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    func = _INPLACE.get(op)
    if func is None:
        raise SyntaxError(f"unsupported augmented assignment {op!r}")
    return func(target, value)


class _ReadOnly:
    """What ``_write_`` hands back for objects the sandbox may not modify."""

    __slots__ = ("_kind",)
    _kind: str

    def __init__(self, kind: str) -> None:
        object.__setattr__(self, "_kind", kind)

    def _deny(self, *args: Any) -> None:
        raise REFUSALS.add(TypeError(f"{self._kind} objects are read-only in the sandbox"))

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = _deny


_EXTRA_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in ("list", "tuple", "dict", "set", "frozenset", "sorted", "reversed", "enumerate", "zip",
                 "map", "filter", "min", "max", "sum", "any", "all", "iter", "next", "format", "bin",
                 "ascii", "object", "bytes", "bytearray", "property", "staticmethod", "classmethod",
                 "NotImplemented", "ArithmeticError", "LookupError", "RecursionError",
                 "StopAsyncIteration", "TimeoutError", "ConnectionError", "PermissionError",
                 "FileNotFoundError")
}
_SAFE_EXCEPTIONS = frozenset(v for v in (*safe_builtins.values(), *_EXTRA_BUILTINS.values())
                             if isinstance(v, type) and issubclass(v, BaseException))
_BASE_BUILTINS = {k: v for k, v in safe_builtins.items()
                  if k not in ("_getattr_", "setattr", "delattr", "__build_class__")}


class RunPolicy:
    """The per-run state behind the guards: output buffer, class registry,
    the builtins dict and the program's own modules.  One instance per run;
    nothing survives the run."""

    def __init__(self, *, output_limit: int, seed: int, abort: Callable[[str], Any] | None = None,
                 echo: Callable[[str], Any] | None = None, now: float | None = None) -> None:
        self.output = OutputBuffer(output_limit, abort, echo)
        self.classes: set[type] = set()
        self.modules = dict(SHARED_MODULES, random=random_namespace(seed))
        if now is not None:  # the run's clock, from a syscall: replayable (sandbox_proxies.clock_namespace)
            self.modules["datetime"] = clock_namespace(now)
        self.app_codes: dict[str, types.CodeType] = {}  # the program's own modules, compiled
        self.app_modules: dict[str, SafeNamespace] = {}  # ... and imported (once per run)
        self.module_globals: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self._loading: set[str] = set()

    def write_guard(self, obj: Any) -> Any:
        """``_write_``: lists, dicts and the run's own classes and instances
        may be modified; everything else is read-only."""
        kind = type(obj)
        if kind in (dict, list, bytearray) or kind in self.classes or (kind is type and obj in self.classes):
            return obj
        return _ReadOnly(kind.__name__)

    def setattr(self, obj: Any, name: Any, value: Any) -> None:
        if type(name) is not str or name.startswith("_"):
            raise REFUSALS.add(AttributeError("attribute names must be str and must not start with '_'"))
        setattr(self.write_guard(obj), name, value)

    def delattr(self, obj: Any, name: Any) -> None:
        if type(name) is not str or name.startswith("_"):
            raise REFUSALS.add(AttributeError("attribute names must be str and must not start with '_'"))
        delattr(self.write_guard(obj), name)

    def metaclass(self, name: str, bases: tuple[Any, ...], namespace: dict[str, Any], **kw: Any) -> type:
        """``__metaclass__`` for ``class`` statements: plain bases only and no
        hooks beyond RestrictedPython's allowed magic methods."""
        if kw:
            raise REFUSALS.add(TypeError("class keywords are not allowed in the sandbox"))
        for base in bases:
            if not (base is object or base in _SAFE_EXCEPTIONS or base is SyscallError
                    or (type(base) is type and base in self.classes)):
                label = getattr(base, "__name__", "this object")
                raise REFUSALS.add(TypeError(f"cannot subclass {label!r} in the sandbox"))
        for key in namespace:
            if type(key) is not str or (key.startswith("_") and key not in _CLASS_KEYS
                                        and key not in ALLOWED_FUNC_NAMES):
                raise REFUSALS.add(TypeError(f"class attribute {key!r} is not allowed in the sandbox"))
        cls = type(name, bases, dict(namespace))
        self.classes.add(cls)
        return cls

    def import_(self, name: Any, globals: Any = None, locals: Any = None, fromlist: Any = (),
                level: int = 0) -> SafeNamespace | None:
        if type(fromlist) is list and not fromlist and level == 0 and name in _C_HELPERS:
            # ``PyImport_Import`` from C: it ignores what ``__import__`` returns and takes the module
            # from ``sys.modules``, so the program is handed nothing.  (The worker loaded both
            # before lock-down.)
            builtins.__import__(name)
            return None
        if type(name) is str and level == 0 and name in self.app_codes:
            return self._app_module(name)
        if type(name) is not str or level != 0 or name not in IMPORTABLE:
            available = ", ".join(sorted({*IMPORTABLE, *self.app_codes}))
            raise REFUSALS.add(ImportError(f"import of {name!r} is not allowed in the sandbox "
                                           f"(available: {available})"))
        return self.modules[name]

    def _app_module(self, name: str) -> SafeNamespace:
        """Run one of the program's own modules (restricted code, fresh globals, the
        same builtins) on its first import and hand out a read-only namespace of its
        top-level names, never the globals dict itself."""
        ns = self.app_modules.get(name)
        if ns is not None:
            return ns
        if name in self._loading:
            raise ImportError(f"circular import of module {name!r}")
        self._loading.add(name)
        try:
            glb = self.globals({}, self.extra)
            glb["__name__"] = name
            self.module_globals.append(glb)
            exec(self.app_codes[name], glb)
        finally:
            self._loading.discard(name)
        ns = SafeNamespace(name, {k: v for k, v in glb.items() if type(k) is str and not k.startswith("_")})
        self.app_modules[name] = ns
        return ns

    def release(self) -> None:
        """Drop every reference to the run's objects (globals of its modules, classes)."""
        for glb in self.module_globals:
            glb.clear()
        self.module_globals.clear()
        self.app_modules.clear()
        self.classes.clear()

    def builtins(self, extra: dict[str, Any]) -> dict[str, Any]:
        out = dict(_BASE_BUILTINS)
        out.update(_EXTRA_BUILTINS)
        out.update(
            __build_class__=builtins.__build_class__, __import__=self.import_,
            getattr=guarded_getattr, hasattr=guarded_hasattr, setattr=self.setattr, delattr=self.delattr,
            SyscallError=SyscallError, OutputLimitExceeded=OutputLimitExceeded,
        )
        out.update(self.modules)
        out.update(extra)
        return out

    def globals(self, inputs: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """Fresh globals holding every hook RestrictedPython's output calls."""
        self.extra = extra
        glb: dict[str, Any] = {
            "__builtins__": self.builtins(extra), "__name__": "__sandbox__", "__metaclass__": self.metaclass,
            "_getattr_": guarded_getattr, "_getitem_": guarded_getitem, "_getiter_": iter,
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence, "_write_": self.write_guard,
            "_inplacevar_": guarded_inplacevar, "_apply_": guarded_apply,
            "_print_": lambda _getattr=None: _Printer(self.output),
        }
        glb.update(inputs)
        return glb


class CompileFailed(Exception):
    """The source was rejected by the parser or by RestrictedPython's policy."""


def compile_source(source: str, filename: str = FILENAME) -> types.CodeType:
    """Compile under the policy; a program's own module ``m`` is ``<sandbox>/m.py``
    (errors then name the file)."""
    try:
        result = compile_restricted_exec(source, filename=filename)
    except (RecursionError, MemoryError, ValueError) as exc:  # absurd nesting, NUL bytes
        raise CompileFailed(f"{type(exc).__name__}: {exc}") from None
    if result.errors or result.code is None:
        errors = "; ".join(result.errors) or "compilation failed"
        raise CompileFailed(errors if filename == FILENAME else f"{filename[len(FILENAME) + 1:]}: {errors}")
    return result.code
