"""Unit tests of the sandbox guards, run in-process (no worker): fast and precise."""

from __future__ import annotations

import json
import math
import os
import types
from typing import Any

import pytest

from lmos.userland import sandbox_policy as sp


def _run(source: str, inputs: dict[str, Any] | None = None) -> tuple[dict[str, Any], sp.RunPolicy]:
    policy = sp.RunPolicy(output_limit=1000, seed=7)
    glb = policy.globals(inputs or {}, {})
    exec(sp.compile_source(source), glb)
    return glb, policy


def test_getattr_refuses_private_names_and_non_str_names() -> None:
    def f() -> None:
        pass

    with pytest.raises(AttributeError, match="starting with"):
        sp.guarded_getattr(f, "__globals__")

    class Sneaky(str):
        def startswith(self, prefix: Any, *a: Any) -> bool:
            return False

    with pytest.raises(TypeError):
        sp.guarded_getattr(f, Sneaky("__globals__"))
    assert sp.guarded_getattr(f, "nope", 5) == 5
    with pytest.raises(AttributeError):
        sp.guarded_getattr(f, "nope")


def test_getattr_refuses_frames_generators_and_module_results() -> None:
    def gen() -> Any:
        yield 1

    g = gen()
    for name in ("gi_frame", "gi_code", "gi_yieldfrom", "gi_running"):
        with pytest.raises(AttributeError):
            sp.guarded_getattr(g, name)
    assert sp.guarded_getattr(g, "send") is not None
    holder = types.SimpleNamespace(mod=os, fine=1)
    with pytest.raises(AttributeError, match="module"):
        sp.guarded_getattr(holder, "mod")
    assert sp.guarded_getattr(holder, "fine") == 1
    with pytest.raises(AttributeError):
        sp.guarded_getattr(json, "decoder")  # never handed a module, but refuse anyway
    with pytest.raises(AttributeError, match="module"):
        sp.guarded_getitem({"m": os}, "m")


def test_str_format_is_refused() -> None:
    with pytest.raises(NotImplementedError):
        sp.guarded_getattr("{0.__class__}", "format")
    with pytest.raises(NotImplementedError):
        sp.guarded_getattr(str, "format_map")


def test_namespace_proxy_has_no_name_and_is_read_only() -> None:
    proxy = sp.SHARED_MODULES["json"]
    assert not hasattr(proxy, "__name__")  # ``from json import decoder`` must not reach sys.modules
    with pytest.raises(AttributeError):
        proxy.codecs  # noqa: B018
    with pytest.raises(AttributeError):
        proxy.loads = print
    assert proxy.loads("[1]") == [1]
    assert repr(proxy) == "<sandbox json>"
    assert "module" not in repr(sp.SHARED_MODULES["math"])


def test_to_json_copies_exact_json_values_only() -> None:
    assert sp.to_json({"a": (1, 2.5, [None, True])}, 1000)[0] == {"a": [1, 2.5, [None, True]]}
    for bad in ({1: 2}, float("nan"), object(), {"a": {1, 2}}, 10**5000):
        with pytest.raises(ValueError):
            sp.to_json(bad, 1000)
    with pytest.raises(ValueError):
        sp.to_json("x" * 2000, 1000)
    nested: list[Any] = []
    for _ in range(100):
        nested = [nested]
    with pytest.raises(ValueError):
        sp.to_json(nested, 10**6)

    class MyStr(str):
        pass

    with pytest.raises(ValueError):
        sp.to_json(MyStr("x"), 100)


def test_namespace_keeps_json_values_and_drops_the_rest() -> None:
    glb, _ = _run("a = (1, 2)\nb = {'k': [1]}\ndef f():\n    pass\nc = object()\n", {"inp": 3, "_hidden": 1})
    assert sp.namespace_of(glb, (), 1000) == {"a": [1, 2], "b": {"k": [1]}, "inp": 3}


