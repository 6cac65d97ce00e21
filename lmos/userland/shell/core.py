"""lmosh: the interactive shell, a userland program like sh.

The shell runs as an ordinary process and every command is a syscall (spawn,
ps, kill, wait, events, fs_*, mem_stat, trace ...), so whatever the shell can
do, an app with the same capabilities could do.  Terminal input and output come
from a :class:`Terminal` that the front end provides (prompt_toolkit for people,
a line list for ``-c`` and scripts).

This module is the loop and the command table; the commands live by concept in
their own modules (:mod:`.jobs` job control, :mod:`.info` the system's state,
:mod:`.chat` conversations, :mod:`.files` the file store, :mod:`.apps`
installing), each exporting ``COMMANDS`` and ``HELP``.  Whatever a process
wrote reaches the terminal only through :mod:`.termsafe`.
"""

from __future__ import annotations

import shlex
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lmos.errors import SyscallError
from lmos.userland.shell.termsafe import neutralize

PROMPT = "lmosh$ "
Command = Callable[["Shell", list[str], str], Awaitable[None]]


class Terminal(Protocol):
    """What the shell needs from a terminal.

    Optional, looked up with ``getattr``: ``confirm(question) -> bool`` (ask y/N
    inline) and ``live()``, an async context manager giving a screen that
    redraws in place (``update(text)``, ``await key(timeout)``) for ``top``.
    Text the shell writes is terminal-safe already (see :meth:`Shell.out`)."""

    async def read_line(self, prompt: str) -> str | None:
        """A line of input; None at end of input (Ctrl-D)."""
        ...

    def write(self, text: str) -> None: ...

    def write_err(self, text: str) -> None:
        """Error output (stderr for a real terminal)."""
        ...

    def take_interrupt(self) -> int:
        """Ctrl-C presses since the last call (0 when none)."""
        ...

    def set_names(self, apps: list[str], pids: list[int]) -> None:
        """Words for tab completion."""
        ...

    def set_path_lister(self, lister: Callable[[str], Awaitable[list[str]]]) -> None:
        """How tab completion lists file-store paths that start with a word."""
        ...

    @property
    def width(self) -> int:
        """Columns that results (tables) are laid out in."""
        ...

    @property
    def color(self) -> bool:
        """Whether output may carry colour codes (it goes to a terminal)."""
        ...

    async def read_host(self, path: str, recursive: bool = False) -> list[tuple[str, bytes]]:
        """Files from the user's host (``put``), read by the front end, never by the kernel.

        ``[(rel, data)]`` where ``rel`` starts with the file's or folder's own
        name; EFBIG past the size limits, before anything is read."""
        ...

    async def write_host(self, path: str, files: list[tuple[str, bytes]], force: bool = False) -> list[str]:
        """Write files to the user's host (``get``) with cp semantics; the host paths written.

        Refuses symlinks below the target folder and, without ``force``,
        existing files, all before writing anything."""
        ...


@dataclass
class Job:
    num: int
    pid: int
    cmd: str


@dataclass
class Done:
    """A background job the prompt has reported as finished; ``wait`` can still show its result."""

    pid: int
    cmd: str
    reply: Any = field(default=None)
    num: int = 0  # the job number it had, so ``wait %N`` still finds it


def modules() -> list[Any]:
    """The command modules, in the order ``help`` lists them."""
    from lmos.userland.shell import apps, chat, files, info, jobs

    return [jobs, info, chat, files, apps]


def command_table() -> dict[str, Command]:
    table: dict[str, Command] = {}
    for mod in modules():
        table.update(mod.COMMANDS)
    return table


def help_text() -> str:
    return "\n".join(mod.HELP.rstrip("\n") for mod in modules())


