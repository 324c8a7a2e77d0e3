"""Optuna tuning: one study per (problem, variant, batch size); each trial *is* a RunSpec.

A trial asks Optuna for a value of every tunable hyperparameter of the study's components (the
search space comes from the plugins' registrations, :attr:`suite.Param.space`), resolves the
RunSpec(s) with :func:`suite.specs.spec.resolve_spec` and trains them through the same engine as
``suite run`` (:func:`suite.engine.loop.train`). Each evaluation's validation loss is reported to
the trial; when the pruner says so the ``on_eval`` callback raises
:class:`suite.engine.loop.StopRun` and the trial is pruned. A run that diverges is recorded as a
pruned trial (user attrs ``suite.status = "diverged"`` and ``suite.value``) and the study goes
on; a run whose plugin code fails is a failed trial (``suite.status = "failed"``).

This module knows Optuna and the engine, not MLflow: what a trial runs is announced to a
:class:`TrialSink` (the MLflow side lives in :mod:`suite.tune.tracking`), so worker processes
do not need MLflow at all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from suite.engine.loop import RunResult, StopRun, divergence, train
from suite.errors import SpecError, SuiteError, TrialFailed, TuneError
from suite.params import Space
from suite.registry import FAMILIES, Registry
from suite.specs.spec import RunSpec, resolve_spec
from suite.vocab import (
    STUDY_OVERRIDES,
    TAG_DEVICE,
    TAG_REASON,
    TAG_SEED_INDEX,
    TAG_SPEC_HASHES,
    TAG_STUDY,
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
    """How long each trial trains: ``epochs:N`` or ``steps:N``."""

    unit: str
    n: int

    @classmethod
    def parse(cls, text: str) -> Budget:
        unit, _, n = text.strip().partition(":")
        if unit in ("epochs", "steps") and n.strip().isdigit() and int(n) >= 1:
            return cls(unit, int(n))
        raise TuneError(f"malformed --budget {text!r}: write epochs:N or steps:N with N >= 1, e.g. epochs:5")

    def kwargs(self) -> dict[str, int]:
        return {self.unit: self.n}

    def __str__(self) -> str:
        return f"{self.unit}:{self.n}"


@dataclass(frozen=True)
class Objective:
    """What a trial optimises, from its run's evaluation history.

    The watched metric is ``metric`` when one is given (any logged metric, e.g. ``val_acc`` or
    ``avg_val_acc``, with its ``direction``: ``min`` or ``max``), else the loss: ``avg_val_loss``
    (the averaged model) when the run has an averager, else ``val_loss`` (``min``). ``final``:
    its last value; ``best``: its best value over the run; ``steps-to-target:X``: the first step
    at which it is at least as good as X. A run that never reaches X scores ``total_steps * loss
    / X`` (more than the budget, and smaller the closer it came), so the sampler still learns
    which way is better (for ``max``: ``total_steps * X / value``).
    """

    kind: str
    target: float | None = None
    metric: str | None = None
    direction: str = "min"

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``final``, ``best`` or ``steps-to-target:X``, each optionally followed by
        ``:METRIC:min`` or ``:METRIC:max`` (e.g. ``final:val_acc:max``)."""
        kind, _, rest = text.strip().partition(":")
        parts = rest.split(":") if rest else []
        target: float | None = None
        if kind == "steps-to-target" and parts:
            try:
                target = float(parts.pop(0))
            except ValueError:
                target = float("nan")
        metric, direction = None, "min"
        if len(parts) == 2 and parts[0] and parts[1] in ("min", "max"):
            metric, direction = parts
            parts = []
        ok = not parts and (kind in ("final", "best") or (
            kind == "steps-to-target" and target is not None and math.isfinite(target)
            and (target > 0 or direction == "max")))
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
        """Optuna's direction for this objective: ``minimize`` or ``maximize``."""
        return "maximize" if self.direction == "max" and self.kind != "steps-to-target" else "minimize"

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "max" else a < b

    def watched(self, metrics: Mapping[str, float]) -> float:
        """The metric a trial is judged on (the averaged model's loss where there is one, unless
        a metric is named); NaN where the run did not log the named metric."""
        if self.metric is not None:
            return float(metrics.get(self.metric, math.nan))
        return float(metrics.get("avg_val_loss", metrics["val_loss"]))

    def intermediate(self, history: Sequence[tuple[int, Mapping[str, float]]]) -> float:
        """What is reported to the pruner after each evaluation (in the study's direction)."""
        if self.kind == "best":
            best = max if self.direction == "max" else min
            return best(self.watched(m) for _, m in history)
        value = self.watched(history[-1][1])
        return -value if self.kind == "steps-to-target" and self.direction == "max" else value

    def value(self, result: RunResult, total_steps: int) -> float:
        """The trial value of a completed run."""
        if self.metric is not None and result.history and self.metric not in result.history[-1][1]:
            logged = ", ".join(sorted(result.history[-1][1]))
            raise TuneError(f"--objective {self}: the runs do not log {self.metric!r}; they log: {logged}")
        losses = [(step, self.watched(m)) for step, m in result.history]
        if self.kind == "final":
            return losses[-1][1]
        if self.kind == "best":
            return (max if self.direction == "max" else min)(v for _, v in losses)
        for step, v in losses:
            if v == self.target or self._better(v, self.target):
                return float(step)
        last = losses[-1][1]
        if self.direction == "max":
            return float(total_steps) * self.target / min(last, self.target) if last > 0 < self.target else math.inf
        return float(total_steps) * max(last, self.target) / self.target

    @property
    def label(self) -> str:
        name = self.metric.replace("_", " ") if self.metric else "val loss"
        if self.kind == "steps-to-target":
            return f"steps to {name} {self.target:g}"
        return f"{self.kind} {name}"


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
    return space


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

    ``settings()`` is stored on the Optuna study; resuming a study with different settings is
    an error (its old trial values would not be comparable with the new ones).
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

    @property
    def name(self) -> str:
        return f"{self.problem}/{self.variant.name}/b{self.batch_size}"

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
            **self.budget.kwargs(),
        )

    def settings(self) -> dict[str, Any]:
        return {
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
) -> list[StudyPlan]:
    """One plan per (problem, variant, batch size), validated: names, ``--set`` values, the
    space overrides, and one RunSpec per study built on the CPU (batch size against the data,
    budget against the problem) before anything is stored or logged."""
    from suite.engine.loop import preflight

    fixed = dict(fixed)
    space_overrides = dict(space_overrides)
    if seeds < 1:
        raise TuneError(f"--seeds={seeds} is out of range: must be at least 1")
    combos = [v.components(p) for p in problems for v in variant_list]
    check_space_overrides(registry, combos, space_overrides)
    plans = []
    for problem in problems:
        for variant in variant_list:
            comps = variant.components(problem)
            fixed_here = {k: _coerce(registry, comps, k, v) for k, v in fixed.items() if _has_param(registry, comps, k)}
            space = search_space(registry, comps, fixed_here, space_overrides)
            for b in batch_sizes:
                plan = StudyPlan(problem, variant, int(b), budget, objective, seeds, tuple(space.items()),
                                 tuple(sorted(fixed_here.items())), eval_every)
                spec = plan.spec(registry, {}, seed=0)
                try:
                    preflight([spec], registry)
                except SpecError as exc:
                    raise TuneError(str(exc).replace("--steps", "--budget steps:N")) from None
                plans.append(plan)
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
    def done(self, key: str, result: RunResult) -> None: ...
    def tag(self, key: str, tags: dict[str, Any]) -> None: ...
    def interrupted(self, key: str) -> None: ...
    def echo(self, line: str) -> None: ...


