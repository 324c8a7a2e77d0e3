"""What a summary compares configurations by: one final metric and which way is better.

``suite run --metric`` and ``suite report --metric`` take ``METRIC[:min|max]`` (default
``val_loss:min``): any metric the runs log, e.g. ``val_acc:max``. A run scores the better of its
model's value and its averaged model's (``avg_<METRIC>``), as the loss does. Internally scores
are *signed* so that lower is always better (a ``max`` metric is negated), which lets the
paired comparisons (:mod:`suite.report.stats`) read the same either way; :meth:`Score.shown`
turns a signed value back into the metric's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from suite.errors import SpecError

DIRECTIONS = ("min", "max")


@dataclass(frozen=True)
class Score:
    """A final metric and its direction (``min``: lower is better)."""

    metric: str = "val_loss"
    direction: str = "min"

    @classmethod
    def parse(cls, text: str | None) -> Score:
        """``METRIC[:min|max]``; None: the validation loss, lower is better."""
        if text is None:
            return cls()
        metric, _, direction = text.strip().partition(":")
        direction = direction or "min"
        if not metric or direction not in DIRECTIONS or ":" in direction:
            raise SpecError(f"--metric {text!r}: expected METRIC[:min|max], a metric the runs log and which way "
                            "is better (e.g. val_loss, val_acc:max)")
        return cls(metric, direction)

    @property
    def averaged(self) -> str:
        """The averaged model's version of the metric."""
        return f"avg_{self.metric}"

    @property
    def label(self) -> str:
        """How tables and lines name it: ``val_loss`` or ``val_acc (higher is better)``."""
        return self.metric if self.direction == "min" else f"{self.metric} (higher is better)"

    def signed(self, value: float) -> float:
        """``value`` with lower better (a ``max`` metric negated)."""
        return value if self.direction == "min" else -value

    shown = signed  # negation is its own inverse: a signed score back to the metric's value

    def of_run(self, final: Mapping[str, float], status: str) -> float:
        """One run's signed score: the better of its model's and its averaged model's final value
        (+inf if it diverged, nan if it logged neither)."""
        if status == "diverged":
            return math.inf
        vals = [self.signed(float(final[k])) for k in (self.metric, self.averaged)
                if final.get(k) is not None and math.isfinite(float(final[k]))]
        return min(vals) if vals else math.nan
