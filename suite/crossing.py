"""Where a curve first reaches a target, between its evaluations: the one rule both the tuner's
steps-to-target objective (:mod:`suite.tuning.objective`) and the report (:mod:`suite.report.scaling`)
read steps with, so a trial's value and the report's steps agree."""

from __future__ import annotations

import math
from collections.abc import Sequence


def interpolated_crossing(history: Sequence[tuple[int, float]], target: float) -> float:
    """The first step at which ``history`` ((step, value) pairs, steps ascending) reaches ``target``
    (value <= target), interpolated log-linearly between the evaluation before and the first one at
    the target (that evaluation's step where either value is not positive); ``inf`` if it never
    does or a value before it is not finite."""
    prev: tuple[int, float] | None = None
    for step, value in history:
        if not math.isfinite(value):
            return math.inf
        if value <= target:
            if prev is None or prev[1] <= 0 or value <= 0:
                return float(step)
            (s0, v0), (s1, v1) = prev, (step, value)
            frac = (math.log(v0) - math.log(target)) / (math.log(v0) - math.log(v1))
            return s0 + frac * (s1 - s0)
        prev = (step, value)
    return math.inf