def test_print_collects_and_caps_output() -> None:
    _, policy = _run("print('hello', 1, sep='-')\nprint('x', end='')")
    assert policy.output.getvalue() == "hello-1\nx"
    with pytest.raises(sp.OutputLimitExceeded):
        _run("while True:\n    print('y' * 100)")
    aborted: list[str] = []
    out = sp.OutputBuffer(10, aborted.append)
    with pytest.raises(sp.OutputLimitExceeded):
        out.write("0123456789abc")
    assert out.getvalue() == "0123456789"
    with pytest.raises(sp.OutputLimitExceeded):
        out.write("more")
    assert aborted == ["output limit exceeded (10 bytes)"]
    with pytest.raises(TypeError):
        _run("print('x', file=None)")


def test_classes_are_plain_and_hookless() -> None:
    glb, policy = _run(
        "class A:\n    def __init__(self, v):\n        self.v = v\n"
        "    def __eq__(self, o):\n        return True\n"
        "a = A(2)\na.w = 3\nsetattr(a, 'z', 4)\nr = [a.v, a.w, a.z, a == 1]\n"
        "class E(ValueError):\n    pass\n"
    )
    assert glb["r"] == [2, 3, 4, True]
    for base in (str, dict, type, sp.SafeNamespace):
        with pytest.raises(TypeError, match="subclass"):
            policy.metaclass("X", (base,), {})
    with pytest.raises(TypeError, match="not allowed"):
        policy.metaclass("X", (), {"__getattribute__": lambda *a: None})
    with pytest.raises(TypeError, match="keywords"):
        policy.metaclass("X", (), {}, metaclass=type)
    with pytest.raises(TypeError, match="read-only"):
        _run("math.pi = 3")
    with pytest.raises(TypeError, match="read-only"):
        _run("setattr(ValueError, 'x', 1)")


def test_import_allowlist_and_proxies() -> None:
    glb, _ = _run(
        "import math\nfrom json import dumps\nimport re\nimport random\nimport datetime\n"
        "a = math.sqrt(9)\nb = dumps([1])\nm = re.search('(b+)', 'abbbc')\nc = [m.group(1), m.span()]\n"
        "d = random.random()\ne = datetime.timedelta(days=1).total_seconds()\n"
        "f = re.sub('a', lambda mm: mm.group(0).upper(), 'banana')\n"
        "g = [x.group(0) for x in re.finditer('n.', 'banana')]\n"
    )
    assert glb["a"] == 3.0 and glb["b"] == "[1]" and glb["c"] == ["bbb", (1, 4)] and glb["e"] == 86400.0
    assert glb["f"] == "bAnAnA" and glb["g"] == ["na", "na"]
    glb2, _ = _run("import random\nd = random.random()")
    assert glb["d"] == glb2["d"]  # same seed, same draw
    for name in ("os", "sys", "json.decoder", "string", "typing", "operator", "uuid"):
        with pytest.raises(ImportError):
            _run(f"import {name}")
    with pytest.raises(ImportError):
        _run("from json import decoder")
    with pytest.raises(AttributeError):
        _run("m = re.match('a', 'a')\nx = m.re")
    assert isinstance(sp.SHARED_MODULES["re"].I, int) and math.isfinite(glb["d"])


def test_compile_rejects_policy_violations() -> None:
    for source in ("x = ().__class__", "async def f():\n    pass", "eval('1')", "_getattr_ = 1",
                   "try:\n    pass\nexcept* ValueError:\n    pass", "class A(metaclass=M):\n    pass",
                   "x = (("):
        with pytest.raises(sp.CompileFailed):
            sp.compile_source(source)


def test_builtins_are_fresh_and_exclude_dangerous_names() -> None:
    one, two = sp.RunPolicy(output_limit=10, seed=1), sp.RunPolicy(output_limit=10, seed=1)
    b1, b2 = one.builtins({}), two.builtins({})
    assert b1 is not b2 and b1["setattr"] != b2["setattr"]
    for name in ("open", "eval", "exec", "compile", "type", "globals", "vars", "dir", "breakpoint", "help",
                 "input", "locals", "memoryview", "super", "exit", "quit"):
        assert name not in b1, name
    assert b1["__import__"] != __import__ and b1["getattr"] is sp.guarded_getattr
