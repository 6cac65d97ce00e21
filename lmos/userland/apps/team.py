"""``team``: plan, fan out to worker processes, gather over IPC, combine.

The planner asks the model for independent subtasks (one per line), spawns a
``team-worker`` per subtask, and collects their answers from a private
channel.  Workers are processes, not coroutines of the planner, so they are
scheduled, batched, quota-limited and killable like any other; the planner is
BLOCKED in ``wait``/``recv`` meanwhile (its KV left to the policy).  A failed
worker is reported as such rather than stalling the gather.  The final turn
combines the answers.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from lmos.errors import Errno, SyscallError
from lmos.userland.agent import ask, run_agent

MAX_WORKERS = 4
GATHER_TIMEOUT = 120.0
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def subtasks(plan: str, limit: int = MAX_WORKERS) -> list[str]:
    lines = [_BULLET.sub("", line).strip() for line in plan.splitlines()]
    return [line for line in lines if line][:limit]


async def main(sys: Any, argv: list[str], manifest: Any) -> Any:
    task = " ".join(argv).strip()
    if not task:
        raise SyscallError(Errno.EINVAL, "team: give a task")
    plan = await ask(
        sys,
        [{"role": "system", "content": manifest.system}, {"role": "user", "content": task}],
        max_tokens=128,
        temperature=0.0,
    )
    parts = subtasks(plan) or [task]
    me = (await sys.getpid()).pid
    chan_name = f"team.{me}"
    chan = await sys.chan_open(chan_name, capacity=len(parts))
    pids = [await sys.spawn("team-worker", [part, chan_name]) for part in parts]
    # Reap every worker first: a worker that fails never sends, and the planner
    # must not wait on the channel for it.  Answers were sent before each worker
    # exited, and the channel holds one per worker, so none is lost meanwhile.
    failed: dict[int, str] = {}
    for pid in pids:
        w = await sys.wait(pid)
        if w.exit_status != 0:
            failed[pid] = w.error or f"exit status {w.exit_status}"
    answers: dict[int, dict[str, Any]] = {}
    for _ in range(len(pids) - len(failed)):
        msg = await sys.recv(chan, timeout=GATHER_TIMEOUT)
        answers[int(msg["pid"])] = msg
    results = [
        answers.get(p) or {"pid": p, "task": t, "answer": f"failed: {failed.get(p, 'no answer')}", "calls": 0}
        for p, t in zip(pids, parts, strict=True)
    ]
    summary = "\n".join(f"- {r['task']}: {r['answer']}" for r in results)
    final = await ask(
        sys,
        [
            {"role": "system", "content": "Combine the results into one short answer."},
            {"role": "user", "content": f"Task: {task}\nResults:\n{summary}"},
        ],
        max_tokens=128,
        temperature=0.0,
    )
    return {"plan": parts, "workers": pids, "results": results, "text": final}


async def worker(sys: Any, argv: list[str], manifest: Any) -> Any:
    if len(argv) != 2:
        raise SyscallError(Errno.EINVAL, "team-worker: argv is [subtask, channel]")
    task, chan_name = argv
    r = await run_agent(
        sys,
        [{"role": "system", "content": manifest.system}, {"role": "user", "content": task}],
        tools=list(manifest.tools),
        max_steps=manifest.max_steps,
        temperature=0.0,
    )
    me = (await sys.getpid()).pid
    chan = await sys.chan_open(chan_name)
    await sys.send(chan, {"pid": me, "task": task, "answer": r.text, "calls": len(r.calls)})
    return msgspec.to_builtins(r)
