"""The worker role of pipeline: label items from one channel, reply on another."""

LABELS = ("question", "request", "statement")


def label(answer):
    for word in answer.lower().replace(".", " ").split():
        if word in LABELS:
            return word
    return "statement"


def serve(inbox, outbox, system):
    """Answer every item of channel `inbox` on channel `outbox`, until null; returns the count."""
    inc = chan_open(name=inbox)["chan"]
    out = chan_open(name=outbox)["chan"]
    count = 0
    while True:
        item = recv(chan=inc, timeout=60.0)["data"]
        if item is None:
            return count
        answer = ask([{"role": "system", "content": system}, {"role": "user", "content": item}],
                     max_tokens=8, temperature=0.0)
        send(chan=out, data={"index": count, "label": label(answer)})
        count += 1
