"""The one thread that runs a CPU driver's steps, and the OpenMP team it gives back when idle.

Why: PyTorch's CPU kernels run on OpenMP, and GNU libgomp keeps one thread team
per *calling* thread.  Once two threads in a process own a team, libgomp counts
more managed threads than cores and stops spinning: every parallel region then
wakes its workers through the OS, for every thread in the process.  A kernel
that had stepped a model on a worker thread kept that worker (and its team)
alive while idle, so any other torch work in the process ran ~1.6-2.5x slower
(issue 16: a bare batched loop fell from 3,650 to 2,290 tok/s next to an idle
kernel; a 16x256 by 256x688 matmul took 128 us instead of 51).

So every CPU step runs on one long-lived thread owned by the driver, whatever
thread calls ``step`` (the event loop inline, or a worker thread the loop
lends), and that thread hands its team back with ``omp_pause_resource_all``
(OpenMP 5.0, libgomp frees the calling thread's pool) once no step came for
``idle_release`` seconds.  The thread that built the model gives its team back
too (:func:`release_team`), so while the kernel generates only the step
thread's team exists.  With Intel OpenMP or no OpenMP at all the release is a
no-op: those runtimes share one pool per process and do not have the problem.

At one torch thread no team forms at all, so the driver runs its steps on the calling thread
(:meth:`StepThread.run_here`) and saves the two thread wake-ups per step, which are per-token
latency for a single request (issue 16).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_OMP_PAUSE_SOFT = 1
_pause: Callable[[int], int] | None = None
_pause_looked_up = False


def _find_pause() -> Callable[[int], int] | None:
    """``omp_pause_resource_all`` of the libgomp this process has loaded (torch's own), or None."""
    global _pause, _pause_looked_up
    if _pause_looked_up:
        return _pause
    _pause_looked_up = True
    path = None
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                if "libgomp" in line:
                    path = line.split()[-1]
                    break
    except OSError:
        return None
    if path is None:
        return None
    try:
        fn = ctypes.CDLL(path).omp_pause_resource_all
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    _pause = fn
    return fn


def release_team() -> bool:
    """Give back the calling thread's OpenMP team (its next parallel region builds a new one).

    Returns whether a libgomp team could be released.  Must not be called inside
    a parallel region (it is not: callers are plain Python threads between ops).
    """
    fn = _find_pause()
    return fn is not None and fn(_OMP_PAUSE_SOFT) == 0


class StepThread:
    """Runs callables on one daemon thread; releases its OpenMP team after ``idle_release`` s idle."""

    def __init__(self, name: str, idle_release: float = 0.05) -> None:
        self.name = name
        self.idle_release = idle_release
        self.releases = 0  # how often the team was given back (for tests and /metrics)
        self._cond = threading.Condition()
        self._job: Callable[[], object] | None = None
        self._done = threading.Event()
        self._result: object = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = threading.Lock()  # one caller at a time (the scheduler serialises anyway)

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the step thread and return its result (or raise its exception)."""
        with self._busy:
            with self._cond:
                if self._closed:
                    raise RuntimeError("step thread is closed")
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                    self._thread.start()
                self._done.clear()
                self._job = fn
                self._cond.notify()
            self._done.wait()
            err, res = self._error, self._result
            self._error = self._result = None
            if err is not None:
                raise err
            return res  # type: ignore[return-value]

    def run_here(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the calling thread, still one caller at a time.

        For steps with one torch thread: no OpenMP team forms at all then (ATen runs
        single-threaded loops inline, libgomp starts no workers), so there is no team to keep
        on one thread, and the two hand-offs of :meth:`run` (a wake-up each way, tens of
        microseconds, far more on a loaded machine) are pure per-token latency.
        """
        with self._busy:
            if self._closed:
                raise RuntimeError("step thread is closed")
            return fn()

    def _loop(self) -> None:
        team = False  # does this thread hold an OpenMP team now
        while True:
            with self._cond:
                if self._job is None and not self._closed:
                    self._cond.wait(self.idle_release if team else None)
                if self._job is None and not self._closed and team:  # idle: give the team back
                    team = False
                    if release_team():
                        self.releases += 1
                    continue
                if self._closed and self._job is None:
                    break
                job, self._job = self._job, None
            if job is None:
                continue
            try:
                self._result = job()
            except BaseException as exc:  # handed to the caller
                self._error = exc
            job = None  # an idle thread must not keep the last step's driver alive
            team = True
            self._done.set()
        if team:
            release_team()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
