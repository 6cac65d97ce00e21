"""Sandbox workers: a cap per uid and a global one; syscall waits count toward wall time.

Attacks: one user starts many code-app runs at once, hoping for one worker
process (up to 512 MiB each) per run; the kernel keeps at most
``workers_per_uid`` of them alive and the rest wait, while another user's run
gets a worker and finishes.  And an app with a wall-time quota that spends its
time waiting in syscalls (sleep, an IPC receive nobody answers) instead of
computing is still stopped at its quota.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from kutil import kernel

from lmos.config import SandboxConfig
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno
from lmos.userland.codeapp import code_main
from lmos.userland.manifest import app_spec, parse_manifest
from lmos.userland.sandbox_slots import worker_slots

pytestmark = pytest.mark.anyio
TOML = 'name = "probe"\ncapabilities = ["ipc"]\n[entry]\nkind = "code"\nsource = "main.py"\n'


def app(main: str, toml: str = TOML) -> Any:
    m = parse_manifest(toml)
    return app_spec(m, main=code_main(m, {"main.py": main})).main


async def test_one_uid_cannot_take_every_worker() -> None:
    cfg = SandboxConfig(workers_per_uid=2, workers_total=3)
    async with kernel(ScriptedDriver("ok"), sandbox=cfg) as k:
        slots = worker_slots()
        slow = app("sleep(seconds=0.4)\nresult = 'slow'\n")
        mine = [await k.spawn(slow, uid=1001) for _ in range(6)]
        await anyio.sleep(0.1)
        t0 = time.monotonic()
        other = await k.spawn(app("result = 'other'\n"), uid=1002)
        w = await k.wait(other)
        other_done = time.monotonic() - t0
        assert w.result == "other", w.error
        results = [(await k.wait(pid)).result for pid in mine]
        all_done = time.monotonic() - t0
        assert results == ["slow"] * 6
        assert slots.peak[1001] == 2  # six runs, never more than two live workers
        assert slots.peak_total <= 3
        assert other_done < all_done  # the other user did not wait for the first one's queue
        assert slots.total == 0 and not slots.live  # every slot came back


async def test_time_waiting_in_syscalls_counts_toward_the_wall_quota() -> None:
    quota = TOML + "[quotas]\nmax_wall_seconds = 1\n"
    waits = ["sleep(seconds=30)\n",
             "c = chan_open(name='nobody-writes')\nrecv(chan=c['chan'])\n"]
    async with kernel(ScriptedDriver("ok")) as k:
        for main in waits:
            t0 = time.monotonic()
            w = await k.wait(await k.spawn(app(main, quota), uid=1001))
            assert w.errno == Errno.EDQUOT and "wall-time quota" in (w.error or ""), w.error
            assert time.monotonic() - t0 < 5.0


async def test_nested_code_apps_do_not_deadlock_on_the_cap() -> None:
    """Planners that wait for their own workers park their slots: with a cap of 2 and 5
    ``team`` planners at once (each a code app waiting in ``wait`` for a ``team-worker``
    code app), all finish; without parking the 2 planners holding the slots would wait
    forever for workers that can never get one."""
    cfg = SandboxConfig(workers_per_uid=2, workers_total=16)
    async with kernel(ScriptedDriver("ok"), sandbox=cfg) as k:
        slots = worker_slots()
        with anyio.fail_after(90):
            pids = [await k.spawn("team", ["what", "is", "2", "+", "3"], uid=1001) for _ in range(5)]
            waits = [await k.wait(pid) for pid in pids]
        assert [w.exit_status for w in waits] == [0] * 5, [w.error for w in waits]
        # the cap still holds for work that is not waiting: at most 2 planners started at once,
        # plus their workers while they were parked (never more than 3 x the cap parked)
        assert slots.peak[1001] <= 2 + 2 * 2
        assert slots.total == 0 and not slots.live and not slots.parked and not slots.parked_pids
