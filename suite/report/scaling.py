"""Batch-size scaling on the NQM: steps to a target risk, each method at its own best lr.

The benchmark runs an lr sweep per (method, batch size) (sections named ``scaling…``). Here:

* :func:`steps_to_target` reads the first step a run's *expected* risk (``theory_risk``, or
  ``theory_avg_risk`` for its averaged model) reaches the target, interpolating log-linearly
  between evaluations;
* :func:`tune` picks, per (method, batch size, seed), the lr that reaches it in the fewest steps;
* :func:`closed_form_steps` computes the same from the NQM closed forms (expected θ₀² = 1): the
  exact optimum of :func:`suite.theory.optimum` over the hyperparameters the method tunes;
* :func:`reference` reads that optimum as the runs read their steps (:func:`closed_form_as_measured`:
  on their evaluation steps, interpolated the same way), the value a cell is held against;
* :func:`regret` is a tuned cell's measured steps over its reference;
* :func:`predicted_critical_batch_size` and :func:`measured_critical_batch_size` apply the one
  definition of :func:`suite.critical.critical_batch_size` (50% efficiency against perfect
  scaling from the smallest batch size) to the closed-form curve and to the measured one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import combinations
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from suite.critical import critical_batch_size
from suite.crossing import interpolated_crossing as steps_to_target  # the runs' steps to a target
from suite.report.memo import on_record
from suite.report.stats import LEVEL, Estimate, crossed_studies, study_estimate
from suite.theory import Optimum, moment_recursion, optimum

if TYPE_CHECKING:
    from suite.report.reader import RunRecord, Runs

SCALING_PREFIX = "scaling"
NQM_TARGET = 0.02  # expected risk to reach (the NQM paper's 0.01 at d = 10^4; the default d here is 100)
RISK = "theory_risk"
AVG_RISK = "theory_avg_risk"
VAL, AVG_VAL = "val_loss", "avg_val_loss"  # what a problem without an expected risk is read by
AVERAGED_NAMES = {"ema": "EMA", "swa": "SWA"}


def method_of(record: RunRecord) -> str:
    """A short name for the optimizer of a run: ``SGD``, ``momentum β=0.9``, ``precond p=0.5``, and
    ``momentum β tuned`` for a study that tunes the momentum with the lr."""
    opt = record.param("optimizer")
    if opt == "sgd" and record.trial is not None and "space.optimizer.momentum" in record.study_params:
        return "momentum β tuned"
    if opt == "sgd":
        beta = float(record.param("optimizer.momentum", 0.0) or 0.0)
        return "SGD" if beta == 0 else f"momentum β={beta:g}"
    if opt == "precond":
        return f"precond p={float(record.param('optimizer.p', 0.0)):g}"
    return str(opt)


def risk_keys(record: RunRecord) -> tuple[str, str]:
    """The metrics whose steps to the target a run is read by, for its iterate and its averaged
    model: the NQM's expected risk (``theory_risk``, ``theory_avg_risk``), except on a named problem
    other than ``nqm`` that logs none: its validation loss (``val_loss``, ``avg_val_loss``), as
    ``steps-to-target`` tuning watches them."""
    if RISK in record.final or record.param("problem") in (None, "nqm"):
        return RISK, AVG_RISK
    return VAL, AVG_VAL


def series_of(record: RunRecord) -> list[tuple[str, str]]:
    """The (method, metric) series one run provides: its iterate, and its averaged model if any
    (a tuned study's run: only the one its study tuned, the averaged model's if it has one)."""
    risk, avg_risk = risk_keys(record)
    out = [(method_of(record), risk)]
    avg = record.param("averager")
    if avg in AVERAGED_NAMES:
        decay = f" γ={float(record.param('averager.decay')):g}" if avg == "ema" and record.param("averager.decay") \
            is not None else ""
        out.append((f"{method_of(record)} + {AVERAGED_NAMES[avg]}{decay}", avg_risk))
    return out[-1:] if record.trial is not None else out


@dataclass
class Tuned:
    """One method at one batch size: per seed, each lr tried and the best one.

    From an lr grid (sections ``scaling…`` run as grids) every seed has its own best lr. From
    Optuna studies (a tuned experiment, R independent studies per cell) each study's best lr is
    its winner (:func:`_from_studies`): ``studies[k][seed]`` holds study k's winner's run on each
    fresh seed (the same seeds in every study) and ``study_lrs[k]`` its lr; ``tried[seed]``
    holds the median study's winner; ``ranked`` holds the lrs of that winner and of its
    re-evaluated trials that tie with it on missed seeds, best first: the near-optimal lrs whose
    spread stands for the best lr's uncertainty when there is one study."""

    method: str
    batch_size: int
    tried: dict[int, list[tuple[float, float, float]]] = field(default_factory=dict)  # seed -> (lr, steps, risk)
    ranked: list[float] = field(default_factory=list)  # Optuna: the re-evaluated trials' lrs, best first
    ceiling: float | None = None  # Optuna: the top of the lr's search space
    from_study: bool = False  # tuned by an Optuna study (else an lr grid)
    studies: dict[int, dict[int, tuple[float, float]]] = field(default_factory=dict)  # study -> seed -> (steps, final)
    study_lrs: dict[int, float] = field(default_factory=dict)  # study -> its winner's lr
    winner: RunRecord | None = None  # Optuna: a run of the study's winner (its params, its study's settings)
    seconds: dict[int, dict[int, float]] = field(default_factory=dict)  # Optuna: study -> seed -> seconds to target
    evals: tuple[int, ...] = ()  # the steps at which its runs evaluate the risk (those of its first run read)
    study_runs: dict[int, list[RunRecord]] = field(default_factory=dict)  # Optuna: study -> its winner's runs

    def lr_replicates(self) -> dict[int, float]:
        """Independent estimates of the best lr: per seed for an lr grid, per study for several
        studies, per rank of the re-evaluated trials for one study."""
        if len(self.study_lrs) > 1:
            return dict(self.study_lrs)
        return dict(enumerate(self.ranked)) if self.from_study and self.ranked else self.best_lrs()

    @property
    def lrs(self) -> list[float]:
        return sorted({lr for rows in self.tried.values() for lr, _, _ in rows})

    def log2_by_study(self) -> dict[int, dict[int, float]]:
        """log2 steps per study and seed (an lr grid: one "study", each seed at its best lr);
        a seed that never reached the target is left out."""
        if self.studies:
            return {k: {seed: math.log2(v) for seed, (v, _) in runs.items() if 0 < v < math.inf}
                    for k, runs in self.studies.items()}
        return {0: {seed: math.log2(v) for seed, v in self.steps().items() if 0 < v < math.inf}}

    @property
    def lr_top(self) -> float:
        """The largest lr the tuning could pick (the grid's top, or the search space's)."""
        return self.ceiling if self.ceiling is not None else max(self.lrs)

    def best(self, seed: int) -> tuple[float, float]:
        """(best lr, its steps) for one seed: fewest steps, then lowest final risk."""
        lr, steps, _ = min(self.tried[seed], key=lambda t: (t[1], t[2]))
        return lr, steps

    @property
    def seeds(self) -> list[int]:
        return sorted(self.tried)

    def steps(self) -> dict[int, float]:
        return {s: self.best(s)[1] for s in self.seeds}

    def best_lrs(self) -> dict[int, float]:
        return {s: self.best(s)[0] for s in self.seeds}

    def log2_steps(self, level: float = LEVEL) -> Estimate:
        """Mean log2 steps over seeds; over several studies the median of the studies' means, its
        interval covering studies and seeds (:func:`suite.report.stats.study_estimate`)."""
        return study_estimate(self.log2_by_study(), level)

    def log2_seconds(self, level: float = LEVEL) -> Estimate:
        """Mean log2 training seconds to the target (:func:`seconds_to`), as :meth:`log2_steps`
        (the studies' winners on the fresh seeds; a seed that never got there left out)."""
        return study_estimate({k: {seed: math.log2(v) for seed, v in per.items() if 0 < v < math.inf}
                               for k, per in self.seconds.items()}, level)


