"""The study plan: what defines one Optuna study (:class:`StudyPlan`: problem, variant, batch
size, budget, objective, seeds, space) and its name, and :func:`plan_studies`, which makes and
validates every plan of a ``suite tune`` before anything is stored.

The tuning package, by job: :mod:`~suite.tuning.budget` (how long a trial trains),
:mod:`~suite.tuning.objective` (what it minimises), :mod:`~suite.tuning.space` (variants and
search spaces), this module (studies), :mod:`~suite.tuning.trials` (a study's trials as they
train), :mod:`~suite.tuning.labels` (how they are shown). A trial *is* a RunSpec: its values are
resolved with :func:`suite.specs.spec.resolve_spec` and trained by the engine of ``suite run``.

Imports: the registry, :mod:`suite.specs` and the modules above; the engine only to preflight a
plan's RunSpec. Not MLflow, nor Optuna.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from suite.errors import SpecError, TuneError
from suite.params import Space
from suite.registry import Registry
from suite.specs.spec import RunSpec, resolve_spec
from suite.tuning.budget import Budget, auto_budget
from suite.tuning.objective import Objective
from suite.tuning.space import VARIANT_FAMILIES, Variant, check_space_overrides, search_space

REEVAL_SEED_BASE = 10_000  # re-evaluation seeds start here: never used while tuning


@dataclass(frozen=True)
class StudyPlan:
    """Everything that defines one study: its name, what it runs and what it optimises.

    ``settings()`` is stored on the Optuna study and a short hash of it ends the study's name
    (``nqm/sgd-constant-none-shuffle/b4-1a2b3c``): pinned values, spaces, objective, budget,
    seeds and evaluation schedule all change a trial's value, so studies that differ in any of
    them are different studies. The R independent studies of a cell (``--studies R``) share the
    hash; study index k > 0 adds ``/sk`` (``…/b4-1a2b3c/s1``), seeds its sampler apart and trains its
    trials on seeds of its own (:attr:`tuning_seeds`), so that the R studies' spread covers the draw
    of the tuning seeds as well as the sampler's.
    ``study_name`` overrides the name (a study created before the hash suffix, resumed under its
    old name: :func:`suite.tuning.studies.resolve_names`).
    """

    problem: str
    variant: Variant
    batch_size: int
    budget: Budget
    objective: Objective
    seeds: int
    space: tuple[tuple[str, Space], ...]
    fixed: tuple[tuple[str, Any], ...] = ()
    eval_every: int | None = None
    eval_growth: float | None = None
    study_name: str | None = None
    section: str | None = None  # the benchmark file's experiment it belongs to (not part of its identity)
    study_index: int = 0  # which of the cell's R independent studies (``--studies R``): its own sampler seed

    @property
    def index_suffix(self) -> str:
        """``/sK`` for study index K > 0 (``""`` for the first study: names from before
        ``--studies`` are kept, so those stores resume)."""
        return f"/s{self.study_index}" if self.study_index else ""

    @property
    def legacy_name(self) -> str:
        """The name studies had before it carried a hash: ``problem/variant/bB`` (and the
        study index's suffix, which also seeds each study's sampler apart)."""
        return f"{self.problem}/{self.variant.name}/b{self.batch_size}{self.index_suffix}"

    @property
    def digest(self) -> str:
        """Six hex digits of the hash of :meth:`settings` (without the study index: the R
        studies of a cell share it, and their names differ by :attr:`index_suffix`)."""
        settings = {k: v for k, v in self.settings().items() if k not in ("study_index", "tuning_seeds")}
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:6]

    @property
    def name(self) -> str:
        """``problem/variant/bB-digest``, then ``/sK`` for study index K > 0."""
        base = f"{self.problem}/{self.variant.name}/b{self.batch_size}"
        return self.study_name or f"{base}-{self.digest}{self.index_suffix}"

    @property
    def tuning_seeds(self) -> range:
        """The seeds a trial trains on: study k of a cell uses seeds k·K to k·K + K − 1 (K =
        :attr:`seeds`), so independent studies also tune on independent draws (the NQM's θ₀); the
        re-evaluation seeds (:data:`REEVAL_SEED_BASE` on) are the same for every study."""
        return range(self.study_index * self.seeds, (self.study_index + 1) * self.seeds)

    @property
    def space_dict(self) -> dict[str, Space]:
        return dict(self.space)

    def spec(self, registry: Registry, values: Mapping[str, Any], seed: int) -> RunSpec:
        """The RunSpec of this study at hyperparameters ``values`` and ``seed``."""
        return resolve_spec(
            registry,
            components=self.variant.components(self.problem),
            overrides={**dict(self.fixed), **dict(values)},
            batch_size=self.batch_size,
            seed=seed,
            eval_every=self.eval_every,
            eval_growth=self.eval_growth,
            **self.budget.kwargs(),
        )

    def settings(self) -> dict[str, Any]:
        """What changes a trial's value. Keys added since the first release appear only when
        they differ from the old behaviour, so older studies keep their settings (and resume)."""
        out = {
            "problem": self.problem,
            **{f: getattr(self.variant, f) for f in VARIANT_FAMILIES},
            "batch_size": self.batch_size,
            "budget": str(self.budget),
            "objective": str(self.objective),
            "seeds": self.seeds,
            "eval_every": self.eval_every,
            "space": {k: s.to_dict() for k, s in self.space},
            "fixed": {k: v for k, v in self.fixed},
        }
        if self.eval_growth is not None:
            out["eval_growth"] = self.eval_growth
        measure = self.objective.measure(self.seeds)
        if measure is not None:
            out["measure"] = measure
        if self.study_index:
            out["study_index"] = self.study_index
            out["tuning_seeds"] = list(self.tuning_seeds)
        return out


def plan_studies(
    registry: Registry,
    *,
    problems: Sequence[str],
    variant_list: Sequence[Variant],
    batch_sizes: Sequence[int],
    budget: Budget,
    objective: Objective,
    seeds: int,
    fixed: Mapping[str, Any] = (),
    space_overrides: Mapping[str, str] = (),
    eval_every: int | None = None,
    studies: int = 1,
) -> list[StudyPlan]:
    """``studies`` plans per (problem, variant, batch size) (study indices 0..studies-1, each
    study with its own sampler seed), validated: names, ``--set`` values, the space overrides,
    and one RunSpec per cell built on the CPU (batch size against the data, budget against the
    problem) before anything is stored or logged. ``steps:auto`` is resolved per (problem,
    batch size) by :func:`auto_budget`."""
    from suite.engine.loop import preflight

    fixed = dict(fixed)
    space_overrides = dict(space_overrides)
    if seeds < 1:
        raise TuneError(f"--seeds={seeds} is out of range: must be at least 1")
    if studies < 1:
        raise TuneError(f"--studies={studies} is out of range: must be at least 1")
    combos = [v.components(p) for p in problems for v in variant_list]
    check_space_overrides(registry, combos, space_overrides)
    plans = []
    auto: dict[tuple[str, int], Budget] = {}
    for problem in problems:
        for variant in variant_list:
            comps = variant.components(problem)
            fixed_here = {k: _coerce(registry, comps, k, v) for k, v in fixed.items() if _has_param(registry, comps, k)}
            space = search_space(registry, comps, fixed_here, space_overrides)
            for b in batch_sizes:
                budget_here = budget
                if budget.auto:
                    if (problem, b) not in auto:
                        auto[problem, b] = auto_budget(registry, comps, fixed_here, int(b), objective)
                    budget_here = auto[problem, b]
                plan = StudyPlan(problem, variant, int(b), budget_here, objective, seeds, tuple(space.items()),
                                 tuple(sorted(fixed_here.items())), eval_every, objective.eval_growth)
                spec = plan.spec(registry, {}, seed=0)
                try:
                    preflight([spec], registry)
                except SpecError as exc:
                    raise TuneError(str(exc).replace("--steps", "--budget steps:N")) from None
                plans += [plan if i == 0 else replace(plan, study_index=i) for i in range(studies)]
    for key in fixed:  # a --set that no component has is a typo
        if not any(_has_param(registry, c, key) for c in combos):
            family, _, name = key.partition(".")
            registry.get(family, combos[0][family]).param(name)
    return plans


def _coerce(registry: Registry, components: Mapping[str, str], key: str, value: Any) -> Any:
    """A ``--set`` value as the component's parameter holds it (so ``0`` and ``0.0`` are one setting)."""
    family, _, name = key.partition(".")
    return registry.get(family, components[family]).param(name).coerce(value, owner=family)


def _has_param(registry: Registry, components: Mapping[str, str], key: str) -> bool:
    family, _, name = key.partition(".")
    return family in components and any(p.name == name for p in registry.get(family, components[family]).params)
