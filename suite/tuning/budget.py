"""How long a trial trains: ``--budget epochs:N|steps:N|steps:auto`` (:class:`Budget`), and
the ``steps:auto`` rule (:func:`auto_budget`), which asks the problem what it knows
(:meth:`suite.problem.Problem.sgd_steps_to_target`) and knows no problem's class.

Imports: the registry, the build context and the tuning errors; torch only inside
:func:`auto_budget` (a problem is built to ask it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.errors import TuneError
from suite.registry import Registry

if TYPE_CHECKING:
    from suite.tuning.objective import Objective


@dataclass(frozen=True)
class Budget:
    """How long each trial trains: ``epochs:N``, ``steps:N`` or ``steps:auto`` (``n is None``:
    resolved per study by :func:`auto_budget`, so one command covers every batch size)."""

    unit: str
    n: int | None

    @classmethod
    def parse(cls, text: str) -> Budget:
        unit, _, n = text.strip().partition(":")
        if unit == "steps" and n.strip() == "auto":
            return cls("steps", None)
        digits = n.strip()
        if unit in ("epochs", "steps") and digits.isascii() and digits.isdigit() and len(digits) < 20 and int(n) >= 1:
            return cls(unit, int(n))
        raise TuneError(
            f"malformed --budget {text!r}: write epochs:N, steps:N with N >= 1 or steps:auto, e.g. epochs:5")

    @property
    def auto(self) -> bool:
        return self.n is None

    def kwargs(self) -> dict[str, int]:
        if self.n is None:
            raise TuneError("steps:auto must be resolved for a study before it runs")  # a bug, not user input
        return {self.unit: self.n}

    def __str__(self) -> str:
        return f"{self.unit}:{'auto' if self.n is None else self.n}"


AUTO_FACTOR = 4  # steps:auto on a problem with a closed form: this many times plain SGD's optimum
AUTO_MIN_STEPS = 50
AUTO_EPOCHS = 20  # steps:auto elsewhere: a generous cap, with stop-at-target doing the rest
AUTO_MIN_STEPS_DATA = 200


def auto_budget(registry: Registry, components: Mapping[str, str], fixed: Mapping[str, Any], batch_size: int,
                objective: Objective) -> Budget:
    """``steps:auto`` for one study: the same for every variant at a batch size (a fair budget).

    On a problem that knows it (:meth:`suite.problem.Problem.sgd_steps_to_target`, e.g. ``nqm``'s
    closed form): :data:`AUTO_FACTOR` × the fewest steps plain constant-lr SGD needs to bring the
    expected risk to the target (at least
    :data:`AUTO_MIN_STEPS`). Elsewhere: :data:`AUTO_EPOCHS` epochs (at least
    :data:`AUTO_MIN_STEPS_DATA` steps). Trials stop at the target, so a generous cap costs only
    the trials that never reach it. Needs ``steps-to-target``: without a target nothing ends a run early.
    """
    import torch

    from suite.context import BuildContext

    if objective.kind != "steps-to-target":
        raise TuneError("--budget steps:auto needs --objective steps-to-target:X (runs stop at the target); "
                        "give epochs:N or steps:N for another objective")
    comp = registry.get("problem", components["problem"])
    params = comp.resolve({k.partition(".")[2]: v for k, v in fixed.items() if k.startswith("problem.")})
    problem = comp.build(BuildContext(seed=0, device=torch.device("cpu"), batch_size=batch_size), params)
    steps = problem.sgd_steps_to_target(batch_size, objective.target)  # a closed form, where the problem has one
    if steps is not None:
        if not math.isfinite(steps):
            raise TuneError(f"--objective {objective}: problem {components['problem']!r} cannot reach the target")
        return Budget("steps", max(AUTO_MIN_STEPS, math.ceil(AUTO_FACTOR * steps)))
    if problem.n_train is None:
        raise TuneError(f"--budget steps:auto: problem {components['problem']!r} has no data set and no closed "
                        "form; give steps:N")
    per_epoch = max(1, problem.n_train // batch_size)
    return Budget("steps", max(AUTO_MIN_STEPS_DATA, AUTO_EPOCHS * per_epoch))