class Shell:
    def __init__(self, sys: Any, term: Terminal) -> None:
        self.sys = sys
        self.term = term
        self.jobs: dict[int, Job] = {}
        self.done: dict[int, Done] = {}  # pid -> finished background job, until `wait` reads it
        self._pid: int | None = None
        self.status = 0
        self.running = True
        self.handlers: dict[str, Command] = command_table()
        self.pending: deque[str] | None = None  # a script's lines not yet run (None: interactive)

    def out(self, text: str = "") -> None:
        """A line for the user.  Whatever it quotes (names, argv, file text, messages) may come from a
        process, so it is neutralised (:mod:`.termsafe`): no process can drive the terminal."""
        self.term.write(neutralize(text) + "\n")

    def show(self, rendered: str) -> None:
        """A line that :mod:`.render` made terminal-safe already (it may carry the table's colours)."""
        self.term.write(rendered + "\n")

    async def own_pid(self) -> int:
        """The shell's own process (asked once: in a front end the ``sys`` may be remote)."""
        if self._pid is None:
            self._pid = int((await self.sys.getpid()).pid)
        return self._pid

    async def read_more(self, prompt: str) -> str | None:
        """The next input line for a command that reads several (a here-document, an answer):
        the script's next line when running one, else the terminal's; None at end of input."""
        if self.pending is not None:
            return self.pending.popleft() if self.pending else None
        return await self.term.read_line(prompt)

    def err(self, text: str) -> None:
        self.term.write_err(f"lmosh: {neutralize(text)}\n")
        self.status = 1

    # -- main loop ------------------------------------------------------------
    async def run(self) -> int:
        self.term.set_path_lister(self.store_paths)
        await self.refresh_names()
        while self.running:
            await self.report_done()
            line = await self.term.read_line(PROMPT)
            if line is None:
                break
            self.term.take_interrupt()
            for part in split_commands(line):
                await self.execute(part)
                if not self.running:
                    break
        await self.shutdown()
        return self.status

    async def execute(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.err(f"syntax error: {exc}")
            return
        if not words:
            return
        name, args = words[0], words[1:]
        handler = self.handlers.get(name)
        if handler is None:
            self.err(f"{name}: command not found (try help)")
            return
        self.status = 0
        try:
            await handler(self, args, line)
        except SyscallError as exc:
            self.err(f"{name}: {exc.errno.name}: {exc.message}")
        except Exception as exc:  # a bug in one command must not end the session
            self.err(f"{name}: {type(exc).__name__}: {exc}")

    async def refresh_names(self) -> None:
        try:
            apps = [a.name for a in (await self.sys.call("app_list")).apps]
            pids = [p.pid for p in await self.sys.ps()]
            self.term.set_names(apps, pids)
        except SyscallError:
            pass

    async def store_paths(self, word: str) -> list[str]:
        """File-store paths that start with ``word``, folders ending in ``/`` (for tab completion)."""
        prefix = word if word.startswith("/") else "/" + word
        folder = prefix.rpartition("/")[0] or "/"
        try:
            entries = (await self.sys.call("fs_list", path=folder)).entries
        except SyscallError:
            return []
        paths = [e.path + ("/" if e.kind == "dir" else "") for e in entries]
        return sorted(p for p in paths if p.startswith(prefix))

    async def shutdown(self) -> None:
        """Ctrl-D / exit: end every job and reap it, so nothing is left running."""
        for job in list(self.jobs.values()):
            try:
                await self.sys.kill(job.pid, "KILL")
                await self.sys.wait(job.pid, timeout=10)
            except SyscallError:
                pass
        self.jobs.clear()

    async def report_done(self) -> None:
        from lmos.userland.shell.jobs import report_done

        try:
            await report_done(self)
        except SyscallError as exc:  # the prompt comes back whatever ps or wait said
            self.err(f"jobs: {exc.errno.name}: {exc.message}")


def split_commands(line: str) -> list[str]:
    """Split on ``;`` outside quotes."""
    parts: list[str] = []
    cur: list[str] = []
    quote = ""
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


async def shell_main(sys: Any, argv: list[str], term: Terminal, script: list[str] | None = None) -> int:
    """The lmosh program: interactive on ``term``, or the ``script`` lines then exit."""
    sh = Shell(sys, term)
    if script is None:
        return await sh.run()
    sh.pending = deque(script)
    while sh.pending:
        line = sh.pending.popleft()
        for part in split_commands(line):
            await sh.execute(part)
            if not sh.running:
                break
        if not sh.running:
            break
    if sh.running:  # a script's background jobs finish before the shell does
        for job in list(sh.jobs.values()):
            try:
                await sys.wait(job.pid)
            except SyscallError:
                pass
    await sh.report_done()
    await sh.shutdown()
    return sh.status
