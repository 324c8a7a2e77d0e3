"""The measured side of the comparison: steps between two validation-loss levels, read from the
validation-loss histories of a grid of runs, against the batch size, and its critical batch size.

The fitted NQM starts at the checkpoint; a measurement from initialisation counts the steps a run
needs to come down to the checkpoint's loss as well, which the NQM does not model. Both sides are
therefore counted from the same loss level: a run's steps are from its first crossing of the
checkpoint's validation loss to its first crossing of the target, each crossing interpolated
linearly in the step between the two evaluations around it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from suite.critical import critical_batch_size

History = Sequence[tuple[int, float]]  # (step, validation loss), ascending steps


def crossing(history: History, level: float) -> float:
    """The step at which the loss first reaches ``level`` or below, interpolated linearly between
    the evaluation before and the first one at or below; 0 if the first evaluation already is;
    ``inf`` if none is."""
    prev: tuple[int, float] | None = None
    for step, loss in history:
        if math.isfinite(loss) and loss <= level:
            if prev is None or prev[1] <= loss:
                return float(step)
            return prev[0] + (step - prev[0]) * (prev[1] - level) / (prev[1] - loss)
        prev = (step, loss) if math.isfinite(loss) else None
    return math.inf


def steps_between(history: History, start: float, target: float) -> float:
    """Steps from the first crossing of ``start`` to the first crossing of ``target`` (< start);
    ``inf`` if the target is never reached."""
    if not target < start:
        raise ValueError(f"the target {target} must lie below the start {start}")
    end = crossing(history, target)
    return end - crossing(history, start) if math.isfinite(end) else math.inf


@dataclass
class MeasuredCurve:
    """Fewest steps (mean over seeds, at the best lr of the grid) at each batch size, that lr, the
    critical batch size of that curve (:func:`suite.critical.critical_batch_size`), and per seed:
    its own critical batch size (its curve at its own best lr per batch size), or, for a curve of
    the seeds' mean loss, that of the mean of the other seeds (leave one out)."""

    batch_sizes: list[float]
    steps: list[float]
    lrs: list[float]
    critical: float | None
    per_seed_critical: list[float | None]


def mean_history(histories: Sequence[History]) -> History:
    """The mean of several runs' validation losses at the steps all of them evaluated (a diverged
    run's missing or non-finite losses make the mean infinite from there on)."""
    per = [dict(h) for h in histories]
    steps = sorted(set().union(*per))
    out = []
    for step in steps:
        vals = [p.get(step, math.inf) for p in per]
        out.append((step, sum(vals) / len(vals) if all(math.isfinite(v) for v in vals) else math.inf))
    return out


def measured_curve(runs: Iterable[tuple[int, float, int, History]], start: float, target: float,
                   average: str = "steps") -> MeasuredCurve:
    """The curve of ``runs``: (batch size, lr, seed, validation-loss history) each, one
    optimizer's grid. ``average="steps"``: each run's own steps between the levels (its first
    crossings, the suite's ``steps_to_target``), averaged over seeds; a (batch size, lr) whose
    seeds do not all reach the target counts as never. ``average="loss"``: the steps between the
    levels of the seeds' mean validation loss, an estimate of the expected loss, which is what the
    NQM predicts (a single run's first crossing comes early where its loss fluctuates)."""
    if average not in ("steps", "loss"):
        raise ValueError(f"average must be 'steps' or 'loss', got {average!r}")
    runs_list = list(runs)
    cells: dict[tuple[int, float], dict[int, float]] = {}
    grouped: dict[tuple[int, float], list[History]] = {}
    for b, lr, seed, history in runs_list:
        cells.setdefault((b, lr), {})[seed] = steps_between(history, start, target)
        grouped.setdefault((b, lr), []).append(history)
    if average == "loss":
        mean = {key: steps_between(mean_history(hs), start, target) for key, hs in grouped.items()}
        cells_for_curve = {key: {0: v} for key, v in mean.items()}
    else:
        cells_for_curve = cells
    sizes = sorted({b for b, _ in cells})
    seeds = sorted({s for cell in cells.values() for s in cell})
    steps, lrs = [], []
    n = len(seeds) if average == "steps" else 1
    for b in sizes:
        mean = {lr: sum(c.values()) / len(c) for (bb, lr), c in cells_for_curve.items() if bb == b and len(c) == n}
        lr = min(mean, key=mean.get) if mean else math.nan
        steps.append(mean[lr] if mean else math.inf)
        lrs.append(lr)
    per_seed: list[float | None] = []
    for s in seeds:
        if average == "loss":  # leave seed s out: the spread of the mean-loss curve's critical batch size
            rest = [r for r in runs_list if r[2] != s]
            per_seed.append(measured_curve(rest, start, target, "loss").critical if rest else None)
            continue
        best = [min((c[s] for (bb, _), c in cells.items() if bb == b and s in c), default=math.inf) for b in sizes]
        per_seed.append(critical_batch_size(sizes, best))
    return MeasuredCurve([float(b) for b in sizes], steps, lrs, critical_batch_size(sizes, steps), per_seed)


def load_runs(client, experiment: str, optimizer: str, problem: str) -> list[tuple[int, float, int, History]]:
    """The runs of ``optimizer`` on ``problem`` in MLflow ``experiment``, as :func:`measured_curve`
    takes them. ``sgd`` is the suite's sgd without momentum, ``momentum`` the suite's sgd with
    ``optimizer.momentum`` = 0.9 (the β the NQM predicts)."""
    from suite.nqmfit.predict import MOMENTUM
    from suite.vocab import FAILED, TAG_STATUS

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    name, beta = ("sgd", MOMENTUM) if optimizer == "momentum" else (optimizer, 0.0)
    query = f"params.optimizer = '{name}' and params.problem = '{problem}'"
    out = []
    for run in client.search_runs([exp.experiment_id], query, max_results=5000):
        if run.data.tags.get(TAG_STATUS) in (FAILED, "running"):
            continue  # a diverged run is a result: it may have crossed the target before diverging
        p = run.data.params
        if name == "sgd" and float(p.get("optimizer.momentum", 0.0)) != beta:
            continue
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss"))
        out.append((int(p["batch_size"]), float(p["optimizer.lr"]), int(p["seed"]), hist))
    return out
