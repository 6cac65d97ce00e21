"""One row of the syscall journal (:mod:`lmos.kernel.sysjournal`), and how it is written."""

from __future__ import annotations

from dataclasses import dataclass

# Bytes of a journal row, as SQL (what retention charges to the owner's quota).
ROW_BYTES = ("length(request) + COALESCE(length(result), 0) + length(CAST(error AS BLOB)) + "
             "COALESCE(length(CAST(gen AS BLOB)), 0) + COALESCE(length(prompt), 0) + 48")
# A completed step replaces its in-flight row; an in-flight row never replaces a completed one.
INSERT = ("INSERT INTO sysjournal(pid, step, ts, name, request, result, errno, error, cap, decision, "
          "duration_us, gen, prompt, tainted) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(pid, step) DO "
          "UPDATE SET ts=excluded.ts, result=excluded.result, errno=excluded.errno, error=excluded.error, "
          "decision=excluded.decision, duration_us=excluded.duration_us, gen=excluded.gen, "
          "prompt=excluded.prompt, tainted=excluded.tainted WHERE excluded.errno != -1")
INFLIGHT = -1  # the errno of a step that was started (an effect) and has not completed


@dataclass(slots=True)
class Entry:
    """One journal row: a completed syscall of ``pid`` at ``step``."""

    pid: int
    step: int
    ts: float
    name: str
    request: bytes  # the request as JSON
    result: bytes | None  # the response as JSON; None for an error
    errno: int
    error: str
    cap: str | None
    decision: str  # allow | deny | error
    duration_us: int
    gen: str | None = None  # llm_generate: JSON of where the prompt and output lie in the context
    prompt: bytes | None = None  # llm_generate: the prompt's token ids (uint32 little-endian)
    tainted: bool = False  # the process was tainted after this step (recovery gives it back)

    def row(self) -> tuple[object, ...]:
        return (self.pid, self.step, self.ts, self.name, self.request, self.result, self.errno,
                self.error, self.cap, self.decision, self.duration_us, self.gen, self.prompt, self.tainted)
