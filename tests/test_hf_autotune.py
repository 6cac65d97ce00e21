"""Start-time sizing (lmos.drivers.autotune) and the CPU step thread (lmos.drivers.cpu_thread)."""

from __future__ import annotations

import copy
import threading
import time

import pytest
import torch

from lmos.drivers import autotune
from lmos.drivers.base import StepItem, StepPlan
from lmos.drivers.cpu_thread import StepThread, release_team
from lmos.drivers.hf import HFDriver
from lmos.errors import Errno, SyscallError
from tests.models import GREEDY, prompt, tiny_model


def test_configured_limits_are_kept_without_a_probe() -> None:
    threads = torch.get_num_threads()
    t = autotune.tune(tiny_model("llama"), torch.device("cpu"), max_seqs=7, max_tokens_per_step=300,
                      kv_tokens=10_000, threads=threads)
    assert (t.max_seqs, t.max_tokens_per_step, t.threads) == (7, 300, threads)
    assert t.source == {"max_seqs": "config", "max_tokens_per_step": "config", "threads": "config"}
    assert t.probe_seconds == 0 and not t.decode_tok_s


def test_auto_threads_are_measured_even_with_fixed_limits() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t = autotune.tune(tiny_model("llama"), torch.device("cpu"), max_seqs=7, max_tokens_per_step=300,
                          kv_tokens=10_000)
        assert t.source["threads"].startswith("auto") and 64 in t.decode_tok_s
        assert t.threads == torch.get_num_threads() in (1, 2)  # the choice is applied
    finally:
        torch.set_num_threads(before)


def test_auto_limits_come_from_the_probe_and_the_kv_budget() -> None:
    model = tiny_model("llama")
    t = autotune.tune(model, torch.device("cpu"), max_seqs=0, max_tokens_per_step=0, kv_tokens=1 << 20)
    assert t.source["max_seqs"] == t.source["max_tokens_per_step"] == "auto"
    assert t.max_seqs in (*autotune.SIZES, autotune.FALLBACK_SEQS)
    assert t.max_tokens_per_step % 256 == 0 and max(256, t.max_seqs) <= t.max_tokens_per_step <= 8192
    assert t.probe_seconds < autotune.PROBE_BUDGET + 2.0
    # a KV budget of 3 sequences of MIN_CONTEXT tokens bounds max_seqs whatever the probe says
    small = autotune.tune(model, torch.device("cpu"), max_seqs=0, max_tokens_per_step=512,
                          kv_tokens=3 * autotune.MIN_CONTEXT)
    assert small.max_seqs == 3 and small.max_tokens_per_step == 512


def test_the_driver_shows_what_it_chose() -> None:
    d = HFDriver(copy.deepcopy(tiny_model("llama")), kv_memory="4MiB", max_tokens_per_step=128)
    try:
        assert d.limits.max_seqs == d.tuning.max_seqs >= 1
        assert d.limits.max_tokens == 128 and d.tuning.num_blocks == d.limits.num_blocks
        text = d.tuning.summary()
        assert "(auto)" in text and "128 tokens/step (config)" in text
    finally:
        d.close()
    with pytest.raises(SyscallError) as err:
        HFDriver(copy.deepcopy(tiny_model("llama")), kv_memory="4MiB", max_seqs=-1)
    assert err.value.errno == Errno.EINVAL


def _spied_driver(threads: int) -> tuple[HFDriver, list[str]]:
    """A tiny driver whose steps record the name of the thread they run on."""
    d = HFDriver(copy.deepcopy(tiny_model("llama")), kv_memory="4MiB", max_seqs=4, max_tokens_per_step=64,
                 threads=threads)
    seen: list[str] = []
    inner = d._step

    def spy(plan: StepPlan) -> dict[int, int | None]:
        seen.append(threading.current_thread().name)
        return inner(plan)

    d._step = spy  # type: ignore[method-assign]
    return d, seen


def test_one_thread_steps_run_on_the_caller_without_a_hand_off() -> None:
    """One torch thread forms no OpenMP team: the step runs where it is called (per-token latency)."""
    before = torch.get_num_threads()
    d, seen = _spied_driver(threads=1)
    try:
        d.add(1, prompt(1, 12), GREEDY)
        d.step(StepPlan(items=[StepItem(1, 12)]))
        assert seen == [threading.current_thread().name]
    finally:
        d.close()
        torch.set_num_threads(before)
    with pytest.raises(SyscallError):
        d.step(StepPlan(items=[StepItem(1, 1)]))


def test_every_cpu_step_runs_on_the_one_step_thread_which_gives_its_team_back() -> None:
    before = torch.get_num_threads()
    try:
        _steps_on_the_step_thread()
    finally:
        torch.set_num_threads(before)


def _steps_on_the_step_thread() -> None:
    # two threads: with one, steps run on the caller (no team to confine)
    d, seen = _spied_driver(threads=2)
    try:
        d.add(1, prompt(1, 12), GREEDY)
        d.step(StepPlan(items=[StepItem(1, 12)]))  # from the main thread
        worker = threading.Thread(target=lambda: d.step(StepPlan(items=[StepItem(1, 1)])))
        worker.start()
        worker.join()
        assert seen == ["lmos-cpu-step", "lmos-cpu-step"]
        assert d._stepper is not None
        end = time.monotonic() + 10
        while d._stepper.releases == 0 and time.monotonic() < end:  # idle: the team goes back
            time.sleep(0.02)
        assert d._stepper.releases >= 1
    finally:
        d.close()
    with pytest.raises(SyscallError) as err:
        d.step(StepPlan(items=[StepItem(1, 1)]))
    assert err.value.errno == Errno.EIO


def test_step_thread_hands_back_results_and_errors() -> None:
    st = StepThread("t", idle_release=0.01)
    assert st.run(lambda: 41 + 1) == 42

    def boom() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        st.run(boom)
    assert st.run(lambda: torch.ones(4).sum().item()) == 4.0
    st.close()
    with pytest.raises(RuntimeError):
        st.run(lambda: 1)
    assert release_team() in (True, False)  # never raises, with or without libgomp
