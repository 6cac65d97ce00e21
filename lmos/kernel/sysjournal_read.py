"""Reading the syscall journal back: a process's record and its rows, for replay and recovery.

Split from :mod:`lmos.kernel.sysjournal` (which writes the journal) because the
readers (``lmos replay``, recovery, ``lmos audit``) also work on a read-only state
directory, where no committer runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lmos.kernel.journal import Journal
from lmos.kernel.sysjournal_entry import Entry


@dataclass(slots=True)
class ProcRecord:
    """A process as the processes table remembers it."""

    pid: int
    ppid: int
    uid: int
    app: str
    argv: list[str]
    model: str
    state: str
    exit_status: int | None
    error: str | None
    result: object
    caps: list[str]


def read_process(journal: Journal, pid: int) -> ProcRecord | None:
    journal.flush_sync()
    rows = journal.query("SELECT pid, ppid, uid, app, argv, model, state, exit_status, error, result, caps "
                         "FROM processes WHERE pid=?", (pid,))
    if not rows:
        return None
    r = rows[0]
    return ProcRecord(pid=r[0], ppid=r[1] or 0, uid=r[2], app=r[3] or "", argv=_json(r[4], []),
                      model=r[5] or "", state=r[6] or "", exit_status=r[7], error=r[8],
                      result=_json(r[9], None), caps=_json(r[10], []))


def read_entries(journal: Journal, pid: int, limit: int = 1 << 62) -> list[Entry]:
    """The journal of ``pid``, oldest step first."""
    rows = journal.query("SELECT pid, step, ts, name, request, result, errno, error, cap, decision, "
                         "duration_us, gen, prompt, tainted FROM sysjournal WHERE pid=? ORDER BY step "
                         "LIMIT ?", (pid, limit))
    return [Entry(pid=r[0], step=r[1], ts=r[2], name=r[3], request=bytes(r[4]),
                  result=None if r[5] is None else bytes(r[5]), errno=r[6], error=r[7], cap=r[8],
                  decision=r[9], duration_us=r[10], gen=r[11], prompt=None if r[12] is None else bytes(r[12]),
                  tainted=bool(r[13])) for r in rows]


def _json(text: str | None, default: object) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