def log2_ratio(a: Tuned, b: Tuned, level: float = LEVEL) -> Estimate:
    """log2(steps of ``a`` / steps of ``b``), every study of ``a`` against every study of ``b``,
    paired on fresh seed: the median over the study pairs of the mean, with an interval over the
    seeds of the best studies' difference ± the larger study spread, which covers the one-sided
    tuning error (the t interval over seeds for one study each) (:func:`suite.report.stats.crossed_studies`)."""
    return crossed_studies(a.log2_by_study(), b.log2_by_study(), level)


def study_target(records: Sequence[RunRecord]) -> float | None:
    """The target of the tuned studies among ``records`` (``steps-to-target:X`` objectives), if
    they share one."""
    targets = {str(r.study_params.get("objective", "")) for r in records if r.trial is not None}
    if len(targets) != 1:
        return None
    kind, _, value = targets.pop().partition(":")
    try:
        return float(value) if kind == "steps-to-target" else None
    except ValueError:
        return None


def tune(runs: Runs, records: Sequence[RunRecord], target: float = NQM_TARGET) -> dict[tuple[str, int], Tuned]:
    """Steps to ``target`` for every (method, batch size, seed, lr) of ``records``, grouped:
    lr grids by :func:`_from_grid`, tuned studies' re-evaluation runs by :func:`_from_studies`."""
    out = _from_grid(runs, [r for r in records if r.trial is None], target)
    for (method, b), tuned in _from_studies(runs, [r for r in records if r.trial is not None], target).items():
        if (method, b) in out:  # a method both swept on an lr grid and tuned by a study: kept apart
            method = tuned.method = f"{method} (tuned)"
        out[(method, b)] = tuned
    return out


