"""lmos: an operating-system kernel for LLM agents.

``import lmos`` stays light (no torch, no transformers): model code is
imported only when a model is loaded.
"""

from lmos.errors import Errno, SyscallError
from lmos.system import ChatResult, Completion, Kernel

__version__ = "0.1.0"
__all__ = ["ChatResult", "Completion", "Errno", "Kernel", "SyscallError", "__version__"]
