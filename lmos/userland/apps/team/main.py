"""team: plan, fan out to worker processes, gather over IPC, combine.

Usage: team REQUEST...      (team --help)

The planner asks the model for independent subtasks (`team_plan_messages`,
read by `parse_plan`: both from lmos.taskprompts, the words the model was
trained on), spawns a `team-worker` per subtask, and collects their answers
from a private channel (kernel-named; only the planner and its workers may
open it).  Workers are processes, not coroutines of the planner, so they are
scheduled, batched, quota-limited and killable like any other; the planner is
BLOCKED in wait/recv meanwhile (its KV left to the policy).  A failed worker
is reported as such rather than stalling the gather.  The final turn combines
the answers (`team_combine_messages`) and may call calc to do the arithmetic.
"""

MAX_WORKERS = 4
GATHER_TIMEOUT = 120.0
HELP = """usage: team REQUEST...
Splits a multi-part request into subtasks, solves each in its own worker process (team-worker, with the
calc tool) and combines the answers, e.g.  team what is 12 * 7, and 15% of 200, then add them
Needs no files."""


def main(argv):
    request = " ".join(argv).strip()
    if not request:
        raise SyscallError("EINVAL", "give a request, e.g. `team what is 2 + 3 and 4 * 5` (team --help)")
    plan = ask(team_plan_messages(request), max_tokens=128, temperature=0.0)
    parts = parse_plan(plan, MAX_WORKERS) or [request]
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
    final = agent(team_combine_messages(request, [[r["task"], r["answer"]] for r in results]),
                  tools=["calc"], temperature=0.0)
    return {"plan": parts, "workers": pids, "results": results, "text": final["text"],
            "calls": final["calls"], "finish_reason": final["finish_reason"]}


if argv[:1] in (["--help"], ["-h"]):
    print(HELP)
else:
    result = main(argv)
