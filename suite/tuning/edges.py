"""A study's winner at the edge of its search space: the optimum may lie beyond it.

A winner is *at an edge* of a tuned hyperparameter's space when its value, in the space's own
coordinate (1−β for momentum, as ``--space`` writes it), lies within a factor
:data:`LOG_FACTOR` of an end of a log space, or within :data:`LINEAR_FRACTION` of the range
of an end of a uniform or int space (a value exactly at the threshold is at the edge). A
choice space, a value switched off (weight decay's ``off``) and an end that is the
hyperparameter's own bound (p = 1 of ``precond``, β = 0), or the top of an lr space at or
above the problem's stability cap (:mod:`suite.tuning.caps`), where the optimum cannot lie
beyond, have no edge. ``suite tune`` prints a warning and tags the study's parent run
(:data:`suite.vocab.TAG_BEST_AT_EDGE`); the report marks the cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from suite.errors import SuiteError
from suite.params import Param, Space
from suite.tuning import caps
from suite.vocab import BEST_AT_EDGE_NONE, EDGE_HIGH, EDGE_LOW

LOG_FACTOR = 1.25
LINEAR_FRACTION = 0.05
WIDEN_LOG = 10.0  # the advice widens a log space's flagged end tenfold ...
WIDEN_LINEAR = 1.0  # ... a linear one's by its range
_EXACT = 1e-9  # relative slack, so a value computed at the threshold counts as on it


@dataclass(frozen=True)
class Edge:
    """One tuned hyperparameter ``key`` whose winning ``value`` is at the ``side`` end of ``space``."""

    key: str
    side: str  # EDGE_LOW or EDGE_HIGH
    value: Any
    space: Space
    param: Param | None = field(default=None, compare=False, repr=False)  # bounds the advice, where known

    @property
    def flag(self) -> str:
        """``optimizer.lr@high``: the form of the MLflow tag and of the report's marks."""
        return f"{self.key}@{self.side}"

    def widened(self) -> Space:
        """The space with its flagged end moved out (:data:`WIDEN_LOG`, :data:`WIDEN_LINEAR`)."""
        low, high = float(self.space.low), float(self.space.high)
        if self.space.kind == "log":
            low, high = (low / WIDEN_LOG, high) if self.side == EDGE_LOW else (low, high * WIDEN_LOG)
        else:
            step = WIDEN_LINEAR * (high - low)
            low, high = (low - step, high) if self.side == EDGE_LOW else (low, high + step)
        p = self.param
        if p is not None and self.space.transform == "identity":  # no further than the parameter's own bounds
            low = low if p.low is None else max(low, float(p.low))
            high = high if p.high is None else min(high, float(p.high))
        if self.space.kind == "int":
            low, high = int(low), int(high)
        return Space(self.space.kind, low, high, transform=self.space.transform, off=self.space.off)

    def text(self) -> str:
        """``optimizer.lr=0.972 at the high end of log:0.0001:1``."""
        shown = f"{self.value:.4g}" if isinstance(self.value, float) else str(self.value)
        of = " (a space of 1 − the value)" if self.space.transform == "one_minus" else ""
        return f"{self.key}={shown} at the {self.side} end of {option(self.space)}{of}"


def option(space: Space) -> str:
    """A space as ``--space`` writes it: ``log:0.0001:1``, ``uniform:0:1``, ``int:1:10``, ``choice:a,b``."""
    if space.kind == "choice":
        return "choice:" + ",".join(map(str, space.choices))
    return f"{space.kind}:{space.low:g}:{space.high:g}"


def _coordinate(space: Space, value: Any) -> float:
    """The value where the space searches it (1 − value for ``one_minus``)."""
    return 1.0 - float(value) if space.transform == "one_minus" else float(value)


def side(space: Space, value: Any) -> str | None:
    """Which end of ``space`` the ``value`` is at (:data:`EDGE_LOW`, :data:`EDGE_HIGH`), or
    None: inside, a choice space, or the value switched off. Where both ends are near (a narrow
    space), the nearer one."""
    if space.kind == "choice" or value is None or isinstance(value, bool):
        return None
    if space.off is not None and value == space.off:
        return None
    x, low, high = _coordinate(space, value), float(space.low), float(space.high)
    if space.kind == "log":
        if x <= 0:
            return None
        to_low, to_high = math.log(x / low), math.log(high / x)
        near_low = to_low <= math.log(LOG_FACTOR) + _EXACT
        near_high = to_high <= math.log(LOG_FACTOR) + _EXACT
    else:
        span = high - low
        to_low, to_high = (x - low) / span, (high - x) / span
        near_low = to_low <= LINEAR_FRACTION + _EXACT
        near_high = to_high <= LINEAR_FRACTION + _EXACT
    if near_low and (not near_high or to_low < to_high):
        return EDGE_LOW
    return EDGE_HIGH if near_high else None


