"""The stacked engine's exactness promise, and the runs it does not cover.

A stacked row gives the numbers of its spec trained alone within :data:`STACKED_REL_TOL`
(relative) as long as the run is *stable*: its validation and training loss never pass
:data:`UNSTABLE_FACTOR` times its initial validation loss. Past that, the run amplifies the last
bits of rounding (a stack sums in another order than the loop) until two runs of one spec part
ways: chaos, not a bug, and nothing to compare. Such a row is recorded as unstable (MLflow tag
``suite.unstable``, a line in the grid summary); a row past ``diverge_factor`` is diverged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from suite.vocab import DIVERGED, TAG_UNSTABLE

STACKED_REL_TOL = 1e-4  # a stable stacked row equals its run alone within this (relative; absolute 1e-6)
UNSTABLE_FACTOR = 4.0  # a loss past this multiple of the initial val loss: unstable


def loss_growth(history: Sequence[tuple[int, dict[str, float]]],
                factor: float = UNSTABLE_FACTOR) -> str | None:
    """Why a run with this evaluation ``history`` is unstable (its validation or training loss
    passed ``factor`` times its initial validation loss, or was not finite), or ``None``."""
    if not history:
        return None
    start = history[0][1].get("val_loss", math.nan)
    for step, metrics in history:
        for key in ("val_loss", "train_loss"):
            value = metrics.get(key)
            if value is None:
                continue
            if not math.isfinite(value) or (start > 0 and value > factor * start):
                return (f"{key} {value:.3g} passed {factor:g}x the initial val_loss ({start:.3g}) at step {step}: "
                        f"stacked and alone agree within {STACKED_REL_TOL:g} only for stable runs")
    return None


def unstable(result: Any) -> str | None:
    """Why a stacked run's numbers fall outside the exactness promise, or ``None`` (a run of the
    per-run loop, or a diverged one, whose status says it already)."""
    if getattr(result, "engine", "loop") != "stacked" or result.status == DIVERGED:
        return None
    return loss_growth(result.history)


def unstable_tags(result: Any) -> dict[str, str]:
    """The MLflow tag that marks ``result`` unstable (empty for a stable run)."""
    reason = unstable(result)
    return {TAG_UNSTABLE: reason[:4000]} if reason else {}


def mark_unstable(tracker: Any, run_id: str, result: Any) -> None:
    """Tag ``run_id`` unstable (before :meth:`Tracker.finish` writes its end) where ``result`` is."""
    tags = unstable_tags(result)
    if tags:
        tracker.set_tags(run_id, tags)


def unstable_line(results: Sequence[Any]) -> str | None:
    """The grid summary's line on its unstable stacked runs, or ``None`` where there are none."""
    names = [f"{r.spec.name} [{r.spec.hash}]" for r in results if unstable(r)]
    if not names:
        return None
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"{len(names)} stacked run(s) unstable (loss past {UNSTABLE_FACTOR:g}x its start; tag "
            f"{TAG_UNSTABLE}): {shown}; their numbers are chaos, not comparable to a run alone "
            f"within {STACKED_REL_TOL:g} (see docs/plugins.md section 7)")
