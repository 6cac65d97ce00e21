"""The escape corpus through installed apps, and escapes through the code-app surfaces.

``test_sandbox_escapes.py`` runs every attempt in ``tests/escapes/`` through
``Sandbox.run``.  Here each attempt is the ``main.py`` of an app installed with
``app_install`` and spawned as a process, which adds what only apps have: the
app's own modules, the ``ask``/``agent`` helpers (lmos's agent loop running
inside the worker), the syscalls made as the app's process, printed output
streamed as process output, and the process's exit.  An attempt is blocked
when the installer refuses it (it does not compile under the sandbox's
rules) or when its process fails without the secret, a module's repr or the
sandbox's hooks appearing in its result, its error or its output; a
violation is also recorded in the audit log (an ``audit`` syscall of the
process).  Attempts refused at install also run from their files without
installing (``code_main`` directly), so the runtime's own checks are tested
too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kutil import kernel
from test_sandbox_escapes import ATTEMPTS, MARKERS, planted_secret

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.userland.codeapp import code_main
from lmos.userland.manifest import parse_manifest
from lmos.userland.sandbox_protocol import VIOLATION_MARKS

pytestmark = pytest.mark.anyio
ENV_NAME = "LMOS_APP_ESCAPE_SECRET"


def toml(name: str) -> str:
    return f'name = "{name}"\nversion = "1.0"\ncapabilities = ["llm"]\ntools = ["calc"]\n' \
           '[entry]\nkind = "code"\nsource = "main.py"\n'


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def secret() -> Iterator[tuple[str, str]]:
    """(path, value): a world-readable secret file, and the same value in our environment."""
    with planted_secret(ENV_NAME, "lmos-app-escape-") as found:
        yield found


@pytest.fixture(scope="module")
async def k() -> AsyncIterator[lmos.Kernel]:
    async with kernel(ScriptedDriver("hello")) as k:
        yield k


async def attempt(k: lmos.Kernel, name: str, files: dict[str, str], argv: list[str],
                  value: str) -> tuple[str, Any]:
    """Install and run ``files`` as app ``name``; returns how it was blocked ("install" or
    "run") after checking that nothing leaked."""
    files = {"app.toml": toml(name), **files}
    try:
        await k.syscall("app_install", files=files, grant=True)
    except SyscallError as exc:
        assert exc.errno == Errno.EINVAL and value not in exc.message and "\n" not in exc.message
        try:
            main = code_main(parse_manifest(files["app.toml"]), files)  # uninstalled, the runtime refuses too
        except SyscallError as exc:
            assert exc.errno == Errno.EINVAL  # ... or cannot even be built
            return "install", exc.message
        return "install", await run_blocked(k, main, argv, value)
    return "run", await run_blocked(k, name, argv, value)


async def run_blocked(k: lmos.Kernel, app: Any, argv: list[str], value: str) -> Any:
    pid = await k.spawn(app, argv)
    printed = "".join([ev.text async for ev in k.stream(pid) if ev.kind == "output"])
    w = await k.wait(pid)
    seen = printed + json.dumps(w.result)  # the error may quote the attempt's own source (``__getattr__``)
    assert value not in seen and value not in (w.error or "")
    for marker in MARKERS:
        assert marker not in seen, f"{marker!r} reached: {seen[:300]}"
    assert w.exit_status != 0 and w.errno != 0, f"the attempt ran to completion: {seen[:300]}"
    assert w.error is not None and "\n" not in w.error
    if any(mark in w.error for mark in VIOLATION_MARKS):
        assert w.errno in (Errno.EPERM, Errno.EINVAL)
        calls = [e.name for e in (await k.syscall("trace", pid=pid)).entries]
        assert "audit" in calls, "a sandbox violation must be audited"
    return w.error


@pytest.mark.parametrize("path", ATTEMPTS, ids=[p.stem for p in ATTEMPTS])
async def test_corpus_attempt_is_blocked_in_an_installed_app(k: lmos.Kernel, secret: tuple[str, str],
                                                             path: Path) -> None:
    secret_path, value = secret
    main = "SECRET_PATH = argv[0]\n" + path.read_text()
    name = "esc-" + path.stem.split("_", 1)[0]
    await attempt(k, name, {"main.py": main}, [secret_path], value)
    assert (await k.syscall("getpid")).pid == 1  # the kernel still serves


# Escapes through what only code apps have: their own modules and the agent helpers.
# Each prints what it reaches, as the corpus does.
SURFACES: dict[str, dict[str, str]] = {
    "module_private_items": {
        "main.py": "import helpers\nprint(helpers._items)\n",
        "helpers.py": "X = 1\n",
    },
    "module_getattr_items": {
        "main.py": "import helpers\nprint(getattr(helpers, '_items'))\n",
        "helpers.py": "X = 1\n",
    },
    "module_function_globals": {
        "main.py": "from helpers import f\nprint(getattr(f, '__glob' + 'als__'))\n",
        "helpers.py": "def f():\n    return 1\n",
    },
    "module_is_read_only": {
        "main.py": "import helpers\nhelpers.open = lambda p: 'x'\nprint(helpers.open(SECRET_PATH))\n",
        "helpers.py": "X = 1\n",
    },
    "module_shadows_a_proxy": {
        "main.py": "import json\nprint(json.codecs)\n",
        "json.py": "codecs = 1\n",
    },
    "module_dunder_name": {
        "main.py": "import helpers\nprint(helpers.x)\n",
        "helpers.py": "x = __builtins__\n",
    },
    "module_breaks_rules_unimported": {
        "main.py": "print('never imports it')\nresult = 1\n",
        "helpers.py": "x = ().__class__.__bases__[0].__subclasses__()\n",
    },
    "module_walks_frames": {
        "main.py": "import helpers\nprint(helpers.up())\n",
        "helpers.py": "def up():\n    g = (i for i in [1])\n    return getattr(g, 'gi_frame')\n",
    },
    "module_reads_callers_frame_through_exception": {
        "main.py": "import helpers\ntry:\n    helpers.boom()\nexcept Exception as e:\n"
                   "    tb = getattr(e, '__trace' + 'back__')\n    print(getattr(tb, 'tb_frame'))\n",
        "helpers.py": "def boom():\n    raise ValueError('x')\n",
    },
    "module_import_cycle": {
        "main.py": "import a\n",
        "a.py": "import b\n",
        "b.py": "import a\n",
    },
    "ask_function_globals": {
        "main.py": "print(getattr(ask, '__glob' + 'als__'))\n",
    },
    "agent_function_closure": {
        "main.py": "print(getattr(agent, '__clos' + 'ure__')[0].cell_contents)\n",
    },
    "ask_with_an_object_as_a_message": {
        "main.py": "class M:\n    def get(self, key, default=None):\n"
                   "        print(getattr(self, '__class__'))\n        return 'user'\n"
                   "print(ask([M()]))\n",
    },
    "agent_with_objects_as_tools": {
        "main.py": "class T:\n    pass\nprint(agent([{'role': 'user', 'content': 'hi'}], tools=[T()]))\n",
    },
    "ask_error_traceback_frames": {
        "main.py": "try:\n    ask([{'role': 'nobody', 'content': 'x'}])\nexcept SyscallError as e:\n"
                   "    print(e.errno, e.message)\n    tb = getattr(e, '__trace' + 'back__')\n"
                   "    print(getattr(tb, 'tb_frame'))\n",
    },
    "agent_result_class": {
        "main.py": "r = agent([{'role': 'user', 'content': 'hi'}])\n"
                   "print(getattr(r, '__cla' + 'ss__'))\n",
    },
    "ask_with_a_function_as_content": {
        "main.py": "print(ask([{'role': 'user', 'content': lambda: open(SECRET_PATH)}]))\n",
    },
    "agent_with_an_object_as_an_option": {
        "main.py": "class Evil:\n    pass\n"
                   "print(agent([{'role': 'user', 'content': 'hi'}], temperature=Evil()))\n",
    },
}


def test_surface_attempts_cover_modules_and_helpers() -> None:
    assert sum(k.startswith("module_") for k in SURFACES) >= 8
    assert sum(k.startswith(("ask_", "agent_")) for k in SURFACES) >= 6


@pytest.mark.parametrize("case", sorted(SURFACES))
async def test_code_app_surface_escape_is_blocked(k: lmos.Kernel, secret: tuple[str, str], case: str) -> None:
    secret_path, value = secret
    files = {rel: ("SECRET_PATH = argv[0]\n" + text if rel == "main.py" else text)
             for rel, text in SURFACES[case].items()}
    how = await attempt(k, "surface-" + case.replace("_", "-"), files, [secret_path], value)
    if case in ("module_shadows_a_proxy", "module_dunder_name", "module_breaks_rules_unimported"):
        assert how[0] == "install"  # refused before it could run


async def test_helpers_still_work_after_the_attempts(k: lmos.Kernel) -> None:
    """The surfaces above are usable when used as meant (so blocking them was the guards, not breakage)."""
    files = {"app.toml": toml("surface-ok"), "helpers.py": "def twice(x):\n    return 2 * x\n",
             "main.py": "import helpers\nhi = [{'role': 'user', 'content': 'hi'}]\n"
                        "result = [helpers.twice(2), ask(hi), agent(hi)['text']]\n"}
    await k.syscall("app_install", files=files, grant=True)
    w = await k.wait(await k.spawn("surface-ok", []))
    assert w.exit_status == 0, w.error
    assert w.result == [4, "hello", "hello"]
