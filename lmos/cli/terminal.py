"""Terminals for lmosh: prompt_toolkit for people, plain lines for scripts.

Ctrl-C while a command runs arrives as SIGINT; a signal receiver task counts
presses and the shell turns them into SIGINT/SIGKILL for the foreground
process, never for the shell itself.  At the prompt, Ctrl-C clears the line
and Ctrl-D ends the session.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterable
from pathlib import Path

import anyio
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory

from lmos.userland.shell.core import command_table


class ShellCompleter(Completer):
    """Commands first; then app names after run, pids after kill/stop/cont/wait/mem/logs."""

    def __init__(self) -> None:
        self.apps: list[str] = []
        self.pids: list[str] = []

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        word = document.get_word_before_cursor(WORD=True)
        if len(words) == 0 or (len(words) == 1 and not text.endswith(" ")):
            pool: list[str] = sorted(command_table())
        elif words[0] == "run":
            pool = self.apps
        elif words[0] in ("kill", "stop", "cont", "wait", "mem", "logs"):
            pool = self.pids
        else:
            pool = []
        for cand in pool:
            if cand.startswith(word):
                yield Completion(cand, start_position=-len(word))


class _StdIO:
    """Output to stdout/stderr and Ctrl-C counting, shared by both terminals."""

    _interrupts = 0

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def write_err(self, text: str) -> None:
        sys.stdout.flush()
        sys.stderr.write(text)
        sys.stderr.flush()

    def take_interrupt(self) -> int:
        n, self._interrupts = self._interrupts, 0
        return n

    async def watch_sigint(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                self._interrupts += 1


class PromptTerminal(_StdIO):
    """An interactive terminal with history and tab completion."""

    def __init__(self, history: Path | None = None) -> None:
        self.completer = ShellCompleter()
        hist = FileHistory(str(history)) if history is not None else InMemoryHistory()
        self.session: PromptSession[str] = PromptSession(history=hist, completer=self.completer)
        self._interrupts = 0
        self.prompting = False

    async def read_line(self, prompt: str) -> str | None:
        self.prompting = True
        try:
            # Our own SIGINT receiver stays installed: prompt_toolkit must not swap it out.
            return await self.session.prompt_async(prompt, handle_sigint=False)
        except KeyboardInterrupt:
            return ""
        except EOFError:
            return None
        finally:
            self.prompting = False

    async def confirm(self, question: str) -> bool:
        """Ask inline.  A background job asking while the shell waits at its prompt is
        refused: two prompts cannot share the terminal."""
        if self.prompting:
            self.write_err(f"\nlmosh: refused: {question} (confirmations need a foreground job)\n")
            return False
        answer = await PromptSession[str]().prompt_async(f"lmosh: {question}. Allow? [y/N] ",
                                                          handle_sigint=False)
        return answer.strip().lower() in ("y", "yes")

    def set_names(self, apps: list[str], pids: list[int]) -> None:
        self.completer.apps = apps
        self.completer.pids = [str(p) for p in pids]



class LineTerminal(_StdIO):
    """Commands from a list of lines (``-c``, a script file or piped stdin)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines)
        self._interrupts = 0

    async def read_line(self, prompt: str) -> str | None:
        return self.lines.pop(0) if self.lines else None

    async def confirm(self, question: str) -> bool:
        """Scripts cannot answer: refuse, and say so."""
        self.write_err(f"lmosh: refused: {question} (no terminal to confirm on)\n")
        return False

    def set_names(self, apps: list[str], pids: list[int]) -> None:
        return None

