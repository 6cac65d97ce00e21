"""The process control block and its state machine.

An LLM process is a program (a coroutine the kernel was handed at spawn) plus
a context (one driver sequence) plus accounting.  States follow a classic Unix
kernel so people can reason about them the same way::

    NEW -> READY -> RUNNING -> BLOCKED -> READY ... -> EXITED | KILLED
                         \\-> STOPPED (SIGSTOP) -> back where it was (SIGCONT)

READY means "wants the model and is waiting for a slot in a step"; RUNNING
means "in the current step, or executing its own program code"; BLOCKED means
"waiting in a syscall" (sleep, recv, wait, a tool).  An ended process stays in
the table as a zombie (``reaped`` False) until its parent waits for it.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmos.errors import IllegalTransition

if TYPE_CHECKING:
    from lmos.kernel.request import GenRequest


class State(enum.Enum):
    NEW = "new"
    READY = "ready"
    RUNNING = "running"
    BLOCKED = "blocked"
    STOPPED = "stopped"
    EXITED = "exited"
    KILLED = "killed"


class Signal(enum.IntEnum):
    INT = 2  # interrupt the current syscall (EINTR); Ctrl-C in the shell
    KILL = 9  # end now; cannot be caught
    TERM = 15  # end: the program is cancelled and its cleanup runs
    CONT = 18  # resume a stopped process
    STOP = 19  # take the process off the run queue until CONT


_LIVE = {State.READY, State.RUNNING, State.BLOCKED, State.STOPPED}
_ALLOWED: dict[State, set[State]] = {
    State.NEW: {State.READY, State.RUNNING, State.KILLED, State.EXITED},
    State.READY: {State.RUNNING, State.BLOCKED, State.STOPPED, State.EXITED, State.KILLED},
    State.RUNNING: {State.READY, State.BLOCKED, State.STOPPED, State.EXITED, State.KILLED},
    State.BLOCKED: {State.READY, State.RUNNING, State.STOPPED, State.EXITED, State.KILLED},
    State.STOPPED: {State.READY, State.RUNNING, State.BLOCKED, State.EXITED, State.KILLED},
    State.EXITED: set(),
    State.KILLED: set(),
}


def check_transition(old: State, new: State) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is allowed."""
    if new not in _ALLOWED[old]:
        raise IllegalTransition(f"illegal process transition {old.value} -> {new.value}")


@dataclass(slots=True)
class Stats:
    """Per-process accounting; times are seconds."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    syscalls: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    time_ready: float = 0.0  # runnable but not in a step
    time_running: float = 0.0
    time_blocked: float = 0.0

    @property
    def wall(self) -> float:
        return (self.ended or time.monotonic()) - self.started


@dataclass(slots=True, eq=False)
class Process:
    """One row of the process table."""

    pid: int
    ppid: int
    uid: int
    app: str
    argv: list[str]
    model: str
    caps: frozenset[str]
    priority: int = 0  # nice value: lower runs first (-20 .. 19)
    weight: float = 1.0  # fair-share weight
    token_quota: int | None = None  # total tokens this process may generate
    max_children: int = 1024
    state: State = State.NEW
    exit_status: int | None = None
    result: Any = None  # the program's return value (JSON-representable)
    error: str | None = None  # why it failed or was killed
    errno: int = 0  # the errno of the SyscallError that ended it, if one did
    stats: Stats = field(default_factory=Stats)
    # scheduler bookkeeping
    vruntime: float = 0.0  # fair share: tokens served / weight
    served: int = 0  # tokens served since the last round-robin rotation
    ready_since: float = 0.0
    request: GenRequest | None = None  # the pending llm_generate, if any
    has_seq: bool = False  # the driver holds a sequence for this pid
    stopped_from: State | None = None
    pending_signals: list[Signal] = field(default_factory=list)
    children: set[int] = field(default_factory=set)
    reaped: bool = False
    blocked_on: str = ""  # the syscall name while BLOCKED
    tainted: bool = False  # untrusted content entered the context: irreversible acts need confirmation
    _since: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.state in _LIVE or self.state is State.NEW

    @property
    def ended(self) -> bool:
        return self.state in (State.EXITED, State.KILLED)

    def set_state(self, new: State, now: float | None = None) -> None:
        """Move to ``new``, charging the time spent in the old state."""
        old = self.state
        if old is new:
            return
        check_transition(old, new)
        now = time.monotonic() if now is None else now
        spent = now - self._since
        if old is State.READY:
            self.stats.time_ready += spent
        elif old is State.RUNNING:
            self.stats.time_running += spent
        elif old is State.BLOCKED:
            self.stats.time_blocked += spent
        self._since = now
        if new is State.READY:
            self.ready_since = now
        self.state = new
        if new in (State.EXITED, State.KILLED):
            self.stats.ended = now
