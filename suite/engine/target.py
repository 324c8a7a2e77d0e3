"""Steps to a target: the first evaluated step at which a run's loss reaches a given value.

The loss read is the one steps-to-target tuning reads (``suite tune --objective
steps-to-target:X``): the expected risk where the problem knows it (``theory_risk`` on ``nqm``),
else the validation loss; for the averaged model (``avg_…``) where the run has one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

History = Sequence[tuple[int, Mapping[str, float]]]

# (metric logged, loss read where the problem knows its expected risk, loss read otherwise)
TARGET_METRICS = (
    ("steps_to_target", "theory_risk", "val_loss"),
    ("avg_steps_to_target", "theory_avg_risk", "avg_val_loss"),
)


def watched_key(metrics: Mapping[str, float], averaged: bool) -> str | None:
    """The loss steps-to-target reads among ``metrics`` (one evaluation), or None if absent."""
    _, risk, loss = TARGET_METRICS[1 if averaged else 0]
    return risk if risk in metrics else loss if loss in metrics else None


def first_step_at(history: History, target: float, averaged: bool = False) -> int | None:
    """The first evaluated step whose watched loss is ``<= target``; None if none is (or the
    run never logged that loss, or it diverged first)."""
    for step, metrics in history:
        key = watched_key(metrics, averaged)
        if key is None:
            return None
        value = float(metrics[key])
        if not math.isfinite(value):
            return None
        if value <= target:
            return step
    return None


def steps_to_target(history: History, target: float) -> dict[str, int]:
    """``steps_to_target`` (and ``avg_steps_to_target`` for a run with an averaged model): the
    metrics a run with this history logs for ``target``; a loss that never reached it logs none."""
    out = {}
    for averaged, (name, _, _) in enumerate(TARGET_METRICS):
        step = first_step_at(history, target, bool(averaged))
        if step is not None:
            out[name] = step
    return out
