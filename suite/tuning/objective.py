"""What a trial minimises (:class:`Objective`: ``final``, ``best``, ``steps-to-target:X``, each
on any logged metric), read from its seeds' evaluation histories, and the rules around a target:
stop a run once it reaches it (:func:`stop_at_target`, :func:`at_target_is_completed`) and prune
a trial that needs more steps than the median completed one (:func:`target_step_limit`).

Imports: Optuna, the engine's run result and divergence test, :mod:`suite.specs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna

from suite.crossing import interpolated_crossing
from suite.engine.loop import RunResult, StopRun, divergence
from suite.engine.target import watched_key
from suite.errors import TuneError
from suite.params import to_number
from suite.specs.spec import RunSpec, loss_target_ok

if TYPE_CHECKING:
    from suite.tuning.trials import TrialSink

EVAL_GROWTH = 0.05  # steps-to-target: evaluations at most 5% of the step apart
REACHED = "reached the target"  # the reason a run stopped at its target (recorded as completed)
History = Sequence[tuple[int, Mapping[str, float]]]


@dataclass(frozen=True)
class Objective:
    """What a trial minimises, from its seeds' evaluation histories.

    ``final``: the last value; ``best``: the minimum over the run; ``steps-to-target:X``: the
    first step at which the value is <= X, evaluated on a geometric schedule
    (:data:`EVAL_GROWTH`, evaluations at most 5% apart) and interpolated log-linearly between the
    evaluations around the crossing, so that settings a few percent apart do not tie. A trial's value is read from the
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
        ``final``/``best`` of the mean curve, or the first step at which it is <= the target,
        interpolated log-linearly from the evaluation before (:func:`suite.crossing.interpolated_crossing`,
        as the report reads steps; the first step at or above the target for a ``max`` metric).
        A trial that never reaches the target ran its whole budget, ``total_steps`` (by default
        the last evaluated step)."""
        curve = self.mean_curve(histories)
        if self.kind == "final":
            return curve[-1][1]
        if self.kind == "best":
            return (max if self.direction == "max" else min)(v for _, v in curve)
        for i, (step, v) in enumerate(curve):
            if self._at_target(v):
                if self.direction == "min" and i and math.isfinite(curve[i - 1][1]):
                    return interpolated_crossing(curve[i - 1:i + 1], self.target)  # between evaluations
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
            return "expected-risk-else-val-loss; mean-curve-over-seeds; log-linear-crossing"
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
