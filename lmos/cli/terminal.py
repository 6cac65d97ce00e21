"""Terminals for lmosh: prompt_toolkit for people, plain lines for scripts.

Ctrl-C while a command runs arrives as SIGINT; a signal receiver task counts
presses and the shell turns them into SIGINT/SIGKILL for the foreground
process, never for the shell itself.  At the prompt, Ctrl-C clears the line
and Ctrl-D ends the session.  Tab completes a word with the space after it,
as in bash (a folder gets its ``/`` instead, so the next Tab goes inside).

The shell neutralises what processes wrote before it reaches ``write``
(:mod:`lmos.userland.shell.termsafe`); what a terminal prints on its own
(a confirmation question built from a process's request) is neutralised here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory

from lmos.userland.shell.core import command_table
from lmos.userland.shell.termsafe import neutralize

PathLister = Callable[[str], Awaitable[list[str]]]

# Which argument of a command is a host path (h) or a path in the file store (s); 1 is the first.
PATH_ARGS: dict[str, dict[int, str]] = {
    "ls": {1: "s"}, "cat": {1: "s"}, "write": {1: "s"}, "put": {1: "h", 2: "s"}, "get": {1: "s", 2: "h"},
    "install": {1: "h"}, "mount": {1: "h", 2: "s"}, "umount": {1: "s"},
}
PID_COMMANDS = ("kill", "stop", "cont", "wait", "mem", "logs")


def looks_like_host_path(word: str) -> bool:
    return word.startswith(("./", "../", "~", "/")) or word in (".", "..")


def word_done(cand: str, start_position: int, display: Any = None) -> Completion:
    """A completion that finishes its word: the space after it is typed too, as in bash; a folder
    (ending in ``/``) is not finished, the next Tab lists what is inside."""
    done = cand if cand.endswith("/") else cand + " "
    return Completion(done, start_position=start_position, display=display if display is not None else cand)


class ShellCompleter(Completer):
    """Commands first; then app names (or a host path such as ./app/app.toml) after run, pids after
    kill/stop/cont/wait/mem/logs, host paths and file-store paths where a command takes them."""

    def __init__(self) -> None:
        self.apps: list[str] = []
        self.pids: list[str] = []
        self.store_paths: PathLister | None = None  # set by the shell: lists the file store
        self.host = PathCompleter(expanduser=True)

    def _where(self, document: Document) -> tuple[str, int, str]:
        """The command, the index of the argument being typed (0: the command itself), that word."""
        text = document.text_before_cursor.split(";")[-1].lstrip()
        words = text.split()
        word = document.get_word_before_cursor(WORD=True)
        index = len(words) if not words or text.endswith(" ") else len(words) - 1
        return (words[0] if words else ""), index, word

    def _word(self, document: Document, n: int) -> str:
        """The n-th word of the command being typed (0: the command), "" if there is none."""
        words = document.text_before_cursor.split(";")[-1].split()
        return words[n] if n < len(words) else ""

    def _path_kind(self, document: Document) -> str:
        """"h" (host), "s" (store) or "" for the word being typed; options (-r, --force) do not count."""
        cmd, index, word = self._where(document)
        if cmd not in PATH_ARGS or index == 0 or word.startswith("-"):
            return ""
        text = document.text_before_cursor.split(";")[-1]
        before = text.split()[1:index]
        position = 1 + sum(1 for w in before if not w.startswith("-"))
        return PATH_ARGS[cmd].get(position, "")

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        cmd, index, word = self._where(document)
        app_word = (cmd == "run" and (index == 1 or (index == 2 and self._word(document, 1) == "--json"))) \
            or (cmd == "uninstall" and index == 1)
        if self._path_kind(document) == "h" or (app_word and cmd == "run" and looks_like_host_path(word)):
            for c in self.host.get_completions(Document(word, len(word)), complete_event):
                path = word[:len(word) + c.start_position] + c.text
                folder = os.path.isdir(os.path.expanduser(path)) and not path.endswith("/")
                yield word_done(c.text + ("/" if folder else ""), c.start_position, c.display)
            return
        if index == 0:
            pool: list[str] = sorted(command_table())
        elif app_word:
            pool = ["--json", *self.apps] if cmd == "run" and index == 1 else self.apps
        elif cmd in PID_COMMANDS:
            pool = self.pids
        else:
            pool = []
        for cand in pool:
            if cand.startswith(word):
                yield word_done(cand, -len(word))

    async def get_completions_async(self, document: Document,
                                    complete_event: CompleteEvent) -> AsyncGenerator[Completion, None]:
        word = self._where(document)[2]
        if self._path_kind(document) == "s" and self.store_paths is not None:
            try:
                names = await self.store_paths(word)
            except Exception:  # a failed listing means no completions, never a dead prompt
                names = []
            for cand in names:
                yield word_done(cand, -len(word))
            return
        for c in self.get_completions(document, complete_event):
            yield c


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

    @property
    def width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns

    @property
    def color(self) -> bool:
        return sys.stdout.isatty() and "NO_COLOR" not in os.environ

    async def read_host(self, path: str, recursive: bool = False) -> list[tuple[str, bytes]]:
        """The host side of lmosh ``put`` (lmos.cli.hostfiles), in this front end's process."""
        from lmos.cli.hostfiles import read_tree

        return await anyio.to_thread.run_sync(read_tree, path, recursive)

    async def write_host(self, path: str, files: list[tuple[str, bytes]], force: bool = False) -> list[str]:
        """The host side of lmosh ``get``: no symlink followed, nothing overwritten unless ``force``."""
        from lmos.cli.hostfiles import write_tree

        return await anyio.to_thread.run_sync(write_tree, path, files, force)

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
        question = neutralize(question)
        if self.prompting:
            self.write_err(f"\nlmosh: refused: {question} (confirmations need a foreground job)\n")
            return False
        answer = await PromptSession[str]().prompt_async(f"lmosh: {question}. Allow? [y/N] ",
                                                          handle_sigint=False)
        return answer.strip().lower() in ("y", "yes")

    def set_names(self, apps: list[str], pids: list[int]) -> None:
        self.completer.apps = apps
        self.completer.pids = [str(p) for p in pids]

    def set_path_lister(self, lister: PathLister) -> None:
        self.completer.store_paths = lister

    @contextlib.asynccontextmanager
    async def live(self) -> AsyncIterator[LiveScreen]:
        """A screen that redraws in place (``top``), reading single keys meanwhile: the terminal
        is in raw mode, so ``q`` arrives without Enter and Ctrl-C arrives as the key ``c-c``."""
        from prompt_toolkit.input import create_input
        from rich.console import Console
        from rich.live import Live

        inp = create_input()
        console = Console(file=sys.stdout, highlight=False, markup=False, emoji=False)
        with Live(console=console, auto_refresh=False, vertical_overflow="crop", redirect_stdout=False,
                  redirect_stderr=False) as live:
            screen = LiveScreen(live)
            with inp.raw_mode(), inp.attach(lambda: screen.pressed([k.key for k in inp.read_keys()])):
                yield screen