def closed(space: Space, param: Param | None, end: str, limit: float | None = None) -> bool:
    """Whether the ``end`` of ``space`` cannot be widened: a value just beyond it is invalid for
    ``param``, or (the top of an lr space) it reaches the stability ``limit``, above which no
    optimum lies."""
    if end == EDGE_HIGH and limit is not None and space.transform == "identity" and space.high >= limit:
        return True
    if param is None or space.kind == "choice":
        return False
    low, high = float(space.low), float(space.high)
    if space.kind == "int":
        beyond: float = int(low) - 1 if end == EDGE_LOW else int(high) + 1
    elif space.kind == "log":
        beyond = low / 1.01 if end == EDGE_LOW else high * 1.01
    else:
        beyond = low - 0.01 * (high - low) if end == EDGE_LOW else high + 0.01 * (high - low)
    try:
        param.coerce(space.to_value(beyond), owner="")
    except SuiteError:
        return True
    return False


def find(values: Mapping[str, Any], spaces: Mapping[str, Space], params: Mapping[str, Param] | None = None,
         limits: Mapping[str, float] | None = None) -> tuple[Edge, ...]:
    """The edges of a winner (``values``: ``family.param`` -> its value) in its ``spaces``;
    ``params`` (``family.param`` -> :class:`Param`, where known) and ``limits`` (``family.param``
    -> the largest stable value: :func:`stability_limits`) leave out the ends that cannot widen."""
    out = []
    for key, space in spaces.items():
        if key not in values:
            continue
        end, param = side(space, values[key]), (params or {}).get(key)
        if end is not None and not closed(space, param, end, (limits or {}).get(key)):
            out.append(Edge(key, end, values[key], space, param))
    return tuple(out)


def params_of(registry: Any, components: Mapping[str, str]) -> dict[str, Param]:
    """``family.param`` -> :class:`Param` of the tuned families' components (those installed)."""
    out: dict[str, Param] = {}
    for family, name in components.items():
        try:
            comp = registry.get(family, name)
        except SuiteError:  # a component no longer installed: its bounds are unknown
            continue
        out.update({f"{family}.{p.name}": p for p in comp.params})
    return out


def marks(edges: Sequence[Edge], name: Callable[[str], str] = str) -> str:
    """What a table cell adds for a winner at an edge: `` ⚠ lr at high edge`` (``name`` shortens the key)."""
    return "".join(f" ⚠ {name(e.key)} at {e.side} edge" for e in edges)


def tag_value(edges: Sequence[Edge]) -> str:
    """The MLflow tag ``suite.best_at_edge``: ``optimizer.lr@high`` (comma-separated where
    several), or ``false``."""
    return ",".join(e.flag for e in edges) or BEST_AT_EDGE_NONE


def warning(flagged: Sequence[tuple[str, Sequence[Edge]]]) -> str:
    """One line for ``suite tune``'s output: which winners (``(cell, edges)`` each) are at an
    edge, and the ``--space`` that widens it."""
    cells = "; ".join(f"{cell}: {', '.join(e.text() for e in edges)}" for cell, edges in flagged)
    advice: dict[str, str] = {}
    for _, edges in flagged:
        for e in edges:
            advice.setdefault(e.key, f"--space {e.key}={option(e.widened())}")
    n = len(flagged)
    return (f"Warning: {'a winner' if n == 1 else f'{n} winners'} at the edge of the search space, so the optimum may "
            f"lie beyond it ({cells}): widen the space, e.g. {' '.join(advice.values())}")


def stability_limits(registry: Any, components: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, float]:
    """``{"optimizer.lr": cap}``: the problem's declared lr stability cap (:mod:`suite.tuning.caps`) at
    a winner's ``values`` (``family.param`` -> value, pinned ones included); empty where none is known."""
    try:
        cap = caps.lr_cap(registry, components, {k: v for k, v in values.items() if k != caps.LR}, {})
    except SuiteError:  # a component no longer installed, or a failing declaration: no limit known
        return {}
    return {caps.LR: cap} if cap is not None else {}


def of_study(plan: Any, values: Mapping[str, Any], registry: Any) -> tuple[Edge, ...]:
    """The edges of a study's winner (``values``) in its plan's (:class:`suite.tuning.plan.StudyPlan`) space."""
    components = plan.variant.components(plan.problem)
    return find(values, plan.space_dict, params_of(registry, components),
                stability_limits(registry, components, {**dict(plan.fixed), **values}))
