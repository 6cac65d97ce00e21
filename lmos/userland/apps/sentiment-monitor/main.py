"""sentiment-monitor: a stream of financial headlines in, alerts out.

Usage: sentiment-monitor [--file PATH] [--chan NAME] [--alerts NAME]
                         [--window N] [--threshold X] [--idle SECONDS] [HEADLINE...]

Each headline is classified by the model on a fresh context (headlines are
independent, so nothing is gained by letting them share one).  A sliding
window of the last --window labels is kept, and when the share of negative
ones rises to --threshold or above an alert is raised: sent on the IPC channel
--alerts (so another process can act on it) and recorded in the result.
Alerts are edge-triggered: one per crossing, not one per headline while the
share stays high.

Input, in this order: headlines as arguments, --file PATH (one per line) and
--chan NAME (JSON strings until null, or --idle seconds of silence).
The model is prompted with exactly the words it was trained on
(`sentiment_messages`) and its answer read by `parse_sentiment` (both from
lmos.taskprompts).
Returns {"labels": [{headline, label}], "alerts": [...]}.
"""

import options


def run(opts, headlines):
    size, threshold = opts["window"], opts["threshold"]
    alerts_chan = chan_open(name=opts["alerts"], capacity=256)["chan"]
    window = []
    labels = []
    alerts = []
    state = {"above": False}

    def classify(headline):
        label = parse_sentiment(ask(sentiment_messages(headline), max_tokens=8, temperature=0.0))
        labels.append({"headline": headline, "label": label})
        window.append(label)
        if len(window) > size:
            window.pop(0)
        share = window.count("negative") / len(window)
        crossing = len(window) == size and share >= threshold
        if crossing and not state["above"]:
            alert = {"type": "alert", "index": len(labels) - 1, "headline": headline,
                     "negative_share": round(share, 4), "window": list(window)}
            alerts.append(alert)
            try:
                send(chan=alerts_chan, data=alert, timeout=1.0)
            except SyscallError as exc:
                if exc.errno != "ETIMEDOUT":  # nobody draining the channel: the result still has it
                    raise
        state["above"] = crossing

    for headline in headlines:
        classify(headline)
    if opts["file"]:
        for line in options.read_file(opts["file"]).splitlines():
            if line.strip():
                classify(line.strip())
    if opts["chan"]:
        feed = chan_open(name=opts["chan"])["chan"]
        while True:
            try:
                item = recv(chan=feed, timeout=opts["idle"])["data"]
            except SyscallError as exc:
                if exc.errno in ("ETIMEDOUT", "EPIPE"):
                    break
                raise
            if item is None:
                break
            classify(str(item))
    return {"labels": labels, "alerts": alerts}


if argv[:1] in (["--help"], ["-h"]):
    print(options.HELP)
else:
    result = run(*options.parse(argv))
