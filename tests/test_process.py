"""The process state machine."""

from __future__ import annotations

import itertools

import pytest

from lmos.errors import IllegalTransition
from lmos.kernel.process import Process, State, check_transition

LEGAL = {
    (State.NEW, State.READY), (State.READY, State.RUNNING), (State.RUNNING, State.BLOCKED),
    (State.BLOCKED, State.READY), (State.RUNNING, State.READY), (State.RUNNING, State.EXITED),
    (State.BLOCKED, State.KILLED), (State.READY, State.STOPPED), (State.STOPPED, State.READY),
    (State.NEW, State.KILLED),
}
ILLEGAL = {
    (State.EXITED, State.READY), (State.KILLED, State.RUNNING), (State.EXITED, State.KILLED),
    (State.READY, State.NEW), (State.RUNNING, State.NEW), (State.BLOCKED, State.NEW),
}


def proc() -> Process:
    return Process(pid=2, ppid=1, uid=0, app="t", argv=[], model="m", caps=frozenset())


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL, key=str))
def test_legal_transitions(old: State, new: State) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), sorted(ILLEGAL, key=str))
def test_illegal_transitions_raise(old: State, new: State) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(old, new)


def test_ended_states_are_final() -> None:
    for end, other in itertools.product((State.EXITED, State.KILLED), State):
        if other is not end:
            with pytest.raises(IllegalTransition):
                check_transition(end, other)


def test_time_accounting_follows_states() -> None:
    p = proc()
    p.set_state(State.READY, now=p._since + 1.0)
    p.set_state(State.RUNNING, now=p._since + 2.0)  # 2 s ready
    p.set_state(State.BLOCKED, now=p._since + 3.0)  # 3 s running
    p.set_state(State.READY, now=p._since + 4.0)  # 4 s blocked
    assert p.stats.time_ready == pytest.approx(2.0)
    assert p.stats.time_running == pytest.approx(3.0)
    assert p.stats.time_blocked == pytest.approx(4.0)
    p.set_state(State.EXITED)
    assert p.ended and p.stats.ended is not None
    with pytest.raises(IllegalTransition):
        p.set_state(State.RUNNING)