def _run_steps(runs: Runs, r: RunRecord, key: str, target: float) -> tuple[float, float]:
    """(steps to ``target``, final value) of one run's ``key``; a diverged run never gets there."""
    if r.status == "diverged":
        return math.inf, math.inf
    hist = runs.history(r, key)
    return on_record(r.memo, ("steps", key, target), hist,  # once per run, not once per bootstrap draw
                     lambda: (steps_to_target(hist, target), hist[-1][1] if hist else math.inf))


def seconds_to(runs: Runs, r: RunRecord, steps: float) -> float:
    """The training seconds run ``r`` had spent at step ``steps`` (its ``train_seconds`` history,
    evaluations excluded; a stacked run's: its share of its stack's), interpolated linearly
    between the evaluations around it; ``inf`` if it never got there (``steps`` infinite) or the
    run logged no clock."""
    from suite.vocab import TRAIN_SECONDS

    clock = runs.history(r, TRAIN_SECONDS) if math.isfinite(steps) else []
    prev = (0, 0.0)
    for step, secs in clock:
        if step >= steps:
            frac = (steps - prev[0]) / (step - prev[0]) if step > prev[0] else 1.0
            return prev[1] + frac * (secs - prev[1])
        prev = (step, secs)
    return math.inf


def _eval_steps(runs: Runs, r: RunRecord, key: str) -> tuple[int, ...]:
    """The steps at which run ``r`` evaluated ``key`` (a diverged run's: none, it stopped early)."""
    return () if r.status == "diverged" else tuple(step for step, _ in runs.history(r, key))


class _Scored(NamedTuple):
    """A re-evaluated trial of a study, as :func:`_from_studies` ranks it."""

    missed: int  # fresh seeds that did not reach the target
    mean: float  # mean log2 steps on the others (inf if none reached it)
    number: int
    lr: float
    per_seed: dict[int, tuple[float, float]]  # seed -> (steps, final value)


