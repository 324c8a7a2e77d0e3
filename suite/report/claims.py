"""The lecture's claims, each tested against the runs: a row with the experiment, the numbers
measured and a verdict (reproduced / contradicted / inconclusive) computed by a stated rule.

No verdict is written by hand: each claim is a function of :class:`suite.report.reader.Runs`
that finds its experiment's runs (by section name), measures, and applies its rule to 95%
intervals over seeds. A claim whose runs are missing is inconclusive and says so.

Sections read (``benchmarks/lecture.yaml``): ``steady_state``, ``sampling``, ``scaling_*``,
``schedules``; the claims of :mod:`suite.report.lecture_claims` read their own.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from suite.report import scaling
from suite.report.reader import RunRecord, Runs
from suite.report.stats import (
    LEVEL,
    STEADY_TAIL,
    Estimate,
    bonferroni,
    fit_two,
    mean_interval,
    paired_difference,
    slope,
    tail_mean,
)

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
HELP_RATIO = 0.8  # "helps": at least 20% fewer steps; "no help": less than that for sure
LOG2_HELP = math.log2(HELP_RATIO)
SAMPLING_METRIC = "dist_to_opt"


@dataclass
class ClaimRow:
    """One claim: what the lecture says, how it was tested, what was measured, the verdict."""

    claim: str
    experiment: str
    measured: str
    verdict: str
    rule: str


def decide(reproduced: bool, contradicted: bool) -> str:
    """A claim's verdict from its rule's two tests: reproduced, else contradicted, else inconclusive."""
    return REPRODUCED if reproduced else CONTRADICTED if contradicted else INCONCLUSIVE


def _missing(claim: str, experiment: str, rule: str, what: str) -> ClaimRow:
    return ClaimRow(claim, experiment, f"no data: {what}", INCONCLUSIVE, rule)


def _by_seed(runs: Runs, records: list[RunRecord], key: str, fraction: float | None = None) -> dict[int, float]:
    """seed -> the final value (or tail mean) of ``key``; a diverged run is inf."""
    out: dict[int, float] = {}
    for r in records:
        if r.status == "diverged":
            out[r.seed] = math.inf
        elif r.status == "completed":
            v = tail_mean(runs.history(r, key), fraction) if fraction else r.metric(key)
            if v is not None:
                out[r.seed] = v
    return out


def _log2_ratio(a: dict[int, float], b: dict[int, float]) -> Estimate:
    la = {s: math.log2(v) for s, v in a.items() if 0 < v < math.inf}
    lb = {s: math.log2(v) for s, v in b.items() if 0 < v < math.inf}
    return paired_difference(la, lb)


def _ratio_text(est: Estimate) -> str:
    if est.n == 0:
        return "n/a"
    if est.n < 2:
        return f"×{2 ** est.mean:.2f} (n=1)"
    return f"×{2 ** est.mean:.2f} [{2 ** est.low:.2f}, {2 ** est.high:.2f}]"


# -- 1. steady-state risk ∝ α/B ------------------------------------------------------------------
def steady_state(runs: Runs) -> ClaimRow:
    claim, exp = "Steady-state risk of constant-lr SGD ∝ α/B", "steady_state (NQM)"
    rule = ("fit log(risk) = a·log α + b·log B per seed on the mean val_loss over the last half of the run; "
            "reproduced if a ∈ [0.75, 1.25] and b ∈ [−1.25, −0.75] (95% intervals over seeds), "
            "contradicted if either interval lies outside its range")
    recs = [r for r in runs.section("steady_state") if r.status == "completed"]
    per_seed: dict[int, list[tuple[float, float, float]]] = {}
    for r in recs:
        v = tail_mean(runs.history(r, "val_loss"), STEADY_TAIL)
        if v and v > 0:
            per_seed.setdefault(r.seed, []).append((math.log(float(r.param("optimizer.lr"))), math.log(r.batch_size),
                                                    math.log(v)))
    fits = []
    for pts in per_seed.values():
        try:
            fits.append(fit_two([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]))
        except (ValueError, ZeroDivisionError):
            continue
    if not fits:
        return _missing(claim, exp, rule, "needs runs at ≥ 2 lrs and ≥ 2 batch sizes")
    a, b = mean_interval(f[0] for f in fits), mean_interval(f[1] for f in fits)
    measured = f"risk ∝ α^a·B^b: a = {a.text('.2f')}, b = {b.text('.2f')} ({a.n} seeds)"
    verdict = decide(a.within(0.75, 1.25) and b.within(-1.25, -0.75), a.outside(0.75, 1.25) or b.outside(-1.25, -0.75))
    return ClaimRow(claim, exp, measured, verdict, rule)


# -- 2. without replacement beats with replacement -------------------------------------------------
def sampling(runs: Runs) -> ClaimRow:
    claim, exp = "Sampling without replacement (shuffling) beats sampling with replacement", "sampling (linreg)"
    rule = ("paired over seeds: distance to the optimum averaged over the second half of the run (the noise "
            "ball), with replacement − shuffle; reproduced if the 95% interval is > 0, contradicted if < 0")
    recs = runs.section("sampling")
    shuffle = _by_seed(runs, [r for r in recs if r.param("sampler") == "shuffle"], SAMPLING_METRIC, STEADY_TAIL)
    repl = _by_seed(runs, [r for r in recs if r.param("sampler") == "replacement"], SAMPLING_METRIC, STEADY_TAIL)
    if not shuffle or not repl:
        return _missing(claim, exp, rule, "needs shuffle and replacement runs on the same seeds")
    d = paired_difference(repl, shuffle)
    worse = sum(1 for s in shuffle if s in repl and repl[s] > shuffle[s])
    measured = (f"distance to optimum, with − without replacement: {d.text('.3g', signed=True)} "
                f"(with replacement worse on {worse} of {d.n} seeds)")
    verdict = REPRODUCED if d.n >= 2 and d.low > 0 else CONTRADICTED if d.n >= 2 and d.high < 0 else INCONCLUSIVE
    return ClaimRow(claim, exp, measured, verdict, rule)


# -- the scaling sweep -----------------------------------------------------------------------------
class Sweep:
    """The tuned NQM sweep (sections ``scaling…``), computed once for several claims."""

    def __init__(self, runs: Runs) -> None:
        self.records = runs.with_prefix(scaling.SCALING_PREFIX)
        self.target = scaling.study_target(self.records) or scaling.NQM_TARGET
        self.tuned = scaling.tune(runs, self.records, self.target) if self.records else {}
        self.methods = scaling.methods(self.tuned)

    def closed_form(self) -> Sweep:
        """The sweep the NQM closed form predicts: each cell at its exact optimum as the runs read it
        (:func:`suite.report.scaling.as_closed_form`, no spread), cells without a closed form left out.
        A claim's rule applied to it gives the closed form's verdict."""
        out = Sweep.__new__(Sweep)
        out.records, out.target = self.records, self.target
        dim, noise = scaling.nqm_setup(self.records[0]) if self.records else (0, 0.0)
        cells = {key: scaling.as_closed_form(t, dim, noise, self.target) for key, t in self.tuned.items()}
        out.tuned = {key: t for key, t in cells.items() if t is not None}
        out.methods = scaling.methods(out.tuned)
        return out

    def find(self, prefix: str) -> str | None:
        return next((m for m in self.methods if m.startswith(prefix)), None)

    def sizes(self, method: str) -> list[int]:
        return scaling.batch_sizes(self.tuned, method)

    def common_sizes(self, a: str, b: str) -> list[int]:
        return sorted(set(self.sizes(a)) & set(self.sizes(b)))

    def ratio(self, a: str, b: str, batch_size: int, level: float = LEVEL) -> Estimate:
        """log2(steps of a / steps of b) at their own best lrs, every study against every study, paired on
        fresh seed (:func:`suite.report.scaling.log2_ratio`: over several studies, the interval covers the tuning)."""
        return scaling.log2_ratio(self.tuned[(a, batch_size)], self.tuned[(b, batch_size)], level)

    def lr_ratio(self, a: str, b: str, batch_size: int) -> Estimate:
        """log2(best lr of a / best lr of b): paired per study where both have several, else per seed."""
        ta, tb = self.tuned[(a, batch_size)], self.tuned[(b, batch_size)]
        several = len(ta.study_lrs) > 1 and len(tb.study_lrs) > 1
        la, lb = (ta.study_lrs, tb.study_lrs) if several else (ta.best_lrs(), tb.best_lrs())
        return paired_difference({k: math.log2(v) for k, v in la.items()}, {k: math.log2(v) for k, v in lb.items()})


EXP_SWEEP = "scaling_* (NQM, lr tuned per method and batch size, steps to the target expected risk)"


def _helps_only_at(sweep: Sweep, claim: str, method: str | None, base: str | None, where: str) -> ClaimRow:
    """"``method`` helps (vs ``base``) only at ``where`` ('large' or 'small') batch sizes"."""
    at_b, off_b = ("largest", "smallest") if where == "large" else ("smallest", "largest")
    level = bonferroni(2)  # the verdict rests on two cells
    rule = (f"steps of each method at its own best lr, every study against every study, paired on fresh seed, "
            f"each interval at {level:.1%} (Bonferroni over the 2 batch sizes; over the seeds, of the best studies' "
            f"ratio ± the larger study spread where there are several studies, else a t interval over seeds); "
            f"'helps' = ratio interval "
            f"below {HELP_RATIO}, 'no help' = ratio interval above {HELP_RATIO}; reproduced if it helps at the "
            f"{at_b} and not at the {off_b} batch size, contradicted if it helps at the {off_b} or "
            f"is not faster (interval ≥ 1) at the {at_b}")
    if method is None or base is None:
        return _missing(claim, EXP_SWEEP, rule, "needs both methods in the scaling sweep")
    sizes = sweep.common_sizes(method, base)
    if len(sizes) < 2:
        return _missing(claim, EXP_SWEEP, rule, "needs ≥ 2 batch sizes")
    small, large = sizes[0], sizes[-1]
    at = {small: sweep.ratio(method, base, small, level), large: sweep.ratio(method, base, large, level)}
    target, off = (large, small) if where == "large" else (small, large)
    helps = at[target].n >= 2 and at[target].high < LOG2_HELP
    no_help_off = at[off].n >= 2 and at[off].low > LOG2_HELP
    measured = (f"steps {method} / {base}: B={small}: {_ratio_text(at[small])}; "
                f"B={large}: {_ratio_text(at[large])} ({at[large].label})")
    verdict = decide(helps and no_help_off,
                     (at[off].n >= 2 and at[off].high < LOG2_HELP) or (at[target].n >= 2 and at[target].low >= 0))
    return ClaimRow(claim, EXP_SWEEP, measured, verdict, rule)


def momentum_large_batch(runs: Runs, sweep: Sweep, momentum: str = "momentum β=") -> ClaimRow:
    """Momentum (the sweep's first method named ``momentum…``: β = 0.9 on the NQM, where β tuned is
    a method of its own; on a network, where only β tuned is measured, ``momentum``) against SGD."""
    return _helps_only_at(sweep, "Momentum helps only at large batch sizes", sweep.find(momentum),
                          "SGD" if "SGD" in sweep.methods else None, "large")


def ema_small_batch(runs: Runs, sweep: Sweep) -> ClaimRow:
    ema = next((m for m in sweep.methods if m.startswith("SGD + EMA")), None)
    return _helps_only_at(sweep, "EMA helps at small batch sizes (and not at large ones)", ema,
                          "SGD" if "SGD" in sweep.methods else None, "small")


def momentum_smaller_lr(runs: Runs, sweep: Sweep) -> ClaimRow:
    claim = "Momentum needs a smaller learning rate"
    rule = ("log2(best lr of momentum / best lr of SGD), mean over seeds at each batch size, 95% interval across "
            "batch sizes; reproduced if < 0, contradicted if > 0")
    mom, base = sweep.find("momentum β="), "SGD" if "SGD" in sweep.methods else None
    if mom is None or base is None:
        return _missing(claim, EXP_SWEEP, rule, "needs SGD and momentum in the scaling sweep")
    per_b = []
    for b in sweep.common_sizes(mom, base):
        d = sweep.lr_ratio(mom, base, b)
        if d.n:
            per_b.append(d.mean)
    est = mean_interval(per_b)
    if est.n == 0:
        return _missing(claim, EXP_SWEEP, rule, "no common batch sizes")
    measured = f"best lr momentum / SGD: {_ratio_text(est)} over {est.n} batch sizes"
    verdict = REPRODUCED if est.n >= 2 and est.high < 0 else CONTRADICTED if est.n >= 2 and est.low > 0 \
        else INCONCLUSIVE
    return ClaimRow(claim, EXP_SWEEP, measured, verdict, rule)


def _crit_text(crit: float | None, largest: int) -> str:
    """A critical batch size as the claims table states it: beyond the range as '> largest'."""
    if crit is None:
        return "undefined"
    return f"> {largest}" if math.isinf(crit) else f"{crit:.0f}"


def precond_large_batch(runs: Runs, sweep: Sweep) -> ClaimRow:
    return helps_large_and_extends(sweep, "Preconditioning helps at large batch sizes and extends perfect scaling",
                                   sweep.find("precond"), "precond")


def helps_large_and_extends(sweep: Sweep, claim: str, pre: str | None, name: str, experiment: str = EXP_SWEEP
                            ) -> ClaimRow:
    """"Method ``pre`` (``name`` in the missing-data note) helps at large batch sizes and extends
    perfect scaling", against SGD on the same sweep."""
    rule = (f"'helps' at the largest batch size: steps ratio interval below {HELP_RATIO}; perfect scaling extends "
            "if its measured critical batch size (where the steps reach 2× perfect scaling from the smallest B, "
            "log-log interpolated) exceeds SGD's; reproduced if both, contradicted if not faster at the largest B "
            "(interval ≥ 1) or its critical batch size is smaller")
    base = "SGD" if "SGD" in sweep.methods else None
    if pre is None or base is None:
        return _missing(claim, experiment, rule, f"needs SGD and {name} in the scaling sweep")
    sizes = sweep.common_sizes(pre, base)
    if len(sizes) < 2:
        return _missing(claim, experiment, rule, "needs ≥ 2 batch sizes")
    large = sweep.ratio(pre, base, sizes[-1])
    crit_pre = scaling.measured_critical_batch_size(sweep.tuned, pre)
    crit_sgd = scaling.measured_critical_batch_size(sweep.tuned, base)
    measured = (f"steps {pre} / SGD at B={sizes[-1]}: {_ratio_text(large)}; critical batch size "
                f"{_crit_text(crit_pre, sizes[-1])} vs SGD {_crit_text(crit_sgd, sizes[-1])}")
    extends = crit_pre is not None and crit_sgd is not None and crit_pre > crit_sgd  # inf > finite: extends
    shrinks = crit_pre is not None and crit_sgd is not None and crit_pre < crit_sgd
    verdict = decide(large.n >= 2 and large.high < LOG2_HELP and extends, (large.n >= 2 and large.low >= 0) or shrinks)
    return ClaimRow(claim, experiment, measured, verdict, rule)


