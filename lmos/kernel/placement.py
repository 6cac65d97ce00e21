"""Where a step runs: on the event-loop thread, or in a worker thread.

Why this is a decision at all: a CPU step is compute on the same cores the
event loop uses, and PyTorch's CPU kernels run on OpenMP.  libgomp keeps one
thread team per *calling* thread, and once two threads in a process own teams
(the thread that built or warmed the model, and a worker thread that steps it)
it counts more managed threads than cores, stops spinning and wakes its workers
through the kernel for every parallel region.  On a 2-core machine that made
each step ~1.6x slower in a worker thread than on the thread that already
owns a team (a 16x256 by 256x688 matmul: 53 us on its first thread, 140 us on
a second).  Stepping on the loop thread avoids the second team.

The price is that a step on the loop thread blocks the loop for its
duration, so only short steps run there: the placement predicts each step's
duration from the ones before it (a per-step cost and a per-token cost) and
sends the step to a worker thread when the prediction exceeds
``inline_below`` seconds.  Drivers whose steps run elsewhere anyway (CUDA, a
remote server) or sleep say so by not setting ``inline_step``.
"""

from __future__ import annotations

_ALPHA = 0.25  # EMA weight of the newest measurement


class StepPlacement:
    """Learns step durations; says whether the next one may run on the loop thread."""

    def __init__(self, inline_below: float) -> None:
        self.inline_below = inline_below  # seconds; 0 = always a worker thread
        self.per_step = 0.0  # EMA seconds of a step's fixed part (decode-only steps)
        self.per_token = 0.0  # EMA seconds per computed token beyond one per sequence
        self.inline_steps = 0
        self.thread_steps = 0

    def predict(self, seqs: int, tokens: int) -> float:
        return self.per_step + max(0, tokens - seqs) * self.per_token

    def inline(self, seqs: int, tokens: int) -> bool:
        """True when a step of ``seqs`` sequences computing ``tokens`` tokens should run inline."""
        return self.inline_below > 0 and self.predict(seqs, tokens) < self.inline_below

    def record(self, seqs: int, tokens: int, seconds: float, inline: bool) -> None:
        if inline:
            self.inline_steps += 1
        else:
            self.thread_steps += 1
        extra = tokens - seqs  # prefill tokens beyond one per sequence
        if extra <= seqs:
            self.per_step = seconds if self.per_step == 0 else (1 - _ALPHA) * self.per_step + _ALPHA * seconds
        else:
            rate = max(0.0, seconds - self.per_step) / extra
            self.per_token = rate if self.per_token == 0 else (1 - _ALPHA) * self.per_token + _ALPHA * rate