def _from_studies(runs: Runs, records: Sequence[RunRecord], target: float) -> dict[tuple[str, int], Tuned]:
    """Per study, its re-evaluated trials ranked by (fresh seeds that missed the target, mean log2
    steps on the others), the winner first: the one its tuning session named (``study_best``),
    which ranks them the same way on its objective, else the first. The R studies of a cell
    (experiment, method, batch size; study index 0..R-1) make one :class:`Tuned`: each study's
    winner's runs (``studies``), and the median study's in ``tried``, with the lrs of its trials
    that tie with it on missed seeds as the near-optimal lrs."""
    by_study: dict[str, dict[int, list[RunRecord]]] = {}
    for r in records:
        if r.status in ("completed", "diverged"):
            by_study.setdefault(r.study, {}).setdefault(r.trial, []).append(r)
    cells: dict[tuple[str, str, int], dict[int, tuple[_Scored, list[_Scored], RunRecord, RunRecord]]] = {}
    for trials in by_study.values():
        first = next(iter(trials.values()))[0]
        (method, key), = series_of(first)
        scored = []
        for number, recs in trials.items():
            per_seed = {r.seed: _run_steps(runs, r, key, target) for r in recs}
            reached = [math.log2(s) for s, _ in per_seed.values() if 0 < s < math.inf]
            mean = sum(reached) / len(reached) if reached else math.inf
            scored.append(_Scored(len(per_seed) - len(reached), mean, number, float(recs[0].param("optimizer.lr")),
                                  per_seed))
        scored.sort(key=lambda t: (t.missed, t.mean))
        named = [t for t in scored if t.number == first.study_best and math.isfinite(t.mean)]
        winner = named[0] if named else scored[0]
        near = [t for t in scored if t is not winner and t.missed == winner.missed and math.isfinite(t.mean)]
        cells.setdefault((first.section, method, first.batch_size), {})[first.study_index] = (
            winner, near, first, trials[winner.number])
    out: dict[tuple[str, int], Tuned] = {}
    for (section, method, b), studies in cells.items():
        order = sorted(studies, key=lambda k: (studies[k][0].missed, studies[k][0].mean, k))
        winner, near, first, recs = studies[order[(len(order) - 1) // 2]]  # the median study
        run = recs[0]
        tuned = Tuned(method, b, ceiling=_space_high(first), from_study=True,
                      ranked=[t.lr for t in [winner, *near] if math.isfinite(t.mean)],
                      studies={k: dict(w.per_seed) for k, (w, *_) in sorted(studies.items())},
                      study_lrs={k: w.lr for k, (w, *_) in sorted(studies.items())}, winner=run,
                      evals=_eval_steps(runs, run, series_of(run)[0][1]),
                      seconds={k: {r.seed: seconds_to(runs, r, w.per_seed[r.seed][0]) for r in rs}
                               for k, (w, _, _, rs) in sorted(studies.items())},
                      study_runs={k: list(rs) for k, (_, _, _, rs) in sorted(studies.items())})
        for seed, (steps, final) in winner.per_seed.items():
            tuned.tried[seed] = [(winner.lr, steps, final)]
        if (method, b) in out:  # two experiments tune one method: tell them apart
            method = tuned.method = f"{method} ({section})"
        out[(method, b)] = tuned
    return out


def _space_high(record: RunRecord) -> float | None:
    """The top of the lr's search space of a study's run (from its parent's ``space.optimizer.lr``)."""
    import json

    from suite.params import Space

    text = record.study_params.get("space.optimizer.lr")
    try:
        return Space.from_dict(json.loads(text)).high if isinstance(text, str) else None
    except (ValueError, KeyError, TypeError):
        return None


def _from_grid(runs: Runs, records: Sequence[RunRecord], target: float) -> dict[tuple[str, int], Tuned]:
    """Per (method, batch size, seed): every lr of the grid with its steps and final value."""
    out: dict[tuple[str, int], Tuned] = {}
    for r in records:
        if r.status not in ("completed", "diverged"):
            continue
        for method, key in series_of(r):
            steps, final = _run_steps(runs, r, key, target)
            tuned = out.setdefault((method, r.batch_size), Tuned(method, r.batch_size))
            tuned.evals = tuned.evals or _eval_steps(runs, r, key)
            tuned.tried.setdefault(r.seed, []).append((float(r.param("optimizer.lr")), steps, final))
    return out


def methods(tuned: dict[tuple[str, int], Tuned]) -> list[str]:
    return list(dict.fromkeys(m for m, _ in tuned))


def batch_sizes(tuned: dict[tuple[str, int], Tuned], method: str) -> list[int]:
    return sorted(b for m, b in tuned if m == method)


def nqm_setup(record: RunRecord) -> tuple[int, float]:
    """(dim, noise) of an NQM run (the problem's defaults where not logged)."""
    return int(record.param("problem.dim", 100)), float(record.param("problem.noise", 1.0))


# -- closed forms ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """What the closed form needs to know about a method."""

    momentum: float = 0.0
    p: float = 0.0
    ema: float | None = None  # the EMA's decay γ, when the method's risk is its EMA's
    tune_momentum: bool = False  # β tuned with the lr

    @classmethod
    def of(cls, method: str) -> Kind | None:
        """The closed-form kind of a method name from :func:`series_of` (a suffix in parentheses
        ignored); ``None`` for a method without a closed form here (SWA, Adam, ...)."""
        method = re.sub(r" \(.*\)$", "", method)
        base, _, avg = method.partition(" + ")
        if avg:
            kind = cls.of(base)
            return replace(kind, ema=float(avg[len("EMA γ="):])) if kind and avg.startswith("EMA γ=") else None
        if method == "SGD":
            return cls()
        if method == "momentum β tuned":
            return cls(tune_momentum=True)
        if method.startswith("momentum β="):
            return cls(momentum=float(method.split("=")[1]))
        if method.startswith("precond p="):
            return cls(p=float(method.split("=")[1]))
        return None


@lru_cache(maxsize=4096)
def closed_form_optimum(method: str, batch_size: float, dim: int, noise: float, target: float = NQM_TARGET,
                        max_steps: float | None = None) -> Optimum | None:
    """The exact optimum (:func:`suite.theory.optimum`: fewest steps to ``target``, its lr and β) of
    ``method`` on the NQM with h_i = 1/i, C = ``noise`` · H and E θ₀² = 1; ``None`` for a method
    without a closed form. ``max_steps``: as :func:`suite.theory.optimum`'s."""
    kind = Kind.of(method)
    if kind is None:
        return None
    h = 1.0 / np.arange(1, dim + 1)
    return optimum(h, noise * h, batch_size, target, p=kind.p, momentum=kind.momentum, ema=kind.ema,
                   tune_momentum=kind.tune_momentum, max_steps=max_steps)


def closed_form_steps(method: str, batch_size: float, dim: int, noise: float, target: float = NQM_TARGET,
                      max_steps: float | None = None) -> tuple[float, float] | None:
    """(steps, lr) of :func:`closed_form_optimum`; ``None`` for a method without a closed form."""
    best = closed_form_optimum(method, batch_size, dim, noise, target, max_steps)
    return None if best is None else (best.steps, best.lr)


SPREAD = 41  # lrs tried around the exact optimum's, over a factor √2 either way, to read it as the runs do


@lru_cache(maxsize=1024)
def closed_form_as_measured(method: str, batch_size: float, dim: int, noise: float, target: float,
                            evals: tuple[int, ...]) -> Optimum | None:
    """The exact optimum read as the runs read their steps: its expected risk (the moment recursion
    of :func:`suite.theory.moment_recursion`) sampled at the runs' evaluation steps ``evals`` and
    interpolated log-linearly by :func:`steps_to_target`, minimised over the lr around the optimum's
    (its β kept). :func:`closed_form_optimum` counts whole steps (the first step at or below the
    target), which reads up to a step later than the interpolation the runs use: at 14 steps, 4%
    apart. Without ``evals`` (or if none of these lrs gets there): :func:`closed_form_optimum`."""
    best = closed_form_optimum(method, batch_size, dim, noise, target)
    kind = Kind.of(method)
    if best is None or kind is None or not evals or not 0 < best.steps < math.inf:
        return best
    within = [t for t in evals if t <= 2 * best.steps + 2]  # the crossing of any lr near the optimum's is well inside
    evals = tuple(evals[: len(within) + 1])
    h = 1.0 / np.arange(1, dim + 1)
    lrs = best.lr * 2 ** np.linspace(-0.5, 0.5, SPREAD)
    rec = moment_recursion(lrs, h, noise * h, batch_size, p=kind.p, momentum=best.momentum, ema=kind.ema)
    with np.errstate(over="ignore", invalid="ignore"):
        risks = rec.risks(max(evals))
    steps = [steps_to_target([(t, float(row[t])) for t in evals], target) for row in risks]
    i = int(np.argmin(steps))
    return Optimum(steps[i], float(lrs[i]), best.momentum) if math.isfinite(steps[i]) else best


def reference(tuned: Tuned, dim: int, noise: float, target: float = NQM_TARGET) -> Optimum | None:
    """The closed form a tuned cell is held against: :func:`closed_form_as_measured` on the cell's
    evaluation steps; ``None`` for a method without a closed form."""
    return closed_form_as_measured(tuned.method, tuned.batch_size, dim, noise, target, tuned.evals)


def as_closed_form(tuned: Tuned, dim: int, noise: float, target: float = NQM_TARGET) -> Tuned | None:
    """The cell the closed form predicts: every study and fresh seed of ``tuned`` at its
    :func:`reference` (its steps and lr, no spread), so that a claim's own rule can be applied to
    the closed form; ``None`` for a method without one."""
    best = reference(tuned, dim, noise, target)
    if best is None or not 0 < best.steps < math.inf:
        return None
    seeds = tuned.seeds or [0, 1]
    return replace(tuned, tried={s: [(best.lr, best.steps, target)] for s in seeds},
                   ranked=[best.lr] * len(tuned.ranked),
                   studies={k: {s: (best.steps, target) for s in seeds} for k in tuned.studies},
                   study_lrs={k: best.lr for k in tuned.study_lrs})


def coverage(tuned: dict[tuple[str, int], Tuned], dim: int, noise: float, target: float = NQM_TARGET,
             level: float = LEVEL) -> tuple[int, int, list[str]] | None:
    """The closed form held against the measured comparisons: of the paired intervals of
    log2(steps of a / steps of b) (:func:`log2_ratio`, every pair of methods with a closed form, at
    every batch size both have), how many contain the ratio of their :func:`reference` steps, how
    many there are, and each one that does not ("a / b at B=…: measured …, closed form …");
    ``None`` where there is no such pair."""
    names = methods(tuned)
    inside, total, outside = 0, 0, []
    for a, b in combinations(names, 2):
        for size in sorted(set(batch_sizes(tuned, a)) & set(batch_sizes(tuned, b))):
            ra, rb = reference(tuned[(a, size)], dim, noise, target), reference(tuned[(b, size)], dim, noise, target)
            if ra is None or rb is None or not (0 < ra.steps < math.inf and 0 < rb.steps < math.inf):
                continue
            est = log2_ratio(tuned[(a, size)], tuned[(b, size)], level)
            if est.n < 2:
                continue
            truth = math.log2(ra.steps / rb.steps)
            total += 1
            if est.low <= truth <= est.high:
                inside += 1
            else:
                outside.append(f"{a} / {b} at B={size}: measured ×{2 ** est.mean:.3f} "
                               f"[{2 ** est.low:.3f}, {2 ** est.high:.3f}], closed form ×{2 ** truth:.3f}")
    return (inside, total, outside) if total else None


def regret(tuned: Tuned, dim: int, noise: float, target: float = NQM_TARGET) -> float | None:
    """A tuned cell's measured steps (2^(mean log2 steps over its seeds); ``inf`` if none reached the
    target) over its :func:`reference`'s steps; ``None`` for a method without a closed form."""
    best = reference(tuned, dim, noise, target)
    if best is None or not 0 < best.steps < math.inf:
        return None
    est = tuned.log2_steps()
    return 2**est.mean / best.steps if est.n else math.inf


def predicted_critical_batch_size(method: str, smallest: float, dim: int, noise: float, target: float = NQM_TARGET,
                                  per_doubling: int = 4, doublings: int = 24) -> float | None:
    """The critical batch size of the closed form's curve (:func:`suite.critical.critical_batch_size`),
    from ``smallest`` upward on a grid of ``per_doubling`` batch sizes per doubling, evaluated until
    the curve crosses 50% efficiency (``inf`` if not within ``doublings`` doublings; ``None`` for a
    method without a closed form)."""
    sizes: list[float] = []
    steps: list[float] = []
    for k in range(doublings * per_doubling + 1):
        b = smallest * 2 ** (k / per_doubling)
        res = closed_form_steps(method, b, dim, noise, target)
        if res is None:
            return None
        sizes.append(b)
        steps.append(res[0])
        crit = critical_batch_size(sizes, steps)
        if crit is None or math.isfinite(crit):
            return crit
    return math.inf


def measured_critical_batch_size(tuned: dict[tuple[str, int], Tuned], method: str, efficiency: float = 0.5
                                 ) -> float | None:
    """The critical batch size (:func:`suite.critical.critical_batch_size`) of the measured curve:
    per batch size, the steps 2^(mean log2 steps over seeds; the median over studies); ``inf``
    when the curve stays above ``efficiency`` up to the largest batch size measured."""
    sizes = batch_sizes(tuned, method)
    if not sizes:
        return None
    steps = [2 ** tuned[(method, b)].log2_steps().mean for b in sizes]
    return critical_batch_size(sizes, steps, efficiency)
