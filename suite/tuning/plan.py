"""Optuna tuning: R independent studies (default 1) per (problem, variant, batch size); each trial *is* a RunSpec.

A trial asks Optuna for a value of every tunable hyperparameter of the study's components (the
search space comes from the plugins' registrations, :attr:`suite.Param.space`), resolves the
RunSpec(s) with :func:`suite.specs.spec.resolve_spec` and trains them through the same engine as
``suite run`` (:func:`suite.engine.loop.train`). Each evaluation's validation loss is reported to
the trial; when the pruner says so the ``on_eval`` callback raises
:class:`suite.engine.loop.StopRun` and the trial is pruned. With ``steps-to-target:X`` a seed's
run also stops once it has reached the target (recorded as completed), and the trial's value is
read from the mean curve over its seeds (:meth:`Objective.trial_value`). A run that diverges is recorded as a
pruned trial (user attrs ``suite.status = "diverged"`` and ``suite.value``) and the study goes
on; a run whose plugin code fails is a failed trial (``suite.status = "failed"``).

This module knows Optuna and the engine, not MLflow: what a trial runs is announced to a
:class:`TrialSink` (the MLflow side lives in :mod:`suite.tuning.tracking`), so worker processes
do not need MLflow at all.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from suite.engine.evalbatch import EvalBatches
from suite.engine.loop import RunResult, StopRun, divergence
from suite.engine.target import watched_key
from suite.errors import SpecError, SuiteError, TrialFailed, TuneError
from suite.exec.phases import CLOCK
from suite.params import Space, to_number
from suite.registry import FAMILIES, Registry
from suite.specs.spec import RunSpec, loss_target_ok, resolve_spec
from suite.tuning import caps
from suite.vocab import (
    STUDY_OVERRIDES,
    TAG_DEVICE,
    TAG_REASON,
    TAG_SEED_INDEX,
    TAG_SPEC_HASHES,
    TAG_STUDY,
    TAG_STUDY_INDEX,
    TAG_TRIAL,
    TAG_TRIAL_STATE,
    TAG_TRIAL_VALUE,
    TAG_VALUES,
    TRIAL_STATUS,
    TRIAL_VALUE,
    TRIAL_WORKER,
)

VARIANT_FAMILIES = ("optimizer", "scheduler", "averager", "sampler")
TUNED_FAMILIES = tuple(f for f in FAMILIES if f != "problem")  # the problem is fixed
REEVAL_SEED_BASE = 10_000  # re-evaluation seeds start here: never used while tuning


# -- budget and objective ------------------------------------------------------------------
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

    On a problem with a closed form (``nqm``): :data:`AUTO_FACTOR` × the fewest steps plain
    constant-lr SGD needs to bring the expected risk to the target (at least
    :data:`AUTO_MIN_STEPS`). Elsewhere: :data:`AUTO_EPOCHS` epochs (at least
    :data:`AUTO_MIN_STEPS_DATA` steps). Trials stop at the target, so a generous cap costs only
    the trials that never reach it. Needs ``steps-to-target``: without a target nothing ends a run early.
    """
    import torch

    from suite.builtin.nqm import NQMProblem
    from suite.context import BuildContext
    from suite.theory import best_steps_to_target

    if objective.kind != "steps-to-target":
        raise TuneError("--budget steps:auto needs --objective steps-to-target:X (runs stop at the target); "
                        "give epochs:N or steps:N for another objective")
    comp = registry.get("problem", components["problem"])
    params = comp.resolve({k.partition(".")[2]: v for k, v in fixed.items() if k.startswith("problem.")})
    problem = comp.build(BuildContext(seed=0, device=torch.device("cpu"), batch_size=batch_size), params)
    if isinstance(problem, NQMProblem):
        steps, _ = best_steps_to_target(problem.h_cpu.numpy(), problem.c_cpu.numpy(), batch_size, objective.target)
        if not math.isfinite(steps):
            raise TuneError(f"--objective {objective}: problem {components['problem']!r} cannot reach the target")
        return Budget("steps", max(AUTO_MIN_STEPS, math.ceil(AUTO_FACTOR * steps)))
    if problem.n_train is None:
        raise TuneError(f"--budget steps:auto: problem {components['problem']!r} has no data set and no closed "
                        "form; give steps:N")
    per_epoch = max(1, problem.n_train // batch_size)
    return Budget("steps", max(AUTO_MIN_STEPS_DATA, AUTO_EPOCHS * per_epoch))


EVAL_GROWTH = 0.05  # steps-to-target: evaluations at most 5% of the step apart
REACHED = "reached the target"  # the reason a run stopped at its target (recorded as completed)
History = Sequence[tuple[int, Mapping[str, float]]]


@dataclass(frozen=True)
class Objective:
    """What a trial minimises, from its seeds' evaluation histories.

    ``final``: the last value; ``best``: the minimum over the run; ``steps-to-target:X``: the
    first evaluated step at which the value is <= X, evaluated on a geometric schedule
    (:data:`EVAL_GROWTH`) so the step is known to within 5%. A trial's value is read from the
    *mean curve* over its seeds (:meth:`trial_value`), never from per-seed lucky dips.

    The watched value (:meth:`watched`) is the validation loss, the averaged model's
    (``avg_val_loss``) when the run has an averager. For ``steps-to-target`` it is the expected
    risk where the problem knows it (``theory_risk``, ``theory_avg_risk`` for the average: the
    ``nqm``), so noise cannot carry a run across the target early.

    A run that never reaches X scores ``total_steps * loss / X`` (more than the budget, and
    smaller the closer it came), so the sampler still learns which way is better.
    """

    kind: str
    target: float | None = None
    metric: str | None = None  # any logged metric (e.g. val_acc); None: the loss (see above)
    direction: str = "min"  # min | max, for a named metric

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``final``, ``best`` or ``steps-to-target:X``, each optionally followed by
        ``:METRIC:min`` or ``:METRIC:max`` (e.g. ``final:val_acc:max``)."""
        kind, _, rest = text.strip().partition(":")
        parts = rest.split(":") if rest else []
        target: float | None = None
        if kind == "steps-to-target" and parts:
            try:
                target = to_number(parts.pop(0))
            except ValueError:
                target = float("nan")
        metric, direction = None, "min"
        if len(parts) == 2 and parts[0] and parts[1] in ("min", "max"):
            metric, direction = parts
            parts = []
        ok = not parts and (kind in ("final", "best") or (
            kind == "steps-to-target" and target is not None
            and (loss_target_ok(target) or (direction == "max" and math.isfinite(target)))))
        if ok:
            return cls(kind, target, metric, direction)
        raise TuneError(
            f"malformed --objective {text!r}: use final, best or steps-to-target:X with X > 0, optionally "
            "followed by :METRIC:min or :METRIC:max for any logged metric (e.g. steps-to-target:0.3, "
            "final:val_acc:max)"
        )

    def __str__(self) -> str:
        text = f"{self.kind}:{self.target:g}" if self.target is not None else self.kind
        return f"{text}:{self.metric}:{self.direction}" if self.metric else text

    @property
    def study_direction(self) -> str:
        """Optuna's direction for this objective: ``minimize`` or ``maximize`` (steps always minimize)."""
        return "maximize" if self.direction == "max" and self.kind != "steps-to-target" else "minimize"

    def _at_target(self, v: float) -> bool:
        return v >= self.target if self.direction == "max" else v <= self.target

    @property
    def stops_at_target(self) -> bool:
        return self.kind == "steps-to-target"

    @property
    def eval_growth(self) -> float | None:
        """The geometric evaluation schedule this objective needs (None: the run's own)."""
        return EVAL_GROWTH if self.stops_at_target else None

    def watched(self, metrics: Mapping[str, float]) -> float:
        """The value a trial is judged on at one evaluation (see the class docstring); a named
        metric the run did not log reads NaN."""
        if self.metric is not None:
            return float(metrics.get(self.metric, math.nan))
        averaged = "avg_val_loss" in metrics
        if self.stops_at_target:  # the expected risk where the problem knows it
            return float(metrics[watched_key(metrics, averaged) or "val_loss"])
        return float(metrics["avg_val_loss"] if averaged else metrics["val_loss"])

    def reached(self, history: History) -> bool:
        """Whether a run with this history has reached the target (it may stop there)."""
        return self.stops_at_target and bool(history) and self._at_target(self.watched(history[-1][1]))

    def all_reached(self, histories: Sequence[History]) -> bool:
        """Whether a stack of seeds (one history each, evaluated at the same steps) may stop:
        every seed has reached the target at some evaluation and so has their mean curve, so
        :meth:`trial_value` is exact from here on."""
        if not self.stops_at_target or not histories or not all(histories):
            return False
        seeds_done = all(any(self._at_target(self.watched(m)) for _, m in h) for h in histories)
        return seeds_done and any(self._at_target(v) for _, v in self.mean_curve(histories))

    def intermediate(self, history: History) -> float:
        """What is reported to the pruner after each evaluation (in the study's direction)."""
        if self.kind == "best":
            return (max if self.direction == "max" else min)(self.watched(m) for _, m in history)
        value = self.watched(history[-1][1])
        return -value if self.kind == "steps-to-target" and self.direction == "max" else value

    def mean_curve(self, histories: Sequence[History]) -> list[tuple[int, float]]:
        """The watched value averaged over seeds at every evaluated step. A seed whose run
        stopped earlier (at the target) holds its last value: exact when every seed ran to the
        same step (a stack of seeds stopped together), conservative otherwise, as the expected
        risk keeps falling after the target."""
        curves = [[(step, self.watched(m)) for step, m in h] for h in histories if h]
        steps = sorted({step for c in curves for step, _ in c})
        out, idx = [], [0] * len(curves)
        for step in steps:
            total = 0.0
            for k, c in enumerate(curves):
                while idx[k] + 1 < len(c) and c[idx[k] + 1][0] <= step:
                    idx[k] += 1
                total += c[idx[k]][1]
            out.append((step, total / len(curves)))
        return out

    def trial_value(self, histories: Sequence[History], total_steps: int | None = None) -> float:
        """A trial's value from the histories of its K seeds (one run each; a stack's rows):
        ``final``/``best`` of the mean curve, or the first step at which it is <= the target.
        A trial that never reaches the target ran its whole budget, ``total_steps`` (by default
        the last evaluated step)."""
        curve = self.mean_curve(histories)
        if self.kind == "final":
            return curve[-1][1]
        if self.kind == "best":
            return (max if self.direction == "max" else min)(v for _, v in curve)
        for step, v in curve:
            if self._at_target(v):
                return float(step)
        total = curve[-1][0] if total_steps is None else total_steps
        last = curve[-1][1]
        if self.direction == "max":
            return float(total) * self.target / min(last, self.target) if last > 0 < self.target else math.inf
        return float(total) * max(last, self.target) / self.target

    def value(self, result: RunResult, total_steps: int | None = None) -> float:
        """The value of one run (one seed)."""
        if self.metric is not None and result.history and self.metric not in result.history[-1][1]:
            logged = ", ".join(sorted(result.history[-1][1]))
            raise TuneError(f"--objective {self}: the runs do not log {self.metric!r}; they log: {logged}")
        return self.trial_value([result.history], total_steps)

    def measure(self, seeds: int) -> str | None:
        """How the value is measured where it differs from before issue 13 (stored with a
        study, so older studies resume only where their values still compare); None: as before."""
        if self.stops_at_target:
            return "expected-risk-else-val-loss; mean-curve-over-seeds"
        if self.kind == "best" and seeds > 1:
            return "mean-curve-over-seeds"
        return None

    @property
    def label(self) -> str:
        if self.metric is not None:
            name = self.metric.replace("_", " ")
            return f"steps to {name} {self.target:g}" if self.kind == "steps-to-target" else f"{self.kind} {name}"
        if self.kind == "steps-to-target":
            return f"steps to loss {self.target:g} (expected risk where known; mean over seeds)"
        return f"{self.kind} val loss"


# -- variants, search spaces and studies ----------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One combination of components compared across batch sizes."""

    optimizer: str
    scheduler: str
    averager: str
    sampler: str

    @property
    def name(self) -> str:
        return "-".join(getattr(self, f) for f in VARIANT_FAMILIES)

    def components(self, problem: str) -> dict[str, str]:
        return {"problem": problem, **{f: getattr(self, f) for f in VARIANT_FAMILIES}}


def variants(choices: Mapping[str, Sequence[str]]) -> list[Variant]:
    """The cross product of the component lists, in the order given."""
    lists = [list(dict.fromkeys(choices[f])) for f in VARIANT_FAMILIES]
    return [Variant(*combo) for combo in itertools.product(*lists)]


def parse_space_option(text: str) -> tuple[str, str]:
    """Split ``family.param=TRIAL_SPEC`` into its key and spec text, or raise a one-line TuneError."""
    key, eq, spec = text.partition("=")
    family, dot, param = key.strip().partition(".")
    if not eq or not dot or not param or not spec.strip():
        raise TuneError(
            f"malformed --space {text!r}: write family.param=log:LOW:HIGH|uniform:LOW:HIGH|int:LOW:HIGH|choice:a,b"
        )
    if family not in TUNED_FAMILIES:
        why = "the problem is fixed while tuning (use --set problem.x=V)" if family == "problem" else (
            f"unknown family {family!r}")
        raise TuneError(f"malformed --space {text!r}: {why}; tunable families: {', '.join(TUNED_FAMILIES)}")
    return f"{family}.{param.strip()}", spec.strip()


def search_space(
    registry: Registry,
    components: Mapping[str, str],
    fixed: Mapping[str, Any] = (),
    overrides: Mapping[str, str] = (),
) -> dict[str, Space]:
    """``family.param -> Space`` for every tunable hyperparameter of ``components``.

    A parameter is tuned when its registration declares a space (or ``overrides`` gives one)
    and ``fixed`` (``--set``) does not pin it. The problem's parameters are never tuned.
    ``overrides`` are ``--space`` texts; they keep the declared transform (1-β for momentum).
    A problem that declares an lr stability cap sets the top of a declared lr space
    (:mod:`suite.tuning.caps`).
    """
    fixed = dict(fixed)
    overrides = dict(overrides)
    space: dict[str, Space] = {}
    for family in TUNED_FAMILIES:
        comp = registry.get(family, components[family])
        for p in comp.params:
            key = f"{family}.{p.name}"
            if key in fixed:
                continue
            s = p.space
            if key in overrides:
                try:
                    s = Space.parse(overrides[key], like=p.space)
                    _check_space_values(s, p, key)
                except SuiteError as exc:
                    raise TuneError(f"malformed --space {key}={overrides[key]}: {exc}") from None
            if s is not None:
                space[key] = s
    return caps.capped(registry, components, fixed, space, overrides)  # the problem's lr stability cap


def _check_space_values(space: Space, param: Any, key: str) -> None:
    """Every value the space can produce must be valid for the parameter."""
    if space.kind == "choice":
        for c in space.choices:
            param.coerce(c, owner=key.partition(".")[0])
        return
    for end in (space.low, space.high):
        x = int(end) if space.kind == "int" else float(end)
        param.coerce(space.to_value(x), owner=key.partition(".")[0])


def check_space_overrides(registry: Registry, all_components: Iterable[Mapping[str, str]],
                          overrides: Mapping[str, str]) -> None:
    """Each ``--space`` key must name a hyperparameter of at least one chosen component."""
    all_components = list(all_components)
    for key in overrides:
        family, _, name = key.partition(".")
        comps = {c[family] for c in all_components}
        if not any(name in {p.name for p in registry.get(family, c).params} for c in comps):
            # let the registry produce its "did you mean" message for the first component
            try:
                registry.get(family, sorted(comps)[0]).param(name)
            except SuiteError as exc:
                raise TuneError(f"--space {key}: {exc}") from None


@dataclass(frozen=True)
class StudyPlan:
    """Everything that defines one study: its name, what it runs and what it optimises.

    ``settings()`` is stored on the Optuna study and a short hash of it ends the study's name
    (``nqm/sgd-constant-none-shuffle/b4-1a2b3c``): pinned values, spaces, objective, budget,
    seeds and evaluation schedule all change a trial's value, so studies that differ in any of
    them are different studies. The R independent studies of a cell (``--studies R``) share the
    hash; study index k > 0 adds ``/sk`` (``…/b4-1a2b3c/s1``) and seeds its sampler apart.
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
        settings = {k: v for k, v in self.settings().items() if k != "study_index"}
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:6]

    @property
    def name(self) -> str:
        """``problem/variant/bB-digest``, then ``/sK`` for study index K > 0."""
        base = f"{self.problem}/{self.variant.name}/b{self.batch_size}"
        return self.study_name or f"{base}-{self.digest}{self.index_suffix}"

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


# -- trials ---------------------------------------------------------------------------------
class TrialSink(Protocol):
    """Where a trial announces its runs (MLflow in the parent process, or a queue to it)."""

    def start(self, key: str, study: str, spec: RunSpec, kind: str, tags: dict[str, Any]) -> None: ...
    def eval(self, key: str, step: int, metrics: dict[str, float]) -> None: ...
    def eval_rows(self, rows: list[tuple[str, int, dict[str, float]]]) -> None: ...  # (key, step, metrics) each
    def done(self, key: str, result: RunResult) -> None: ...
    def tag(self, key: str, tags: dict[str, Any]) -> None: ...
    def interrupted(self, key: str) -> None: ...
    def echo(self, line: str) -> None: ...
    def settle(self) -> None: ...  # what was announced is final (a population ended): a safe point to write


@dataclass(eq=False)
class _TrialRows:
    """One trial of a population while it trains: its rows (one per seed) and how it ended."""

    trial: optuna.Trial
    values: dict[str, Any]
    limit: float | None  # steps-to-target: prune past this many steps
    rows: list[_Row] = field(default_factory=list)
    ended: str = ""  # why its remaining rows stop (pruned, a sibling seed diverged)
    owner: Any = None  # the TrialObjective (its study) that judges and concludes it


@dataclass(eq=False)
class _Row:
    """One seed of one trial: a row of the population's stack."""

    trial: _TrialRows
    spec: RunSpec
    key: str
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    result: RunResult | None = None
    reached: bool = False  # steps-to-target: some evaluation of this row is at the target


@dataclass
class TrialObjective:
    """The Optuna objective of one study: suggest, resolve the RunSpecs, train, report, prune."""

    plan: StudyPlan
    registry: Registry
    device: str
    sink: TrialSink
    worker: str = "main"

    engine: str = "auto"  # how a population's runs train (suite.engine.units)

    def __call__(self, trial: optuna.Trial) -> float:
        """One trial: a population of one (see :meth:`population`)."""
        ((state, value, reason),) = self.population([trial])
        if state == TrialState.PRUNED:
            raise optuna.TrialPruned(reason)
        if state == TrialState.FAIL:
            raise TrialFailed(reason)
        return value

    def population(self, trials: Sequence[optuna.Trial]) -> list[tuple[TrialState, float | None, str]]:
        """Train K trials (each on the plan's seeds) as one unit: one stack of K x seeds rows where
        the components can stack. Each trial suggests its own values (the study's sampler; TPE
        with a constant liar keeps a population's members apart), reports its first seed to the
        pruner, and stops all its rows when it is pruned, diverges, fails, or (steps-to-target)
        when every seed and their mean have reached the target. Returns each trial's
        (state, value, reason) for Optuna. (Several studies' populations at once:
        :func:`train_populations`.)"""
        return train_populations([(self, trials)])[0]

    def _rows(self, trials: Sequence[optuna.Trial]) -> tuple[list[Outcome | None], list[_Row]]:
        """Each trial suggests its values and becomes its seeds' rows (announced to the sink); a
        trial whose values a component refuses fails here (its outcome is filled in)."""
        plan = self.plan
        out: list[Outcome | None] = [None] * len(trials)
        rows: list[_Row] = []
        for t_index, trial in enumerate(trials):
            with CLOCK.phase("optuna"):  # the sampler's proposal (TPE, constant liar) and its storage writes
                values = {key: space.suggest(trial, key) for key, space in plan.space}
                trial.set_user_attr(STUDY_OVERRIDES, values)
                trial.set_user_attr(TRIAL_WORKER, self.worker)
            try:
                specs = [plan.spec(self.registry, values, seed) for seed in range(plan.seeds)]
            except SuiteError as exc:  # a combination the component refuses, e.g. nesterov without momentum
                self._record(trial, "failed", None, str(exc))
                self.sink.echo(self._trial_line(trial, values, "FAIL", None, str(exc)))
                out[t_index] = (TrialState.FAIL, None, str(exc))
                continue
            with CLOCK.phase("optuna"):
                trial.set_user_attr(TAG_SPEC_HASHES, [s.hash for s in specs])
                limit = target_step_limit(trial.study) if plan.objective.stops_at_target else None
            state = _TrialRows(trial, values, limit, owner=self)
            for spec in specs:
                rows.append(_Row(state, spec, f"{plan.name}#{trial.number}#{spec.seed}"))
        for row in rows:
            self.sink.start(row.key, plan.name, row.spec, "trial", {
                TAG_STUDY: plan.name, TAG_TRIAL: row.trial.trial.number, TAG_SEED_INDEX: row.spec.seed,
                TAG_STUDY_INDEX: plan.study_index, TAG_DEVICE: self.device})
            row.trial.rows.append(row)
        return out, rows

    def _outcomes(self, trials: Sequence[optuna.Trial], out: list[Outcome | None],
                  rows: Sequence[_Row]) -> tuple[list[Outcome], list[str]]:
        """Every trial's outcome once its rows have trained, and the lines to show for them."""
        lines = []
        for t_index, trial in enumerate(trials):
            if out[t_index] is None:
                state = next(r.trial for r in rows if r.trial.trial is trial)
                out[t_index], line = self._conclude(state)
                lines.append(line)
        return out, lines  # type: ignore[return-value]

    def _judge(self, row: _Row, step: int) -> None:
        """After each evaluation of a row: stop it if its trial has ended, prune the trial
        from its first seed, stop a trial whose seeds all reached the target."""
        plan, state = self.plan, row.trial
        if plan.objective.stops_at_target and not row.reached:  # kept as it goes: all_reached scans histories
            row.reached = plan.objective._at_target(plan.objective.watched(row.history[-1][1]))
        if state.ended:
            raise StopRun(state.ended)
        if divergence(row.spec, row.history):
            state.ended = f"seed {row.spec.seed} diverged"
            return  # the engine stops and records this row as diverged
        if all(r.reached for r in state.rows) and plan.objective.all_reached([r.history for r in state.rows]):
            raise StopRun(f"{REACHED} {plan.objective.target:g} at step {step}")
        if row is not state.rows[0] or step == 0:
            return
        if plan.objective.stops_at_target:
            if state.limit is not None and step > state.limit:
                state.ended = (f"pruned at step {step}: not at the target after more steps than the median "
                               f"completed trial needed ({state.limit:g})")
                raise StopRun(state.ended)
            return
        v = plan.objective.intermediate(row.history)
        if not math.isfinite(v):
            return
        CLOCK.enter("optuna")  # the pruner's report and verdict (a storage write and a read)
        try:
            state.trial.report(v, step)
            prune = state.trial.should_prune()
        finally:
            CLOCK.leave()
        if prune:
            state.ended = f"pruned by the {type(state.trial.study.pruner).__name__} at step {step}"
            raise StopRun(state.ended)

    def _conclude(self, state: _TrialRows) -> tuple[tuple[TrialState, float | None, str], str]:
        """A trial's outcome from its rows' results (failed beats diverged beats pruned), and
        its line for the user."""
        plan, trial = self.plan, state.trial
        results = [r.result for r in state.rows]
        by_status = {r.status: r for r in reversed(results) if r is not None}
        value: float | None = None
        if "failed" in by_status:
            reason = by_status["failed"].reason
            self._record(trial, "failed", None, reason)
            outcome = (TrialState.FAIL, None, reason)
        elif "diverged" in by_status:
            result = by_status["diverged"]
            reason = f"diverged: {result.reason}"
            value = plan.objective.watched(result.final) if result.history else None
            self._record(trial, "diverged", value, result.reason)
            outcome = (TrialState.PRUNED, None, reason)
        elif "stopped" in by_status or any(r is None for r in results):
            result = by_status.get("stopped")
            reason = state.ended or (f"pruned at step {result.history[-1][0]}" if result and result.history
                                     else "pruned")
            outcome = (TrialState.PRUNED, None, reason)
        else:
            value = plan.objective.trial_value([r.history for r in results])
            self._record(trial, "completed", value, "")
            with CLOCK.phase("optuna"):
                trial.set_user_attr(TAG_VALUES, [plan.objective.value(r) for r in results])
            outcome = (TrialState.COMPLETE, value, "")
        self._finish_runs(trial, [r.key for r in state.rows], outcome[0].name, value)
        return outcome, self._trial_line(trial, state.values, outcome[0].name, value, outcome[2])

    def _record(self, trial: optuna.Trial, status: str, value: float | None, reason: str) -> None:
        with CLOCK.phase("optuna"):
            trial.set_user_attr(TRIAL_STATUS, status)
            trial.set_user_attr(TRIAL_VALUE, value if value is not None and math.isfinite(value) else None)
            if reason:
                trial.set_user_attr(TAG_REASON, reason[:1000])

    def _finish_runs(self, trial: optuna.Trial, keys: list[str], state: str, value: float | None) -> None:
        tags: dict[str, Any] = {TAG_TRIAL_STATE: state}
        if value is not None:
            tags[TAG_TRIAL_VALUE] = repr(value)
        for key in keys:
            self.sink.tag(key, tags)

    def _trial_line(self, trial: optuna.Trial, values: Mapping[str, Any], state: str, value: float | None,
                    reason: str) -> str:
        shown = " ".join(f"{short_name(k)}={format_value(v)}" for k, v in values.items())
        outcome = f"{value:.5g}" if state == "COMPLETE" else f"{state.lower()} ({reason})"
        return f"[{self.plan.name}] trial {trial.number}: {outcome}  {shown}"


def share_key(plan: Any, registry: Any) -> tuple | None:
    """The studies with one key train their populations as one stack: the stacked engine's
    :func:`suite.engine.stacked.stack_key` of the study's runs (problem and its parameters,
    sampler, batch size, budget, evaluation schedule). None: the study's components do not
    stack (it trains alone)."""
    from suite.engine.stacked import stack_key, stackable

    spec = plan.spec(registry, {}, seed=0)
    return stack_key(spec) if stackable(spec, registry) else None


Outcome = tuple[TrialState, float | None, str]  # what Optuna is told of a trial: state, value, reason


def train_populations(parts: Sequence[tuple[TrialObjective, Sequence[optuna.Trial]]]) -> list[list[Outcome]]:
    """Train the populations of one or more studies as one unit (``parts``: each study's
    objective and its claimed trials): rows that stack (:func:`suite.engine.stacked.stack_key`:
    the same problem, batch size, budget, evaluation schedule) form one stack across studies.
    Each trial is still judged by its own study: suggested by its sampler, reported to and pruned
    by its pruner, concluded with its objective, and each row is its own run (announced to its
    objective's sink). Returns each part's outcomes, in order."""
    from suite.engine.units import run_unit

    if not parts:
        return []
    prepared = [objective._rows(trials) for objective, trials in parts]
    rows = [row for _, part_rows in prepared for row in part_rows]
    sinks: dict[int, tuple[TrialSink, EvalBatches]] = {}  # one batch per sink (a study's MLflow, or the pool)
    for objective, _ in parts:
        if id(objective.sink) not in sinks:
            sinks[id(objective.sink)] = (objective.sink, EvalBatches(
                lambda evals, _sink=objective.sink: _sink.eval_rows([(rows[j].key, step, m) for j, step, m in evals])))
    batches_of = [sinks[id(row.trial.owner.sink)][1] for row in rows]

    def on_eval(j: int, step: int, metrics: dict[str, float]) -> None:
        row = rows[j]
        batches_of[j].add(j, step, metrics)  # tracked one evaluation step of the stack at a time
        row.history.append((step, metrics))
        row.trial.owner._judge(row, step)

    def flush() -> None:
        for _, batches in sinks.values():
            batches.flush()

    first = parts[0][0]
    running = {row.key: row for row in rows}
    try:
        for j, result in run_unit([r.spec for r in rows], first.device, first.registry, on_eval, engine=first.engine):
            flush()
            row = rows[j]
            row.result = at_target_is_completed(result)
            row.trial.owner.sink.done(row.key, row.result)
            running.pop(row.key)
    except BaseException:
        flush()
        for key, row in running.items():
            row.trial.owner.sink.interrupted(key)
        raise
    concluded = [objective._outcomes(trials, out, part_rows)
                 for (objective, trials), (out, part_rows) in zip(parts, prepared, strict=True)]
    for sink, _ in sinks.values():
        sink.settle()
    for (objective, _), (_, lines) in zip(parts, concluded, strict=True):
        for line in lines:  # a trial is reported once its runs are in the store
            objective.sink.echo(line)
    return [out for out, _ in concluded]


def stop_at_target(objective: Objective, spec: RunSpec, history: list[tuple[int, dict[str, float]]],
                   sink: TrialSink | None = None, key: str = "") -> Callable[[int, dict[str, float]], None]:
    """An ``on_eval`` callback that records each evaluation in ``history`` (and to ``sink``)
    and stops the run (:class:`StopRun` with reason :data:`REACHED`) once it has reached the
    objective's target; pass the result through :func:`at_target_is_completed`. (With a stack
    of seeds, stop the stack once every row has reached it.)"""

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        if sink is not None:
            sink.eval(key, step, metrics)
        history.append((step, metrics))
        if not divergence(spec, history) and objective.reached(history):
            raise StopRun(f"{REACHED} {objective.target:g} at step {step}")

    return on_eval


PRUNE_AFTER = 3  # completed trials before steps-to-target trials are pruned


def target_step_limit(study: optuna.Study) -> float | None:
    """For ``steps-to-target``: the median value (steps) of the study's completed trials; a
    trial still short of the target past it cannot end better than that median and is pruned
    there. Loss-based pruning would compare losses at equal steps, which favours the fast
    starters (a large lr) over the trials that reach the target first. None with ``--pruner
    none`` or before :data:`PRUNE_AFTER` completed trials."""
    if isinstance(study.pruner, optuna.pruners.NopPruner):
        return None
    done = sorted(t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                  if t.value is not None)
    if len(done) < PRUNE_AFTER:
        return None
    mid = len(done) // 2
    return done[mid] if len(done) % 2 else (done[mid - 1] + done[mid]) / 2


def at_target_is_completed(result: RunResult) -> RunResult:
    """A run stopped at its target has completed (its value is known), not been pruned."""
    if result.status == "stopped" and result.reason.startswith(REACHED):
        result.status = "completed"
    return result


SHORT_NAMES = {"lr": "lr", "momentum": "β", "weight_decay": "λ"}


def short_name(key: str) -> str:
    """``optimizer.momentum`` -> ``β``; other parameters keep their own name."""
    family, _, name = key.partition(".")
    return SHORT_NAMES.get(name, name) if family == "optimizer" else name


def format_value(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or v == 0:
        return str(int(v))
    return f"{v:.3g}"
