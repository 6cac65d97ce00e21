"""team: plan, fan out to worker processes, gather over IPC, combine.

Usage: team TASK...

The planner asks the model for independent subtasks (one per line), spawns a
`team-worker` per subtask, and collects their answers from a private channel (kernel-named; only the
planner and its workers may open it).
Workers are processes, not coroutines of the planner, so they are scheduled,
batched, quota-limited and killable like any other; the planner is BLOCKED in
wait/recv meanwhile (its KV left to the policy).  A failed worker is reported
as such rather than stalling the gather.  The final turn combines the answers.
"""

import re

MAX_WORKERS = 4
GATHER_TIMEOUT = 120.0
BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def subtasks(plan, limit=MAX_WORKERS):
    lines = [BULLET.sub("", line).strip() for line in plan.splitlines()]
    return [line for line in lines if line][:limit]


task = " ".join(argv).strip()
if not task:
    raise SyscallError("EINVAL", "give a task, e.g. `team what is 2 + 3 and 4 * 5`")
plan = ask([{"role": "system", "content": manifest["system"]}, {"role": "user", "content": task}],
           max_tokens=128, temperature=0.0)
parts = subtasks(plan) or [task]
# A private channel: the kernel names it, and only this process and its workers may open it,
# so no other process (of any user) can pre-create it, read the answers or forge one.
opened = chan_open(name="team", capacity=len(parts), private=True)
chan, chan_name = opened["chan"], opened["name"]
pids = [spawn(app="team-worker", argv=[part, chan_name])["pid"] for part in parts]
# Reap every worker first: a worker that fails never sends, and the planner must
# not wait on the channel for it.  Answers were sent before each worker exited,
# and the channel holds one per worker, so none is lost meanwhile.
failed = {}
for pid in pids:
    w = wait(pid=pid)
    if w["exit_status"] != 0:
        failed[pid] = w["error"] or "exit status " + str(w["exit_status"])
answers = {}
for _ in range(len(pids) - len(failed)):
    msg = recv(chan=chan, timeout=GATHER_TIMEOUT)["data"]
    answers[int(msg["pid"])] = msg
results = []
for pid, part in zip(pids, parts, strict=True):
    missing = {"pid": pid, "task": part, "answer": "failed: " + failed.get(pid, "no answer"), "calls": 0}
    results.append(answers.get(pid) or missing)
summary = "\n".join("- " + r["task"] + ": " + r["answer"] for r in results)
final = ask([{"role": "system", "content": "Combine the results into one short answer."},
             {"role": "user", "content": "Task: " + task + "\nResults:\n" + summary}],
            max_tokens=128, temperature=0.0)
result = {"plan": parts, "workers": pids, "results": results, "text": final}
