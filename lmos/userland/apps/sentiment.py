"""``sentiment-monitor``: a stream of financial headlines in, alerts out.

Each headline is classified by the model on a fresh context (headlines are
independent, so nothing is gained by letting them share one).  A sliding
window of the last ``--window`` labels is kept, and when the share of
negative ones rises to ``--threshold`` or above an alert is raised: sent on
the IPC channel ``--alerts`` (so another process can act on it) and recorded
in the result.  Alerts are edge-triggered: one per crossing, not one per
headline while the share stays high.

Input: headlines as arguments, ``--file PATH`` (one per line) or ``--chan
NAME`` (JSON strings until ``null`` or ``--idle`` seconds of silence).
"""

from __future__ import annotations

import argparse
from collections import deque
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.userland.agent import ask

LABELS = ("negative", "positive", "neutral")


def parse_label(text: str) -> str:
    words = text.lower().replace(".", " ").replace(",", " ").split()
    for w in words[:3]:
        if w in LABELS:
            return w
    return "neutral"


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="sentiment-monitor", add_help=False, exit_on_error=False)
    ap.add_argument("--file")
    ap.add_argument("--chan")
    ap.add_argument("--alerts", default="sentiment.alerts")
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("headlines", nargs="*")
    try:
        ns = ap.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise SyscallError(Errno.EINVAL, f"sentiment-monitor: {exc}") from None
    if ns.window < 1 or not 0 < ns.threshold <= 1:
        raise SyscallError(Errno.EINVAL, "sentiment-monitor: need --window >= 1 and 0 < --threshold <= 1")
    return ns


async def _headlines(sys: Any, ns: argparse.Namespace) -> Any:
    for h in ns.headlines:
        yield h
    if ns.file:
        for line in (await sys.call("fs_read", path=ns.file)).data.splitlines():
            if line.strip():
                yield line.strip()
    if ns.chan:
        chan = await sys.chan_open(ns.chan)
        while True:
            try:
                item = await sys.recv(chan, timeout=ns.idle)
            except SyscallError as exc:
                if exc.errno in (Errno.ETIMEDOUT, Errno.EPIPE):
                    return
                raise
            if item is None:
                return
            yield str(item)


async def main(sys: Any, argv: list[str], manifest: Any) -> Any:
    ns = _args(argv)
    alerts_chan = await sys.chan_open(ns.alerts, capacity=256)
    window: deque[str] = deque(maxlen=ns.window)
    labels: list[dict[str, str]] = []
    alerts: list[dict[str, Any]] = []
    above = False
    async for headline in _headlines(sys, ns):
        reply = await ask(
            sys,
            [{"role": "system", "content": manifest.system}, {"role": "user", "content": headline}],
            max_tokens=8,
            temperature=0.0,
        )
        label = parse_label(reply)
        labels.append({"headline": headline, "label": label})
        window.append(label)
        share = window.count("negative") / len(window)
        crossing = len(window) == ns.window and share >= ns.threshold
        if crossing and not above:
            alert = {
                "type": "alert",
                "index": len(labels) - 1,
                "headline": headline,
                "negative_share": round(share, 4),
                "window": list(window),
            }
            alerts.append(alert)
            try:
                await sys.send(alerts_chan, alert, timeout=1.0)
            except SyscallError as exc:
                if exc.errno != Errno.ETIMEDOUT:  # nobody draining the channel: the result still has it
                    raise
        above = crossing
    return {"labels": labels, "alerts": alerts}