@dataclass
class TrialObjective:
    """The Optuna objective of one study: suggest, resolve the RunSpecs, train, report, prune."""

    plan: StudyPlan
    registry: Registry
    device: str
    sink: TrialSink
    worker: str = "main"

    def __call__(self, trial: optuna.Trial) -> float:
        plan = self.plan
        values = {key: space.suggest(trial, key) for key, space in plan.space}
        trial.set_user_attr(STUDY_OVERRIDES, values)
        trial.set_user_attr(TRIAL_WORKER, self.worker)
        try:
            specs = [plan.spec(self.registry, values, seed) for seed in range(plan.seeds)]
        except SuiteError as exc:  # a combination the component refuses, e.g. nesterov without momentum
            self._record(trial, "failed", None, str(exc))
            raise TrialFailed(str(exc)) from None
        trial.set_user_attr(TAG_SPEC_HASHES, [s.hash for s in specs])
        values_per_seed: list[float] = []
        keys = [f"{plan.name}#{trial.number}#{i}" for i in range(len(specs))]
        state, value, reason = "COMPLETE", None, ""
        for i, spec in enumerate(specs):
            result = self._run(trial, spec, keys[i], prune=i == 0)
            if result.status == "completed":
                total = result.history[-1][0] if result.history else 1
                values_per_seed.append(plan.objective.value(result, total))
                continue
            if result.status == "stopped":
                state, reason = "PRUNED", f"pruned at step {result.history[-1][0]}"
            elif result.status == "diverged":
                state, reason = "PRUNED", f"diverged: {result.reason}"
                value = plan.objective.watched(result.final) if result.history else None
                self._record(trial, "diverged", value, result.reason)
            else:
                state, reason = "FAIL", result.reason
                self._record(trial, "failed", None, result.reason)
            keys = keys[: i + 1]
            break
        else:
            value = sum(values_per_seed) / len(values_per_seed)
            self._record(trial, "completed", value, "")
            trial.set_user_attr(TAG_VALUES, values_per_seed)
        self._finish_runs(trial, keys, state, value)
        self._echo_trial(trial, values, state, value, reason)
        if state == "PRUNED":
            raise optuna.TrialPruned(reason)
        if state == "FAIL":
            raise TrialFailed(reason)
        return value

    def _run(self, trial: optuna.Trial, spec: RunSpec, key: str, *, prune: bool) -> RunResult:
        plan = self.plan
        seed_index = spec.seed
        self.sink.start(key, plan.name, spec, "trial", {TAG_STUDY: plan.name, TAG_TRIAL: trial.number,
                                                        TAG_SEED_INDEX: seed_index, TAG_DEVICE: self.device})
        history: list[tuple[int, dict[str, float]]] = []

        def on_eval(step: int, metrics: dict[str, float]) -> None:
            self.sink.eval(key, step, metrics)
            history.append((step, metrics))
            if not prune or step == 0 or divergence(spec, history):
                return  # a diverging run is stopped by the engine and recorded as diverged
            v = plan.objective.intermediate(history)
            if not math.isfinite(v):
                return
            trial.report(v, step)
            if trial.should_prune():
                raise StopRun(f"pruned by the {type(trial.study.pruner).__name__} at step {step}")

        try:
            result = train(spec, self.device, self.registry, on_eval)
        except BaseException:
            self.sink.interrupted(key)
            raise
        self.sink.done(key, result)
        return result

    def _record(self, trial: optuna.Trial, status: str, value: float | None, reason: str) -> None:
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

    def _echo_trial(self, trial: optuna.Trial, values: Mapping[str, Any], state: str, value: float | None,
                    reason: str) -> None:
        shown = " ".join(f"{short_name(k)}={format_value(v)}" for k, v in values.items())
        outcome = f"{value:.5g}" if state == "COMPLETE" else f"{state.lower()} ({reason})"
        self.sink.echo(f"[{self.plan.name}] trial {trial.number}: {outcome}  {shown}")


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
