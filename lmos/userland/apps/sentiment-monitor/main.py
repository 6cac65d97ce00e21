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
Returns {"labels": [{headline, label}], "alerts": [...]}.
"""

import options

LABELS = ("negative", "positive", "neutral")


def parse_label(text):
    words = text.lower().replace(".", " ").replace(",", " ").split()
    for w in words[:3]:
        if w in LABELS:
            return w
    return "neutral"


opts, headlines = options.parse(argv)
size, threshold = opts["window"], opts["threshold"]
alerts_chan = chan_open(name=opts["alerts"], capacity=256)["chan"]
window = []
labels = []
alerts = []
state = {"above": False}


def classify(headline):
    reply = ask([{"role": "system", "content": manifest["system"]}, {"role": "user", "content": headline}],
                max_tokens=8, temperature=0.0)
    label = parse_label(reply)
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
    for line in fs_read(path=opts["file"])["data"].splitlines():
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
result = {"labels": labels, "alerts": alerts}
