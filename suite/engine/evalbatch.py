"""A stack's evaluations, gathered into one batch per evaluation step for whoever records them.

The engine calls ``on_eval(j, step, metrics)`` once per row of a stack at each evaluation; a
tracker wants them at once (one event to the parent process, one call to the tracker per step,
not one per row). :class:`EvalBatches` gathers a unit's evaluations and hands them on as a list
of ``(j, step, metrics)`` when the step changes, and when asked (:meth:`flush`: before a row's
result is reported, so every row's evaluations precede its end).
"""

from __future__ import annotations

from collections.abc import Callable

EvalRow = tuple[int, int, dict]  # (row in the unit, step, metrics)


class EvalBatches:
    """Gather ``(j, step, metrics)`` evaluations; hand them to ``send`` one step at a time."""

    def __init__(self, send: Callable[[list[EvalRow]], None]) -> None:
        self.send = send
        self.rows: list[EvalRow] = []

    def add(self, j: int, step: int, metrics: dict) -> None:
        """One row's evaluation (an engine's ``on_eval``)."""
        if self.rows and self.rows[-1][1] != step:
            self.flush()
        self.rows.append((j, step, metrics))

    def flush(self) -> None:
        """Hand on what was gathered, if anything."""
        if self.rows:
            rows, self.rows = self.rows, []
            self.send(rows)
