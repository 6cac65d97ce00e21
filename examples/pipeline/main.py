"""pipeline: a coordinator and a worker process that talk over IPC channels.

Usage: pipeline ITEM...                   (the coordinator)
       pipeline --worker IN OUT           (the worker; the coordinator spawns it)

The coordinator opens two private channels (the kernel names them, and only
it and its children may open them), spawns a copy of
this app in the worker role, sends it each item and then null, gathers one
reply per item, and reaps the worker.  The worker labels each item with the
model (ask) and replies on the other channel until null arrives.  Both are
ordinary processes: each has its own capabilities, quotas and trace.
"""

import worker

if argv[:1] == ["--worker"]:
    if len(argv) != 3:
        raise SyscallError("EINVAL", "usage: pipeline --worker IN OUT")
    result = worker.serve(argv[1], argv[2], manifest["system"])
else:
    items = [a for a in argv if a.strip()]
    if not items:
        raise SyscallError("EINVAL", "give some items, e.g. `pipeline \"where is my parcel?\" hello`")
    # private channels: kernel-named, and only this process and its children may open them
    inbox = chan_open(name="pipeline.in", capacity=len(items) + 1, private=True)
    outbox = chan_open(name="pipeline.out", capacity=len(items), private=True)
    to_worker, from_worker = inbox["chan"], outbox["chan"]
    pid = spawn(app=manifest["name"], argv=["--worker", inbox["name"], outbox["name"]])["pid"]
    for item in items:
        send(chan=to_worker, data=item)
    send(chan=to_worker, data=None)
    replies = {}
    for _ in items:
        reply = recv(chan=from_worker, timeout=120.0)["data"]
        replies[reply["index"]] = reply
    done = wait(pid=pid)
    if done["exit_status"] != 0:
        raise SyscallError("EIO", "the worker failed: " + str(done["error"]))
    result = [{"item": items[i], "label": replies[i]["label"], "worker": pid} for i in range(len(items))]
