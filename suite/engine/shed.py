"""Training steps for the rows still running only: a stack sheds the work of its ended rows.

A stack trains until its last row ends. In tuning most rows end early (at the target, pruned,
diverged) while a few run to the step cap, and a compute-bound stack (a network at a large
batch size) keeps paying for every ended row's forward and backward pass. Where the stacked
problem says its gradients of a subset of the rows equal those rows' gradients in the whole
stack (:attr:`suite.stacked.StackedProblem.row_subsets`: each row's loss and gradients depend on
its own parameters and examples alone), a step with at most :data:`SHED_AT` of its rows still
running computes the loss and gradients of those rows only, on their parameters and examples
(``index_select``), and gives the ended rows zero gradients. Nothing else changes: the sampler
still draws every row's examples (each row's random stream stays what it is alone), the
optimizer, averager and schedulers update every row as before (an ended row's numbers are no
longer read), and evaluations still cover the whole stack.

Measured reason: ``docs/performance.md`` ("Shedding ended rows"). Off switch:
``SUITE_SHED_ROWS=0``. Tested: ``tests/test_shed_rows.py`` (the same histories both ways).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

SHED_AT = 0.75  # shed once at most this share of the rows still trains: saves at least a quarter of a step's work


def enabled() -> bool:
    """Whether shedding is on (``SUITE_SHED_ROWS=0`` turns it off)."""
    return os.environ.get("SUITE_SHED_ROWS", "1") != "0"


class Shedder:
    """Decides, step by step, whether a stack's step runs on its live rows only, and runs it."""

    def __init__(self, problem: object, size: int, device: torch.device) -> None:
        self.on = enabled() and bool(getattr(problem, "row_subsets", False))
        self.size, self.device = size, device
        self.rows: torch.Tensor | None = None  # the live rows' positions, while shedding

    def update(self, live: Sequence[bool]) -> None:
        """The rows that are still running (called whenever a row ends)."""
        n = sum(live)
        if not self.on or n == 0 or n > SHED_AT * self.size:
            self.rows = None
            return
        self.rows = torch.tensor([pos for pos, a in enumerate(live) if a], dtype=torch.long, device=self.device)

    def loss_and_grads(self, problem: object, params: Sequence[torch.Tensor],
                       indices: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``problem.loss_and_grads`` of the whole stack, computed on the live rows only while
        shedding (the ended rows' loss and gradients are zero)."""
        rows = self.rows
        if rows is None:
            return problem.loss_and_grads(params, indices)  # type: ignore[attr-defined]
        loss, grads = problem.loss_and_grads(  # type: ignore[attr-defined]
            [p.index_select(0, rows) for p in params], indices.index_select(0, rows))
        full = loss.new_zeros(self.size).index_copy_(0, rows, loss)
        return full, [torch.zeros_like(p).index_copy_(0, rows, g) for p, g in zip(params, grads, strict=True)]
