"""Work units: how a list of specs is cut into pieces that one worker trains at once.

A unit is a list of specs that one device trains together: a *stack* of compatible specs
trained as one batched model (the stacked engine), or a single spec trained by the per-run loop
(:mod:`suite.engine.loop`). Dispatch hands whole units to workers; the engine decides how to
train them. ``engine`` is ``auto`` (stack what can be stacked), ``stacked`` or ``loop``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from suite.engine.loop import RunResult, train
from suite.specs.spec import RunSpec

ENGINES = ("auto", "stacked", "loop")
UnitEval = Callable[[int, int, dict[str, float]], None]  # (index in the unit, step, metrics)


def plan_units(specs: Sequence[RunSpec], registry: Any = None, *, engine: str = "auto",
               stack_size: int | None = None, device: str = "cpu") -> list[list[int]]:
    """Cut ``specs`` into work units; returns lists of indices into ``specs``, in order."""
    return [[i] for i in range(len(specs))]


def run_unit(specs: Sequence[RunSpec], device: Any = "cpu", registry: Any = None, on_eval: UnitEval | None = None,
             *, engine: str = "auto") -> Iterator[tuple[int, RunResult]]:
    """Train one unit on ``device``; yield ``(index in the unit, result)`` as each spec finishes.
    Exceptions from plugin code become failed results (see :func:`suite.engine.loop.train`)."""
    for i, spec in enumerate(specs):
        cb = (lambda step, m, _i=i: on_eval(_i, step, m)) if on_eval else None
        yield i, train(spec, device, registry, cb)
