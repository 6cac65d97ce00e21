"""What a sandboxed program prints: ``print`` and ``printed`` over a capped buffer.

RestrictedPython turns ``print`` into calls on a ``_print_`` object per scope
(:class:`_Printer`); every scope of a run writes into the run's one
:class:`OutputBuffer`, which stops the run once the output budget is spent.
Runs inside the worker (loaded by path, through ``sandbox_policy``) and
imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class OutputLimitExceeded(Exception):
    """Raised by ``print`` once the run's output budget is spent."""


class OutputBuffer:
    """Everything the run printed, capped at ``limit`` bytes (UTF-8)."""

    def __init__(self, limit: int, abort: Callable[[str], Any] | None = None,
                 echo: Callable[[str], Any] | None = None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.exceeded = False
        self.abort = abort  # ends the run for good if the program prints on after the overflow
        self.echo = echo  # also passes each printed piece on as it happens (a code app's output stream)

    def write(self, text: str) -> None:
        if self.exceeded:
            if self.abort is not None:
                self.abort(f"output limit exceeded ({self.limit} bytes)")
            raise OutputLimitExceeded("output limit exceeded")
        size = len(text.encode("utf-8", "surrogatepass"))
        if self.size + size > self.limit:
            room = self.limit - self.size
            self.parts.append(text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore"))
            self.size = self.limit
            self.exceeded = True
            raise OutputLimitExceeded(f"output limit exceeded ({self.limit} bytes)")
        self.parts.append(text)
        self.size += size
        if self.echo is not None and text:
            self.echo(text)

    def getvalue(self) -> str:
        return "".join(self.parts)


class _Printer:
    """The ``_print`` object RestrictedPython creates per scope; ``print`` calls
    ``_call_print`` and the name ``printed`` calls the object."""

    __slots__ = ("_out",)

    def __init__(self, out: OutputBuffer) -> None:
        self._out = out

    def _call_print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n",
                    flush: bool = False, **other: Any) -> None:
        if other:
            raise TypeError("print() in the sandbox accepts only sep, end and flush")
        if (sep is not None and type(sep) is not str) or (end is not None and type(end) is not str):
            raise TypeError("sep and end must be str or None")
        text = (" " if sep is None else sep).join(map(str, objects)) + ("\n" if end is None else end)
        self._out.write(text)

    def __call__(self) -> str:
        return self._out.getvalue()
