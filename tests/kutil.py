"""Helpers for kernel tests: a kernel on the scripted driver, a step recorder."""

from __future__ import annotations

from typing import Any

import lmos
from lmos.drivers.base import StepPlan
from lmos.drivers.scripted import ScriptedDriver


class Recorder(ScriptedDriver):
    """A scripted driver that logs which sequences each step computed."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.log: list[list[tuple[int, int]]] = []
        self.moves: list[tuple[str, int]] = []

    def step(self, plan: StepPlan) -> dict[int, int | None]:
        self.moves += [("drop", s) for s in plan.drop] + [("swap_out", s) for s in plan.swap_out]
        self.moves += [("swap_in", s) for s in plan.swap_in]
        if plan.items:
            self.log.append([(i.seq_id, i.num_tokens) for i in plan.items])
        return super().step(plan)


def kernel(driver: Any = None, **settings: Any) -> lmos.Kernel:
    settings.setdefault("state_dir", ":memory:")
    return lmos.Kernel(model=driver if driver is not None else ScriptedDriver(), **settings)
