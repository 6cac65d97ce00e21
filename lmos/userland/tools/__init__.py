"""Tools that LLM processes call: each module holds one family of tools.

:func:`builtin_tools` is what a kernel boots with; operators add their own
through the ``lmos.tools`` entry-point group (:func:`load_entry_points`), and
users through source code that runs in the sandbox (:mod:`.sandboxed`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from lmos.syscalls.tool import Tool

log = logging.getLogger("lmos.tools")


def builtin_tools() -> list[Tool]:
    from lmos.userland.tools import basic, files, http

    return [*basic.TOOLS, *files.TOOLS, *http.TOOLS]


def load_entry_points(group: str, eps: Iterable[EntryPoint] | None = None) -> list[Any]:
    """Load the objects an entry-point ``group`` names (``lmos.tools`` or ``lmos.apps``).

    An entry point may name one object or a list of them.  A broken plugin is
    logged and skipped, so one bad package cannot stop the system booting.
    """
    found = entry_points(group=group) if eps is None else eps
    out: list[Any] = []
    for ep in found:
        try:
            obj = ep.load()
        except Exception:
            log.exception("cannot load entry point %s = %s", ep.name, ep.value)
            continue
        out.extend(obj if isinstance(obj, list | tuple) else [obj])
    return out
