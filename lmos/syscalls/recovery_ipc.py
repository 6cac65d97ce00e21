"""Recovery of the IPC channels the processes of a crashed kernel held (docs/durability.md).

Channels live in the kernel's memory and die with it.  Their history does not: each
``chan_open``, ``send``, ``recv`` and ``chan_close`` of a process is a row of its syscall
journal.  After the unfinished processes are started again (:func:`lmos.syscalls.recovery.recover`),
:func:`restore` rebuilds, from those rows, every channel a recovered process still had open:

- **The channel**, under the id the program holds (a replayed ``chan_open`` answers with it),
  with its name, owner uid, capacity, and for a private channel its owner process (the one that
  created it), so the same processes may open it by name again.
- **Its holders**: the recovered processes that had it open.
- **Its buffered messages**: every acknowledged ``send`` to it (its journal row committed: the
  sender saw it succeed), less as many as acknowledged ``recv`` calls took, oldest first.  A message
  a receiver took whose ``recv`` row never committed is back in the buffer, so the receiver, which
  makes that ``recv`` again live, gets it.  A ``send`` in flight at the crash (EINPROGRESS to its
  sender) is not known to have been queued, and is not restored.

A checkpoint (:mod:`lmos.syscalls.checkpoint`) deletes the rows before it, so its row records the
channels the process held then (``gen.channels``).  Channel ids are those of the kernel run that
made them; rows are matched to a channel only from the time it was opened on, and new channels get
ids above every restored one.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmos.kernel.ipc import Channel
from lmos.kernel.sysjournal import Entry
from lmos.syscalls.ipc import Sent

if TYPE_CHECKING:
    from lmos.kernel.kernel import KernelCore
    from lmos.syscalls.table import Syscalls


@dataclass
class _Held:
    chan: int
    name: str
    private: bool
    capacity: int
    uid: int
    owner_pid: int
    opened: float
    holders: set[int] = field(default_factory=set)


def held_now(kernel: KernelCore, pid: int) -> list[dict[str, Any]]:
    """The channels ``pid`` has open, as a checkpoint row records them."""
    out = []
    for chan_id in sorted(kernel.channels.by_pid.get(pid, ())):
        ch = kernel.channels.by_id.get(chan_id)
        if ch is not None and not ch.closed:
            out.append({"chan": ch.chan_id, "name": ch.name, "private": ch.private, "capacity": ch.capacity,
                        "uid": ch.owner_uid, "owner_pid": ch.owner_pid, "opened": ch.opened})
    return out


def _scan(pid: int, uid: int, entries: list[Entry], found: dict[int, _Held]) -> None:
    """The channels ``pid`` had open at the end of its journal, into ``found``."""
    mine: dict[int, _Held] = {}
    for e in entries:
        if e.errno != 0:
            continue
        if e.name == "checkpoint" and e.gen:
            for c in json.loads(e.gen).get("channels") or []:
                mine[int(c["chan"])] = _Held(int(c["chan"]), str(c["name"]), bool(c["private"]),
                                             int(c["capacity"]), int(c["uid"]), int(c["owner_pid"]),
                                             float(c["opened"]))
        elif e.name == "chan_open" and e.result:
            req, res = json.loads(e.request), json.loads(e.result)
            chan = int(res["chan"])
            if chan not in mine:
                private = bool(req.get("private"))
                mine[chan] = _Held(chan, str(res.get("name") or req.get("name")), private,
                                   int(req.get("capacity") or 64), uid, pid if private else 0, e.ts)
        elif e.name == "chan_close":
            mine.pop(int(json.loads(e.request).get("chan", -1)), None)
    for chan, h in mine.items():
        have = found.setdefault(chan, h)
        if h.private and not have.owner_pid:  # the creator's record names the owner
            have.owner_pid, have.private = h.owner_pid, True
        have.opened = min(have.opened, h.opened)
        have.holders.add(pid)


_CHAN = "json_extract(CAST(request AS TEXT), '$.chan')"  # the channel a journaled request names


def _closed_since(kernel: KernelCore, chan: int, since: float) -> bool:
    rows = kernel.journal.query("SELECT 1 FROM sysjournal WHERE name='chan_close' AND errno=0 AND ts >= ? "
                                f"AND {_CHAN} = ? LIMIT 1", (since, chan))
    return bool(rows)


def _buffered(kernel: KernelCore, chan: int, since: float) -> list[tuple[Sent, int]]:
    """The acknowledged messages to ``chan`` that no acknowledged ``recv`` took, oldest first."""
    sends = kernel.journal.query(
        "SELECT j.request, j.tainted, p.uid FROM sysjournal j LEFT JOIN processes p ON p.pid = j.pid "
        f"WHERE j.name='send' AND j.errno=0 AND j.ts >= ? AND {_CHAN.replace('request', 'j.request')} = ? "
        "ORDER BY j.ts, j.pid, j.step", (since, chan))
    taken = kernel.journal.query(
        f"SELECT count(*) FROM sysjournal WHERE name='recv' AND errno=0 AND ts >= ? AND {_CHAN} = ?",
        (since, chan))[0][0]
    out = []
    for request, tainted, uid in sends[int(taken):]:
        data = json.loads(request).get("data")
        size = len(json.dumps(data, separators=(",", ":")).encode())
        out.append((Sent(data, int(uid if uid is not None else -1), bool(tainted)), size))
    return out


def restore(sys: Syscalls, recovered: dict[int, tuple[int, list[Entry]]]) -> list[int]:
    """Rebuild the channels of the recovered processes (pid -> (uid, journal)); their ids."""
    kernel = sys.kernel
    table = kernel.channels
    found: dict[int, _Held] = {}
    for pid, (uid, entries) in recovered.items():
        _scan(pid, uid, entries, found)
    restored = []
    for chan, h in sorted(found.items()):
        if chan in table.by_id or _closed_since(kernel, chan, h.opened):
            continue
        ch = Channel(chan, h.name, h.uid, h.capacity, max_bytes=table.channel_bytes,
                     owner_pid=h.owner_pid, private=h.private, _usage=table.queued)
        ch.opened = h.opened
        ch.items = deque()
        for item, size in _buffered(kernel, chan, h.opened)[-h.capacity:]:
            ch.items.append((item, size))
            ch._charge(size)
        table.by_id[chan] = ch
        table.count[h.uid] = table.count.get(h.uid, 0) + 1
        if h.private:
            table.private[h.name] = ch
        else:
            table.by_name[(h.uid, h.name)] = ch
        for pid in h.holders:
            table.attach(ch, pid)
        restored.append(chan)
    if found:
        table._next = max(table._next, max(found) + 1)
    return restored
