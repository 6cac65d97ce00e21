"""team-worker: solve one subtask of `team` with tools, report the answer on a channel.

Usage (spawned by team): team-worker SUBTASK CHANNEL

The answer is sent before the process exits, so the planner, which reaps its
workers before gathering, always finds it waiting on the channel.
"""

if len(argv) != 2:
    raise SyscallError("EINVAL", "argv is [subtask, channel]")
task, chan_name = argv
result = agent([{"role": "system", "content": manifest["system"]}, {"role": "user", "content": task}],
               temperature=0.0)
me = getpid()["pid"]
chan = chan_open(name=chan_name)["chan"]  # the planner's private channel: open to its children only
send(chan=chan, data={"pid": me, "task": task, "answer": result["text"], "calls": len(result["calls"])})
