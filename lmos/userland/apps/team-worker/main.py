"""team-worker: solve one subtask of `team` with tools, report the answer on a channel.

Usage (spawned by team): team-worker SUBTASK CHANNEL

The subtask is an ordinary request to the agent, with the manifest's tools
(calc) declared.  The answer is sent before the process exits, so the
planner, which reaps its workers before gathering, always finds it waiting
on the channel.
"""

if argv[:1] in (["--help"], ["-h"]):
    print("usage: team-worker SUBTASK CHANNEL (spawned by team; needs no files)")
else:
    if len(argv) != 2:
        raise SyscallError("EINVAL", "argv is [subtask, channel] (team-worker is spawned by team)")
    task, chan_name = argv
    answer = agent([{"role": "user", "content": task}], temperature=0.0)
    me = getpid()["pid"]
    chan = chan_open(name=chan_name)["chan"]  # the planner's private channel: open to its children only
    send(chan=chan, data={"pid": me, "task": task, "answer": answer["text"], "calls": len(answer["calls"])})
