"""The built-in apps: one folder each in this directory, loaded like a user's app.

Each ``<name>/app.toml`` (with its ``*.py`` files for a sandboxed ``code``
app) goes through the app store's own path (:mod:`lmos.userland.appstore`:
read the folder, check it, build the app), so a shipped app can do nothing an
installed one could not: none is trusted, in-process Python.  The agent apps
(``chat``, ``calc-agent``, ``assistant``) are pure manifests: a system prompt
and tools for the agent loop; the others (``support``, ``sentiment-monitor``,
``recommend``, ``team``, ``team-worker``) are sandboxed ``code`` apps.
Built-ins are marked origin ``builtin`` and never written to a state
directory; their names cannot be taken by an install.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lmos.syscalls.table import AppSpec

HERE = Path(__file__).resolve().parent


@functools.cache
def builtin_apps() -> tuple[AppSpec, ...]:
    """Built once per interpreter: the folders do not change, and checking code costs a compile."""
    from lmos.userland.appstore import MANIFEST, build_spec, check, load_dir

    specs = []
    for folder in sorted(p for p in HERE.iterdir() if (p / MANIFEST).is_file()):
        pkg = load_dir(folder)
        check(pkg)
        specs.append(build_spec(pkg, origin="builtin"))  # never trusted: a shipped app is a user's app
    return tuple(specs)
