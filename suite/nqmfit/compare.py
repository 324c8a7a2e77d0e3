"""Prediction against measurement: a fit run's predicted steps and critical batch sizes beside
the curve measured from a grid of runs (:mod:`.measure`), counted from the same loss level (the
checkpoint's validation loss) to the same target (the fit's ``--target-loss``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from suite.errors import SpecError
from suite.nqmfit.fit import KIND, _crit, _num
from suite.nqmfit.measure import MeasuredCurve, load_runs, measured_curve
from suite.nqmfit.predict import ADAM_P, MOMENTUM
from suite.vocab import TAG_KIND

# a measured optimizer → the fitted NQM's method that models it (the metric key of its prediction)
MODELS = {"sgd": "SGD", "adam": f"Adam_as_precond_p{ADAM_P:g}", "momentum": f"momentum_beta{MOMENTUM:g}"}


@dataclass
class MeasuredAgainstPredicted:
    """One optimizer: the measured curve, the predicted steps at the same batch sizes, both
    critical batch sizes and their ratio (predicted / measured)."""

    optimizer: str
    measured: MeasuredCurve
    predicted_steps: list[float]
    predicted_critical: float | None
    ratio: float | None


def compare(client, fit_run_id: str, experiment: str, optimizers: list[str],
            average: str = "steps") -> tuple[dict, list[MeasuredAgainstPredicted]]:
    """(the fit's start and target losses, one :class:`MeasuredAgainstPredicted` per optimizer); ``average`` as
    :func:`suite.nqmfit.measure.measured_curve` takes it."""
    run = client.get_run(fit_run_id)
    if run.data.tags.get(TAG_KIND) != KIND:
        raise SpecError(f"run {fit_run_id} is not an nqm fit run; give the run id `suite nqm fit` printed")
    p, m = run.data.params, run.data.metrics
    if p.get("target_loss") in (None, "None"):
        raise SpecError(f"fit run {fit_run_id} has no --target-loss; fit again with the measurement's target")
    levels = {"start": m["checkpoint.val_loss"], "target": float(p["target_loss"]), "problem": p["problem"]}
    out = []
    for opt in optimizers:
        if opt not in MODELS:
            raise SpecError(f"--optimizers: no NQM model of {opt!r}; one of {', '.join(MODELS)}")
        runs = load_runs(client, experiment, opt, p["problem"])
        if not runs:
            raise SpecError(f"no {opt} runs of {p['problem']} in experiment {experiment!r}; run the grid first")
        curve = measured_curve(runs, levels["start"], levels["target"], average)
        key = MODELS[opt]
        pred = {h.step: h.value for h in client.get_metric_history(fit_run_id, f"pred.steps.{key}")}
        steps = [pred.get(int(b), math.inf) for b in curve.batch_sizes]
        crit = m.get(f"pred.critical_batch_size.{key}", math.inf)
        ratio = crit / curve.critical if curve.critical and math.isfinite(curve.critical) else None
        out.append(MeasuredAgainstPredicted(opt, curve, steps, crit, ratio))
    return levels, out


def markdown(levels: dict, comparisons: list[MeasuredAgainstPredicted], average: str = "steps") -> str:
    """The comparison as a Markdown table: steps per batch size, then the critical batch sizes."""
    sizes = comparisons[0].measured.batch_sizes
    head = "| B | " + " | ".join(f"{c.optimizer} measured (lr) | {c.optimizer} predicted" for c in comparisons) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(comparisons))]
    for i, b in enumerate(sizes):
        cells = []
        for c in comparisons:
            mi = c.measured.batch_sizes.index(b) if b in c.measured.batch_sizes else None
            meas = "—" if mi is None else f"{_num(c.measured.steps[mi])} ({c.measured.lrs[mi]:g})"
            cells += [meas, _num(c.predicted_steps[i]) if i < len(c.predicted_steps) else "—"]
        rows.append(f"| {b:g} | " + " | ".join(cells) + " |")
    crit = []
    for c in comparisons:
        seeds = ", ".join(_crit(x, c.measured.batch_sizes[-1]) for x in c.measured.per_seed_critical)
        label = "seeds" if average == "steps" else "leaving out each seed"
        crit += [f"**{_crit(c.measured.critical, c.measured.batch_sizes[-1])}** ({label}: {seeds})",
                 f"**{_crit(c.predicted_critical, c.measured.batch_sizes[-1])}**"
                 + (f" ({c.ratio:.2g}×)" if c.ratio is not None and math.isfinite(c.ratio) else "")]
    rows.append("| B* | " + " | ".join(crit) + " |")
    return "\n".join(rows)
