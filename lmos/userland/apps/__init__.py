"""The built-in apps: one TOML manifest each, in this directory.

Agent apps (``chat``, ``calc-agent``) are pure manifests: a system prompt and
tools for the agent loop.  The others pair a manifest with a trusted Python
program in this package (``support``, ``sentiment-monitor``, ``recommend``,
``team`` and its ``team-worker``).
"""

from __future__ import annotations

from pathlib import Path

from lmos.syscalls.table import AppSpec

HERE = Path(__file__).resolve().parent


def builtin_apps() -> list[AppSpec]:
    from lmos.userland.manifest import app_spec, load_manifest

    return [app_spec(load_manifest(p), trusted=True) for p in sorted(HERE.glob("*.toml"))]
