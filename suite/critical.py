"""The critical batch size of a steps-to-target curve: one definition for prediction and measurement.

Perfect scaling from the smallest batch size b₀ predicts S(b₀)·b₀/b steps at batch size b; the
efficiency at b is that prediction over the steps actually needed, S(b₀)·b₀ / (b·S(b)). The
critical batch size is where the efficiency falls to ``efficiency`` (½ by default: twice the steps
perfect scaling predicts), interpolated in log-log: the excess log2(b·S(b) / (b₀·S(b₀))) is taken
as linear in log2(b) between the two batch sizes around the crossing. The NQM's closed-form
curve (:mod:`suite.report.scaling`) and a measured curve go through the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def critical_batch_size(batch_sizes: Sequence[float], steps: Sequence[float], efficiency: float = 0.5) -> float | None:
    """The batch size at which ``steps`` (steps to the target at each of ``batch_sizes``, sorted
    ascending) first reach 1/``efficiency`` × perfect scaling from the smallest batch size.

    Returns ``math.inf`` if the curve stays above that efficiency up to the largest batch size
    (the critical batch size lies beyond it), ``None`` if undefined (no batch sizes, or the
    smallest never reached the target). A batch size whose steps are not finite (it never
    reached the target) counts as efficiency 0: the crossing is then put at the batch size
    before it."""
    if not 0 < efficiency < 1:
        raise ValueError(f"efficiency must be in (0, 1), got {efficiency}")
    if len(batch_sizes) != len(steps):
        raise ValueError("batch_sizes and steps differ in length")
    if not batch_sizes or not (math.isfinite(steps[0]) and steps[0] > 0):
        return None
    if any(b1 <= b0 for b0, b1 in zip(batch_sizes, batch_sizes[1:], strict=False)):
        raise ValueError("batch_sizes must be strictly increasing")
    threshold = -math.log2(efficiency)
    work0 = math.log2(batch_sizes[0] * steps[0])
    prev_b, prev_excess = math.log2(batch_sizes[0]), 0.0
    for b, s in zip(batch_sizes[1:], steps[1:], strict=True):
        excess = math.log2(b * s) - work0 if math.isfinite(s) and s > 0 else math.inf
        if excess >= threshold:
            frac = 0.0 if math.isinf(excess) else (threshold - prev_excess) / (excess - prev_excess)
            return 2 ** (prev_b + frac * (math.log2(b) - prev_b))
        prev_b, prev_excess = math.log2(b), excess
    return math.inf
