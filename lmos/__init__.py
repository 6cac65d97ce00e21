"""lmos: an operating-system kernel for LLM agents.

``import lmos`` stays light (no torch, no transformers): model code is
imported only when a model is loaded, and the facade itself only when it is
first used, so a front end that attaches to a running kernel starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmos.errors import Errno, SyscallError

if TYPE_CHECKING:
    from lmos.system import ChatResult, Completion, Kernel

__version__ = "0.1.0"
__all__ = ["ChatResult", "Completion", "Errno", "Kernel", "SyscallError", "__version__", "connect"]


def __getattr__(name: str) -> Any:
    if name in ("ChatResult", "Completion", "Kernel"):
        import lmos.system

        return getattr(lmos.system, name)
    if name == "connect":  # imported by name: lmos.server imports lmos, and the client is a front end
        import importlib

        return importlib.import_module("lmos.attach").connect
    raise AttributeError(f"module 'lmos' has no attribute {name!r}")
