"""Straight stretches of a metric stored as their two ends: ``lr`` and ``epoch``.

The engine logs ``lr`` and ``epoch`` at every evaluation (:mod:`suite.engine.loop`,
:mod:`suite.engine.stack`). ``epoch`` is the step over the steps per epoch, a straight line in the
step; ``lr`` is constant in most runs (every NQM study's trial), constant between the drops of a
step schedule, and curved only under a smooth schedule. Stored point by point they were a quarter
of ``make bench``'s 3.2 million metric rows, the largest share of what its tracking wrote.

:class:`Straight` keeps a point of such a metric only where the line through its kept
neighbours does not give it: the first and the last point of a run, and the ends of every
straight stretch (a value is kept where the slope changes: both sides of a step schedule's drop,
every point of a cosine). Joining the kept points by straight lines, as MLflow's charts do and
:func:`suite.api.notebook.runs` does for these keys, gives back every dropped value (exactly
where the values are equal, to within :data:`REL_TOL` otherwise); the latest value (MLflow's
``latest_metrics``, the runs table's column) is the run's last, as before.

A point's fate is known only once the next one has come: the last one of each (run, key) is
held here until the next arrives or the run ends (:meth:`Straight.release`)."""

from __future__ import annotations

THINNED = frozenset({"lr", "epoch"})  # what the engine logs at every evaluation and a line reproduces
REL_TOL = 1e-12  # a value this close (relative) to the line through its neighbours is on it

Point = tuple  # (key, value, timestamp, step): a metric row, as records.MetricRow


class Straight:
    """The thinned metrics of the runs in flight (:data:`THINNED`): per (run, key), the last
    point kept and the point held back."""

    def __init__(self) -> None:
        self._state: dict[str, dict[str, list]] = {}  # run id -> key -> [kept point, held point or None]

    def add(self, run_id: str, point: Point, out: list[Point]) -> None:
        """A new point of a thinned key of ``run_id``: append to ``out`` whatever it shows must
        be kept (the first point, or the held one where the line bends there)."""
        keys = self._state.get(run_id)
        if keys is None:
            keys = self._state[run_id] = {}
        state = keys.get(point[0])
        if state is None:
            keys[point[0]] = [point, None]
            out.append(point)
            return
        kept, held = state
        # a constant stretch (most lrs) goes on: on_line's first case, without the call
        if held is not None and not (kept[1] == held[1] == point[1] or on_line(kept, held, point)):
            out.append(held)
            state[0] = held
        state[1] = point

    def release(self, run_id: str) -> list[Point]:
        """The points held back for ``run_id`` (its last ones), which has ended; forget it."""
        keys = self._state.pop(run_id, None)
        return [held for _, held in keys.values() if held is not None] if keys else []


def on_line(a: Point, b: Point, c: Point) -> bool:
    """Whether ``b`` lies on the straight line (in the step) through ``a`` and ``c`` (points
    ``(key, value, timestamp, step)``, ``a`` before ``b`` before ``c``)."""
    _, va, _, sa = a
    _, vb, _, sb = b
    _, vc, _, sc = c
    if va == vb == vc:
        return True
    if sc == sa:
        return False
    predicted = va + (vc - va) * (sb - sa) / (sc - sa)
    return abs(vb - predicted) <= REL_TOL * max(abs(va), abs(vb), abs(vc))