def _sgd_sizes(sweep: Sweep) -> list[int]:
    """SGD's batch sizes in the scaling sweep, smallest first; none where the sweep has no SGD."""
    return sweep.sizes("SGD") if "SGD" in sweep.methods else []


BEST_LR_RULE = (
    "SGD's best lr, one estimate per seed (lr grid) or per re-evaluated top trial of its study, best first (Optuna); "
    "'grows': slope of log2(best lr) on log2(B) over the smaller half of the batch sizes, interval > 0; 'cap': at "
    "the two largest B the best lr (per seed; a study's winner) agrees within a factor √2 and lies below the largest "
    "lr the tuning could pick; reproduced if both, contradicted if the slope's interval is ≤ 0")


def best_lr_grows(runs: Runs, sweep: Sweep) -> ClaimRow:
    claim, rule = "The best learning rate grows with the batch size, up to a cap", BEST_LR_RULE
    sizes = _sgd_sizes(sweep)
    if len(sizes) < 3:
        return _missing(claim, EXP_SWEEP, rule, "needs SGD at ≥ 3 batch sizes")
    half = sizes[: max(2, (len(sizes) + 1) // 2)]
    lr_at = {b: sweep.tuned[("SGD", b)].lr_replicates() for b in sizes}
    reps = sorted(set.intersection(*(set(lr_at[b]) for b in sizes)))
    slopes = [slope([math.log2(b) for b in half], [math.log2(lr_at[b][s]) for b in half]) for s in reps]
    grow = mean_interval(slopes)
    top, last2 = sweep.tuned[("SGD", sizes[-1])].lr_top, sizes[-2:]
    # the cap is about the best lr: per seed of a grid, the winner of a study (its runners-up show the spread)
    best = reps[:1] if sweep.tuned[("SGD", sizes[-1])].from_study else reps
    capped = bool(best) and all(abs(math.log2(lr_at[last2[0]][s] / lr_at[last2[1]][s])) <= 0.5
                                and max(lr_at[last2[0]][s], lr_at[last2[1]][s]) < top for s in best)
    path = ", ".join(f"B={b}: {_geo(sweep.tuned[('SGD', b)].best_lrs().values()):.3g}" for b in sizes)
    measured = (f"best lr {path}; slope over B ≤ {half[-1]}: {grow.text('.2f')}; "
                f"{'capped' if capped else 'no cap seen'} (largest lr it could pick {top:g})")
    verdict = decide(grow.n >= 2 and grow.low > 0 and capped, grow.n >= 2 and grow.high <= 0)
    return ClaimRow(claim, EXP_SWEEP, measured, verdict, rule)


def perfect_scaling(runs: Runs, sweep: Sweep) -> ClaimRow:
    claim = "Steps to target scale perfectly with the batch size, then plateau"
    rule = ("SGD at its best lr; slope of log2(steps) on log2(B), every study against every study, paired on fresh "
            "seed, between the two smallest and between the two largest batch sizes, each interval at 97.5% "
            "(Bonferroni over the 2); "
            "reproduced if the first interval ⊂ [−1.3, −0.7] and the second ⊂ [−0.3, 0.3], "
            "contradicted if the first lies above −0.7 (no perfect scaling)")
    sizes = _sgd_sizes(sweep)
    if len(sizes) < 3:
        return _missing(claim, EXP_SWEEP, rule, "needs SGD at ≥ 3 batch sizes")

    def pair_slope(b0: int, b1: int) -> Estimate:
        d = scaling.log2_ratio(sweep.tuned[("SGD", b1)], sweep.tuned[("SGD", b0)], bonferroni(2))
        k = math.log2(b1 / b0)
        return Estimate(d.mean / k, d.low / k, d.high / k, d.n, d.covers, d.studies, d.level)

    first, last = pair_slope(sizes[0], sizes[1]), pair_slope(sizes[-2], sizes[-1])
    steps = ", ".join(f"B={b}: {2 ** sweep.tuned[('SGD', b)].log2_steps().mean:.0f}" for b in sizes)
    measured = (f"steps {steps}; slope B={sizes[0]}→{sizes[1]}: {first.text('.2f')}, "
                f"B={sizes[-2]}→{sizes[-1]}: {last.text('.2f')}")
    verdict = decide(first.n >= 2 and first.within(-1.3, -0.7) and last.within(-0.3, 0.3),
                     first.n >= 2 and first.low > -0.7)
    return ClaimRow(claim, EXP_SWEEP, measured, verdict, rule)


REGRET_OK = 1.10  # issue 25's target: each tuned NQM cell within 10% of the exact optimum's steps


def tuning_regret(runs: Runs, sweep: Sweep) -> ClaimRow:
    """How far the tuning is from the exact optimum: the median and worst regret over the NQM's
    tuned cells (:func:`suite.report.scaling.regret`), the worst cell named."""
    claim = "The tuning finds the optimum: every tuned NQM cell within 10% of the exact optimum's steps"
    rule = ("regret = a cell's steps (2^(mean log2 steps) over its seeds) / the exact optimum's steps (NQM closed "
            "form, E θ₀² = 1, minimised over the hyperparameters the method tunes); median and worst over the cells "
            f"with a closed form; reproduced if the worst ≤ {REGRET_OK:g}, contradicted if above")
    if not sweep.tuned:
        return _missing(claim, EXP_SWEEP, rule, "no tuned NQM cells")
    dim, noise = scaling.nqm_setup(sweep.records[0])
    regrets = {key: r for key, t in sweep.tuned.items()
               if (r := scaling.regret(t, dim, noise, sweep.target)) is not None}
    if not regrets:
        return _missing(claim, EXP_SWEEP, rule, "no tuned cell of a method with a closed form")
    (method, b), worst = max(regrets.items(), key=lambda kv: kv[1])
    median = statistics.median(regrets.values())
    measured = (f"regret over {len(regrets)} cells: median ×{median:.2f}, worst ×{worst:.2f} ({method} at B={b})")
    return ClaimRow(claim, EXP_SWEEP, measured, REPRODUCED if worst <= REGRET_OK else CONTRADICTED, rule)


def _geo(values) -> float:
    vals = [v for v in values if v and math.isfinite(v) and v > 0]
    return 2 ** (sum(math.log2(v) for v in vals) / len(vals)) if vals else math.inf


# -- schedules ----------------------------------------------------------------------------------
def _schedules(runs: Runs) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in runs.section("schedules"):
        out.setdefault(str(r.param("scheduler")), []).append(r)
    return out


def schedules_noise_ball(runs: Runs) -> ClaimRow:
    claim, exp = "Decaying learning-rate schedules shrink the noise ball", "schedules (NQM, noise-dominated)"
    rule = ("final expected risk (theory_risk) of each decaying schedule vs constant lr, paired log2 ratio over "
            "seeds; reproduced if every interval is < 0, contradicted if any is > 0")
    by = _schedules(runs)
    if "constant" not in by or len(by) < 2:
        return _missing(claim, exp, rule, "needs constant and decaying schedules")
    base = _by_seed(runs, by["constant"], "theory_risk")
    ests = {name: _log2_ratio(_by_seed(runs, recs, "theory_risk"), base) for name, recs in by.items()
            if name != "constant"}
    measured = "final risk vs constant: " + "; ".join(f"{n} {_ratio_text(e)}" for n, e in ests.items())
    verdict = decide(all(e.n >= 2 and e.high < 0 for e in ests.values()),
                     any(e.n >= 2 and e.low > 0 for e in ests.values()))
    return ClaimRow(claim, exp, measured, verdict, rule)


def inverse_time_rate(runs: Runs) -> ClaimRow:
    claim, exp = "1/t decay converges at rate O(1/k)", "schedules (NQM, inverse_time)"
    rule = ("slope of log(expected risk) on log(step) over the second half of the run, per seed; reproduced if the "
            "interval is below −0.75 (at least about as fast as 1/k), contradicted if above −0.75")
    recs = [r for r in _schedules(runs).get("inverse_time", []) if r.status == "completed"]
    slopes = []
    for r in recs:
        hist = [(s, v) for s, v in runs.history(r, "theory_risk") if s > 0 and v > 0]
        tail = hist[len(hist) // 2:]
        if len(tail) >= 3:
            slopes.append(slope([math.log(s) for s, _ in tail], [math.log(v) for _, v in tail]))
    est = mean_interval(slopes)
    if est.n == 0:
        return _missing(claim, exp, rule, "needs an inverse_time run")
    measured = f"risk ∝ k^{est.text('.2f')} over the second half ({est.n} seeds)"
    verdict = REPRODUCED if est.n >= 2 and est.high < -0.75 else CONTRADICTED if est.n >= 2 and est.low > -0.75 \
        else INCONCLUSIVE
    return ClaimRow(claim, exp, measured, verdict, rule)


SWEPT = (momentum_large_batch, momentum_smaller_lr, ema_small_batch, precond_large_batch, best_lr_grows,
         perfect_scaling)  # the claims read off the tuned NQM sweep
