"""A study's trials as they train: :class:`TrialObjective` (suggest, resolve the RunSpecs,
train, report, prune, conclude), and :func:`train_populations`, which trains several studies'
populations as one stack where their runs stack (:func:`share_key`). A trial's rows (one per
seed) are rows of that stack. What a trial runs is announced to a :class:`TrialSink` (MLflow in
the parent process, :mod:`suite.tuning.tracking`; a pool event from a worker).

Imports: Optuna and the engine (:mod:`suite.engine.units` only when a population trains), the
study plan and objective of :mod:`suite.tuning`; not MLflow.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from suite import journal
from suite.engine.evalbatch import EvalBatches
from suite.engine.loop import RunResult, StopRun, divergence
from suite.errors import SuiteError, TrialFailed
from suite.exec.phases import CLOCK
from suite.registry import Registry
from suite.specs.naming import value_text
from suite.specs.spec import RunSpec
from suite.tuning.labels import short_name
from suite.tuning.objective import REACHED, at_target_is_completed, target_step_limit
from suite.tuning.plan import StudyPlan
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
            with journal.burst(trial.storage):  # this trial's writes under one lock of a journal file
                with CLOCK.phase("optuna"):  # the sampler's proposal (TPE, constant liar) and its storage writes
                    values = {key: space.suggest(trial, key) for key, space in plan.space}
                    trial.set_user_attr(STUDY_OVERRIDES, values)
                    trial.set_user_attr(TRIAL_WORKER, self.worker)
                try:
                    specs = [plan.spec(self.registry, values, seed) for seed in plan.tuning_seeds]
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
            self._record(trial, "completed", value, "", {TAG_VALUES: [plan.objective.value(r) for r in results]})
            outcome = (TrialState.COMPLETE, value, "")
        self._finish_runs(trial, [r.key for r in state.rows], outcome[0].name, value)
        return outcome, self._trial_line(trial, state.values, outcome[0].name, value, outcome[2])

    def _record(self, trial: optuna.Trial, status: str, value: float | None, reason: str,
                more: Mapping[str, Any] | None = None) -> None:
        """How the trial's runs ended, on the trial (its ``suite.*`` attributes, ``more`` too)."""
        with CLOCK.phase("optuna"), journal.burst(trial.storage):
            trial.set_user_attr(TRIAL_STATUS, status)
            trial.set_user_attr(TRIAL_VALUE, value if value is not None and math.isfinite(value) else None)
            if reason:
                trial.set_user_attr(TAG_REASON, reason[:1000])
            for key, v in (more or {}).items():
                trial.set_user_attr(key, v)

    def _finish_runs(self, trial: optuna.Trial, keys: list[str], state: str, value: float | None) -> None:
        tags: dict[str, Any] = {TAG_TRIAL_STATE: state}
        if value is not None:
            tags[TAG_TRIAL_VALUE] = repr(value)
        for key in keys:
            self.sink.tag(key, tags)

    def _trial_line(self, trial: optuna.Trial, values: Mapping[str, Any], state: str, value: float | None,
                    reason: str) -> str:
        shown = " ".join(f"{short_name(k)}={value_text(v, 3)}" for k, v in values.items())
        outcome = f"{value:.5g}" if state == "COMPLETE" else f"{state.lower()} ({reason})"
        return f"[{self.plan.name}] trial {trial.number}: {outcome}  {shown}"


def share_key(plan: Any, registry: Any) -> tuple | None:
    """The studies with one key train their populations as one stack: the stacked engine's
    :func:`suite.engine.stack.stack_key` of the study's runs (problem and its parameters,
    sampler, batch size, budget, evaluation schedule). None: the study's components do not
    stack (it trains alone)."""
    from suite.engine.stack import stack_key, stackable

    spec = plan.spec(registry, {}, seed=0)
    return stack_key(spec) if stackable(spec, registry) else None


Outcome = tuple[TrialState, float | None, str]  # what Optuna is told of a trial: state, value, reason


def train_populations(parts: Sequence[tuple[TrialObjective, Sequence[optuna.Trial]]]) -> list[list[Outcome]]:
    """Train the populations of one or more studies as one unit (``parts``: each study's
    objective and its claimed trials): rows that stack (:func:`suite.engine.stack.stack_key`:
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

    storages = [trial.storage for _, trials in parts for trial in trials[:1]]

    @contextlib.contextmanager
    def eval_round() -> Iterator[None]:
        """One evaluation of the stack: the last one's evaluations to the trackers first (never
        under the journal's lock), then this one's reports to the pruners under one lock of
        each journal file (:func:`suite.journal.burst`)."""
        flush()
        with journal.burst(*storages):
            yield

    first = parts[0][0]
    running = {row.key: row for row in rows}
    try:
        for j, result in run_unit([r.spec for r in rows], first.device, first.registry, on_eval, engine=first.engine,
                                  eval_round=eval_round):
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