class LiveScreen:
    """What ``top`` draws on: ``update`` replaces the frame, ``key`` waits for a key press."""

    def __init__(self, live: Any) -> None:
        self._live = live
        self._keys: list[str] = []
        self._event = anyio.Event()

    def update(self, text: str) -> None:
        from rich.text import Text

        self._live.update(Text(text), refresh=True)

    def pressed(self, keys: list[Any]) -> None:
        self._keys += [str(getattr(k, "value", k)) for k in keys]
        self._event.set()

    async def key(self, timeout: float) -> str | None:
        """The next key pressed within ``timeout`` seconds, or None."""
        if not self._keys:
            with anyio.move_on_after(timeout):
                await self._event.wait()
        self._event = anyio.Event()
        return self._keys.pop(0) if self._keys else None


class LineTerminal(_StdIO):
    """Commands from a list of lines (``-c``, a script file or piped stdin)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines)
        self._interrupts = 0

    async def read_line(self, prompt: str) -> str | None:
        return self.lines.pop(0) if self.lines else None

    async def confirm(self, question: str) -> bool:
        """Scripts cannot answer: refuse, and say so."""
        self.write_err(f"lmosh: refused: {neutralize(question)} (no terminal to confirm on)\n")
        return False

    def set_names(self, apps: list[str], pids: list[int]) -> None:
        return None

    def set_path_lister(self, lister: PathLister) -> None:
        return None

