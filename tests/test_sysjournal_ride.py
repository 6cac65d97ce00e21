"""The syscall journal's group commit: which rows another write takes along, and when.

The policy (``SysJournal._ride``): an effect's rows, in flight and completed, always go into
the next transaction (its change is never committed without its in-flight row, and a crash
leaves it in flight only until its completion is on disk); other completed rows wait while
the database is busy until as many wait as there are writes in flight (at most RIDE_ROWS) or
the oldest has waited RIDE_WAIT seconds, and go at once when no other write is in flight, or
when their process also has an in-flight row queued (no gaps in a journal).  Checked here
against a second SQLite connection, which sees only committed rows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmos.kernel import sysjournal
from lmos.kernel.journal import Journal
from lmos.kernel.quota import StoreQuota
from lmos.kernel.sysjournal import INFLIGHT, Entry, SysJournal

pytestmark = pytest.mark.anyio


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.open(str(tmp_path))
    yield j
    j.close()


def entry(pid: int, step: int, inflight: bool = False) -> Entry:
    return Entry(pid=pid, step=step, ts=time.time(), name="kv_set" if inflight else "getpid", request=b"{}",
                 result=None if inflight else b"{}", errno=INFLIGHT if inflight else 0,
                 error="in flight" if inflight else "", cap=None, decision="allow", duration_us=1)


def committed(j: Journal) -> set[tuple[int, int]]:
    conn = sqlite3.connect(j.path)
    try:
        return {(p, s) for p, s in conn.execute("SELECT pid, step FROM sysjournal")}
    finally:
        conn.close()


def write(j: Journal) -> None:
    """Another process's durable write (a kv_set) committing now: the rows ride along with it."""
    j.transaction_sync(lambda c: c.execute("INSERT INTO meta(key, value) VALUES('x', '1') "
                                           "ON CONFLICT(key) DO UPDATE SET value=excluded.value"))


async def test_in_flight_rows_always_ride_completed_rows_wait_for_a_batch(journal: Journal) -> None:
    sj = SysJournal(journal, StoreQuota(), 0)
    journal.writes_in_flight = 4  # a busy database: four writes queued for it
    done = sj.queue(entry(10, 0))
    sj.queue(entry(11, 0, inflight=True))
    write(journal)
    assert committed(journal) == {(11, 0)}  # the effect's row went with the next change
    assert not done.done.is_set()
    for pid in (12, 13):
        sj.queue(entry(pid, 0))
    write(journal)
    assert committed(journal) == {(11, 0)}  # three completed rows, four writes in flight: wait
    sj.queue(entry(14, 0))
    write(journal)
    assert committed(journal) == {(11, 0), (10, 0), (12, 0), (13, 0), (14, 0)}
    assert done.done.is_set() and done.error is None  # woken once committed (on the event loop)
    assert sj.commits == 2 and sj.rows == 5


async def test_completed_rows_go_at_once_when_no_other_write_would_take_them(journal: Journal) -> None:
    sj = SysJournal(journal, StoreQuota(), 0)
    journal.writes_in_flight = 1  # the write that commits now is the only one
    sj.queue(entry(10, 0))
    write(journal)
    assert committed(journal) == {(10, 0)}


async def test_a_row_waits_at_most_ride_wait(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    sj = SysJournal(journal, StoreQuota(), 0)
    journal.writes_in_flight = 30
    sj.queue(entry(10, 0))
    write(journal)
    assert committed(journal) == set()
    monkeypatch.setattr(sysjournal, "RIDE_WAIT", 0.0)
    write(journal)
    assert committed(journal) == {(10, 0)}


async def test_a_process_with_both_kinds_queued_gets_no_gap(journal: Journal) -> None:
    """Concurrent syscalls of one process: its completed step 0 goes with its in-flight step 1."""
    sj = SysJournal(journal, StoreQuota(), 0)
    journal.writes_in_flight = 30
    sj.queue(entry(10, 0))
    sj.queue(entry(20, 0))
    sj.queue(entry(10, 1, inflight=True))
    write(journal)
    assert {(10, 0), (10, 1)} <= committed(journal)


async def test_a_completion_never_lost_behind_its_in_flight_row(journal: Journal) -> None:
    """The committer commits in-flight rows first: a completion replaces its in-flight row."""
    sj = SysJournal(journal, StoreQuota(), 0)
    sj.queue(entry(10, 0, inflight=True))
    sj.queue(entry(10, 0))  # the same step completed (its handler wrote nothing)
    await sj.commit_now()
    assert journal.query("SELECT errno FROM sysjournal WHERE pid=10 AND step=0") == [(0,)]
    assert sj.own_commits == 1


async def test_an_effects_completion_rides_at_once(journal: Journal) -> None:
    """Until an effect's completion is on disk a crash leaves it in flight (EINPROGRESS at recovery),
    so its completion does not wait for a batch, unlike a plain syscall's row."""
    sj = SysJournal(journal, StoreQuota(), 0)
    journal.writes_in_flight = 30
    sj.queue(entry(11, 0, inflight=True))
    write(journal)  # the effect's own change: its in-flight row comes along
    sj.queue(entry(11, 0))  # the effect completed
    sj.queue(entry(12, 0))  # a plain syscall of another process completed
    write(journal)
    assert journal.query("SELECT pid, step, errno FROM sysjournal ORDER BY pid") == [(11, 0, 0)]
