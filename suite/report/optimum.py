"""The optimum's own loss, where a problem knows its optimum: what "excess loss" is measured from.

The problem is rebuilt from a run's params (same seed, so the same data) and its validation loss
is evaluated at the known optimum. Cached per (problem, its params, seed).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from suite.report.reader import RunRecord


def optimum_loss(record: RunRecord) -> float | None:
    """Validation loss at the problem's known optimum, or ``None`` if it has none (or cannot be built)."""
    params = tuple(sorted((k.partition(".")[2], v) for k, v in record.params.items() if k.startswith("problem.")))
    return _optimum_loss(str(record.param("problem")), params, record.seed, record.batch_size)


@lru_cache(maxsize=256)
def _optimum_loss(problem: str, params: tuple[tuple[str, Any], ...], seed: int, batch_size: int) -> float | None:
    import torch

    from suite.context import BuildContext
    from suite.registry import get_registry

    try:
        comp = get_registry().get("problem", problem)
        ctx = BuildContext(seed=seed, device=torch.device("cpu"), batch_size=max(1, batch_size))
        built = comp.build(ctx, comp.resolve(dict(params)))
    except Exception:  # noqa: BLE001 - an unknown or broken problem: no optimum to report
        return None
    if built.optimum is None:
        return None
    with torch.no_grad():
        for p, o in zip(built.model.parameters(), built.optimum, strict=True):
            p.copy_(o.reshape(p.shape))
    return float(built.val_loss(built.model))
