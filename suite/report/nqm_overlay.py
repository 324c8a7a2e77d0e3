"""The NQM fitted to a network (``suite nqm fit``, a run of kind ``nqm_fit`` in the same MLflow
experiment) held against the measured scaling curve: predicted steps and critical batch size per
method, and how far apart prediction and measurement are.

The prediction's methods map onto the measured ones by :data:`MEASURED_AS`; a predicted method with
no measured counterpart, or a measured one with no prediction (SGD + EMA), is left out of the
comparison and said so. A critical batch size predicted within a factor :data:`AGREE` of the
measured one agrees; anything else is a miss, stated with the numbers that explain it.

The prediction counts steps from the fit's checkpoint (its validation loss ``checkpoint.val_loss``)
to the target; so the measured curve it is held against counts each re-evaluated run's steps from
its own crossing of that loss to its crossing of the target (:func:`from_checkpoint`), both read
by :func:`suite.crossing.interpolated_crossing`. A fit that logged no checkpoint loss is held
against the steps from initialisation, and the comparison says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from suite.critical import critical_batch_size
from suite.crossing import interpolated_crossing
from suite.report import scaling
from suite.report.reader import Runs
from suite.report.stats import Estimate, study_estimate

if TYPE_CHECKING:
    from suite.report.claims import Sweep

KIND = "nqm_fit"  # suite.nqmfit.fit.KIND: the run `suite nqm fit` logs its fit and prediction on
AGREE = 2.0  # issue 26: the predicted critical batch size within 2× of the measured one
STEPS = "pred.steps."
CRITICAL = "pred.critical_batch_size."
CHECKPOINT_LOSS = "checkpoint.val_loss"
EIGENVALUE = "nqm.eigenvalue"  # step = rank, 1 the largest
QUADRATIC_RISK = "nqm.quadratic_risk"
ATTAINABLE_LOSS = "reference.attainable_val_loss"
FAR = 2.0  # a quadratic start risk more than this factor from the measured excess: far from its quadratic model
# the prediction's metric keys (suite.nqmfit.fit._key of its method names) -> the measured method
MEASURED_AS = {"SGD": "SGD", "momentum_beta_tuned": "momentum β tuned", "Adam_as_precond_p0.5": "adam"}
PREDICTED_AS = {"SGD": "SGD", "momentum_beta0.9": "momentum β = 0.9", "momentum_beta_tuned": "momentum β tuned",
                "Adam_as_precond_p0.5": "Adam as H^(−1/2)"}


@dataclass
class Fit:
    """One ``nqm_fit`` run: per method (its metric key) the predicted steps at each batch size and
    the predicted critical batch size (``inf``: beyond the largest batch size predicted)."""

    run_id: str
    problem: str
    params: dict[str, str]
    steps: dict[str, dict[int, float]] = field(default_factory=dict)
    critical: dict[str, float] = field(default_factory=dict)
    checkpoint_loss: float | None = None  # the validation loss at the fit's checkpoint, where its steps start
    top_eigenvalue: float | None = None  # h_max of the Hessian at the checkpoint (nqm.eigenvalue, rank 1)
    quadratic_risk: float | None = None  # ½gᵀH⁻¹g: the quadratic model's excess loss at the checkpoint
    attainable_loss: float | None = None  # the reference run's lowest validation loss

    def largest(self, key: str) -> int:
        return max(self.steps.get(key, {0: 0.0}))


def read_fits(runs: Runs) -> dict[str, Fit]:
    """Problem -> the latest ``nqm_fit`` run of the experiment for it (none where the experiment
    has none, or the runs were not read from a store)."""
    source = runs.source
    if source is None:
        return {}
    eid = source.experiment_id(runs.experiment)
    if eid is None:
        return {}
    out: dict[str, Fit] = {}
    for run in sorted(source.runs(eid, KIND), key=lambda r: r.info.start_time):
        params = dict(run.data.params)
        problem = params.get("problem", "")
        metrics = dict(run.data.metrics)
        keys = {k[len(STEPS):] for k in metrics if k.startswith(STEPS)}
        steps = {k: {int(m.step): float(m.value) for m in source.history(run.info.run_id, STEPS + k)} for k in keys}
        critical = {k: float(metrics.get(CRITICAL + k, math.inf)) for k in keys}  # not logged: beyond the range
        eigen = [float(m.value) for m in source.history(run.info.run_id, EIGENVALUE)]
        out[problem] = Fit(run.info.run_id, problem, params, steps, critical, _finite(metrics.get(CHECKPOINT_LOSS)),
                           max(eigen) if eigen else None, _finite(metrics.get(QUADRATIC_RISK)),
                           _finite(metrics.get(ATTAINABLE_LOSS)))
    return out


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Overlay:
    """One method on one workload: the measured and the predicted critical batch size, their ratio
    (predicted / measured), and the predicted / measured steps at each batch size both have."""

    method: str  # the measured method
    predicted_as: str  # what the fit modelled it as
    measured: float | None  # inf: beyond the largest measured batch size
    predicted: float
    largest_measured: int
    largest_predicted: int
    step_ratios: dict[int, float]
    measured_steps: dict[int, float] = field(default_factory=dict)  # per batch size, as held against the prediction
    from_checkpoint: bool = False  # measured from the fit's checkpoint loss (else from initialisation)
    evidence: tuple[str, ...] = ()  # what the fit and the runs show about a miss (:func:`evidence`)

    @property
    def ratio(self) -> float | None:
        """Predicted / measured critical batch size; ``None`` where either lies beyond its range or is undefined."""
        if self.measured is None or not (math.isfinite(self.measured) and math.isfinite(self.predicted)):
            return None
        return self.predicted / self.measured

    @property
    def agrees(self) -> bool | None:
        """Within :data:`AGREE` of each other; ``None`` where that cannot be told (both beyond their ranges)."""
        r = self.ratio
        if r is not None:
            return 1 / AGREE <= r <= AGREE
        if self.measured is None:
            return None
        if math.isinf(self.measured) and math.isinf(self.predicted):
            return None
        if math.isinf(self.measured):  # measured beyond its range: the prediction must be too, within 2×
            return self.predicted * AGREE >= self.largest_measured
        return self.measured * AGREE >= self.largest_predicted  # predicted beyond its range

    def verdict(self) -> str:
        found = self.agrees
        if found is None:
            return "cannot tell: both beyond the batch sizes tried"
        if found:
            beyond = self.ratio is None
            return f"within {AGREE:g}×" + (" as far as the batch sizes tried show" if beyond else "")
        return "miss: " + self.explanation()

    def explanation(self) -> str:
        """Why a miss, from what was measured: which side is larger, the predicted / measured steps
        at the smallest and largest batch size, and the :attr:`evidence` (the fit's start against
        the measured excess loss, the network's best lr against the NQM's stable limit)."""
        pred_larger = (self.predicted > self.measured) if self.measured is not None else True
        big = max(self.step_ratios) if self.step_ratios else None
        small = min(self.step_ratios) if self.step_ratios else None
        where = (f"; predicted / measured steps ×{self.step_ratios[small]:.2g} at B={small}, "
                 f"×{self.step_ratios[big]:.2g} at B={big}") if big is not None and small is not None else ""
        side = ("the fitted NQM keeps scaling perfectly to larger batches than the network" if pred_larger else
                "the fitted NQM stops scaling at smaller batches than the network")
        start = ("" if self.from_checkpoint else
                 "; the measured steps count from initialisation, the NQM's from the checkpoint")
        return side + where + "".join(f"; {e}" for e in self.evidence) + start


def from_checkpoint(runs: Runs, tuned: scaling.Tuned, start: float, target: float) -> float:
    """The measured steps from ``start`` (the fit's checkpoint loss) to ``target`` of one tuned
    cell: per study its winner's re-evaluated runs, each from its own crossing of ``start`` to its
    crossing of ``target`` on ``val_loss``, the mean of log2 over seeds, the median over studies
    (as :meth:`suite.report.scaling.Tuned.log2_steps`); ``inf`` where no run got there."""
    per_study = {}
    for k, recs in tuned.study_runs.items():
        per_seed = {}
        for r in recs:
            hist = runs.history(r, scaling.VAL)
            steps = interpolated_crossing(hist, target) - interpolated_crossing(hist, start)
            if 0 < steps < math.inf:
                per_seed[r.seed] = math.log2(steps)
        per_study[k] = per_seed
    return _steps(study_estimate(per_study))


def measured_steps(fit: Fit, sweep: Sweep, method: str, runs: Runs | None) -> tuple[dict[int, float], bool]:
    """Per batch size, the measured steps the prediction is held against, and whether they count
    from the fit's checkpoint (else from initialisation: no checkpoint loss, no runs to read, or a
    target not below it)."""
    cells = {b: sweep.tuned[(method, b)] for b in sweep.sizes(method)}
    start = fit.checkpoint_loss
    if runs is not None and start is not None and sweep.target < start and all(t.study_runs for t in cells.values()):
        return {b: from_checkpoint(runs, t, start, sweep.target) for b, t in cells.items()}, True
    return {b: _steps(t.log2_steps()) for b, t in cells.items()}, False


def _steps(est: Estimate) -> float:
    """Steps from a mean log2 estimate; ``inf`` where no run reached the target."""
    return 2 ** est.mean if est.n else math.inf


def compare(fit: Fit, sweep: Sweep, runs: Runs | None = None) -> list[Overlay]:
    """Each predicted method that the sweep measured, held against its measurement (counted from
    the fit's checkpoint where the runs can be read: :func:`measured_steps`)."""
    out = []
    for key, steps in fit.steps.items():
        method = MEASURED_AS.get(key)
        if method is None or method not in sweep.methods:
            continue
        measured_at, from_ck = measured_steps(fit, sweep, method, runs)
        sizes = sorted(measured_at)
        measured = critical_batch_size(sizes, [measured_at[b] for b in sizes])  # a cell never reached: efficiency 0
        ratios = {b: steps[b] / measured_at[b] for b in sizes
                  if b in steps and steps[b] > 0 and 0 < measured_at[b] < math.inf}
        out.append(Overlay(method, PREDICTED_AS.get(key, key), measured, fit.critical.get(key, math.inf),
                           max(sizes), fit.largest(key), ratios, measured_at, from_ck,
                           evidence(fit, sweep.tuned[(method, max(sizes))], key)))
    return out


def evidence(fit: Fit, largest: scaling.Tuned, key: str) -> tuple[str, ...]:
    """What the fit and the runs show about how well the NQM can match the network, each only where
    its numbers were logged: the quadratic model's start risk ½gᵀH⁻¹g against the measured excess
    loss at the checkpoint (its loss above the reference run's lowest); for SGD and momentum tuned by
    Optuna studies, the network's best lr at the largest batch size (``largest``: that tuned cell)
    against the NQM's stable limit, lr·h_max < 2(1 + β) (β = 0 for SGD): each study's winner with its
    own β, the study whose share of its limit is the median (the lower one of an even count). Adam's
    lr is not on the NQM's scale (it is divided by the gradient's running RMS), so it has no such line;
    nor has an lr grid's cell (no study winners)."""
    out = []
    ck, q, floor = fit.checkpoint_loss, fit.quadratic_risk, fit.attainable_loss
    if ck is not None and q is not None and floor is not None and ck > floor:
        r = q / (ck - floor)
        out.append(f"the fit's quadratic start risk ½gᵀH⁻¹g is {q:.3g} against a measured excess loss of "
                   f"{ck - floor:.3g} at the checkpoint (×{r:.2g})"
                   + (": the network there is far from its quadratic model" if not 1 / FAR <= r <= FAR else ""))
    h = fit.top_eigenvalue
    if h and key in ("SGD", "momentum_beta_tuned"):
        # each study's winner: its lr and (for momentum) its β; the study whose share of the limit is the median
        shares = []
        for k, lr in largest.study_lrs.items():
            runs = largest.study_runs.get(k) or []
            beta = runs[0].param("optimizer.momentum") if runs else (0.0 if key == "SGD" else None)
            if beta is not None:
                shares.append((lr * h / (2 * (1 + float(beta))), lr))
        if shares:
            x, lr = sorted(shares)[(len(shares) - 1) // 2]
            limit = "2/h_max" if key == "SGD" else "2(1 + β)/h_max"
            n = len(shares)
            out.append(f"at B={largest.batch_size} the network's best lr, {lr:.3g} (the median of {n} "
                       f"stud{'y' if n == 1 else 'ies'}' winners), is ×{x:.2g} the NQM's stable limit {limit} "
                       f"(h_max {h:.3g})" + (": the network trains stably where the quadratic diverges" if x > 1
                                             else ""))
    return tuple(out)


def left_out(fit: Fit, sweep: Sweep) -> list[str]:
    """The measured methods the fit predicts nothing for."""
    predicted = {MEASURED_AS.get(k) for k in fit.steps}
    return [m for m in sweep.methods if m not in predicted]
