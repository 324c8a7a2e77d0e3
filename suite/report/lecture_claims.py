"""The lecture's claims that each need an experiment of their own in ``benchmarks/lecture.yaml``,
tested as :mod:`suite.report.claims` tests the others (a function of the runs, a stated rule on 95%
intervals over seeds, a :class:`~suite.report.claims.ClaimRow`):

* momentum's factor on the steady-state risk (section ``momentum_steady_state``);
* SGD against full-batch GD in wall-clock time, each at its own best lr (``wallclock``);
* weight decay's best λ inside its range (``nqm_weight_decay``, an NQM whose optimum is not 0);
* "EMA consistently improves" on the last iterate (``averaging``);
* the minimal working example's printed weights (``mwe`` and ``mwe_orders``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable

import numpy as np

from suite import theory
from suite.report import claims
from suite.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    ClaimRow,
    _by_seed,
    _log2_ratio,
    _missing,
    _ratio_text,
    decide,
)
from suite.report.reader import RunRecord, Runs
from suite.report.stats import STEADY_TAIL, Estimate, mean_interval, t975
from suite.vocab import TRAIN_SECONDS

MOMENTUM_SECTION = "momentum_steady_state"
WALLCLOCK_SECTION = "wallclock"
WALLCLOCK_ACCURACY = 0.1  # "an approximate solution": within 10% of the start's distance to the optimum
WEIGHT_DECAY_SECTION = "nqm_weight_decay"
AVERAGING_SECTION = "averaging"
MWE_SECTION, MWE_ORDERS_SECTION = "mwe", "mwe_orders"
# What the lecture prints of its minimal working example (line 1069): w4, true and learned.
LECTURE_W4 = {"true": -1.1229, "learned": -1.1252, "averaged": -1.1260}
PRINTED_DECIMALS = 4
PARAMETRISATIONS = (
    "The lecture's update (m ← βm + g, θ ← θ − αm) is the suite's (torch SGD, dampening 0); per dimension its "
    "factor at equal α is (1+β)(2−αh)/((1−β)(2+2β−αh)) → 1/(1−β) for small αh. (1+β)/(1−β) is the closed form's "
    "prefactor before the (1+β) of 2+2β−αh cancels it, and holds only if momentum's step is (1+β)α; with "
    "m ← βm + (1−β)g (a step α(1−β)), or against SGD at the effective lr α/(1−β), the factor → 1"
)


def _groups(records: Iterable[RunRecord], *keys: str) -> dict[tuple, list[RunRecord]]:
    out: dict[tuple, list[RunRecord]] = {}
    for r in records:
        out.setdefault(tuple(r.param(k) for k in keys), []).append(r)
    return out


def _contains(est: Estimate, log2_value: float) -> bool:
    return est.n >= 2 and est.low <= log2_value <= est.high


# -- momentum's factor on the steady-state risk ---------------------------------------------------
def momentum_steady_factor(runs: Runs, theory_only: bool = False) -> ClaimRow:
    """Momentum's factor on the steady-state risk, measured; with ``theory_only`` the same rule on
    the NQM closed form's factor at the measured settings (:func:`closed_form`)."""
    claim = "Momentum multiplies the steady-state risk by (1+β)/(1−β)"
    exp = f"{MOMENTUM_SECTION} (NQM, constant lr, SGD and heavy-ball β at the same α, run to steady state)"
    rule = ("steady-state risk of a run = mean of its val_loss (the iterate's exact risk) over the last half of the "
            "run; ratio momentum / SGD paired by seed, geometric mean and 95% t interval over seeds; reproduced if "
            "the interval contains (1+β)/(1−β) and not 1/(1−β), contradicted if it excludes (1+β)/(1−β)")
    recs = [r for r in runs.section(MOMENTUM_SECTION) if r.status in ("completed", "diverged")]
    by = _groups(recs, "optimizer.momentum")
    betas = sorted(float(b) for (b,) in by if b is not None)
    if 0.0 not in betas or len(betas) < 2:
        return _missing(claim, exp, rule, "needs SGD (β = 0) and momentum runs at the same lr")
    beta = betas[-1]
    sgd, mom = by[(0.0,)], by[(beta,)]  # a momentum logged as 0 is the key 0.0 too (0 == 0.0)
    if len({(r.param("optimizer.lr"), r.batch_size) for r in sgd + mom}) != 1:
        return _missing(claim, exp, rule, "needs one lr and one batch size shared by SGD and momentum")
    est = _log2_ratio(_by_seed(runs, mom, "val_loss", STEADY_TAIL), _by_seed(runs, sgd, "val_loss", STEADY_TAIL))
    if est.n < 2:
        return _missing(claim, exp, rule, "needs ≥ 2 seeds with both runs finished")
    r0 = mom[0]
    lr, b = float(r0.param("optimizer.lr")), r0.batch_size
    closed = _closed_momentum_factor(r0, lr, beta, b)
    if theory_only:  # the rule applied to the closed form's factor itself: no spread
        at = math.log2(closed)
        est = Estimate(at, at, at, est.n, est.covers, est.studies, est.level)
    lecture, independent = (1 + beta) / (1 - beta), 1 / (1 - beta)
    in_lecture, in_independent = _contains(est, math.log2(lecture)), _contains(est, math.log2(independent))
    said = {True: "contains", False: "excludes"}
    what = "the closed form's factor" if theory_only else "the interval"
    measured = (f"steady-state risk, β={beta:g} / SGD at α={lr:g}, B={b}: {_ratio_text(est)} ({est.n} seeds); "
                f"NQM closed form ×{closed:.2f}; {what} {said[in_independent]} 1/(1−β) = {independent:.3g} "
                f"and {said[in_lecture]} the lecture's (1+β)/(1−β) = {lecture:.3g}. " + PARAMETRISATIONS)
    verdict = decide(in_lecture and not in_independent, not in_lecture)
    return ClaimRow(claim, exp, measured, verdict, rule)


def _closed_momentum_factor(record: RunRecord, lr: float, beta: float, batch_size: int) -> float:
    """Σ momentum steady-state risk / Σ SGD's for the run's NQM (h_i = 1/i, C = noise · H)."""
    h = 1.0 / np.arange(1, int(record.param("problem.dim", 100)) + 1)
    c = float(record.param("problem.noise", 1.0)) * h
    return float(theory.momentum_steady_risk(lr, beta, h, c, batch_size).sum()
                 / theory.sgd_steady_risk(lr, h, c, batch_size).sum())


# -- SGD against full-batch GD in wall-clock time ------------------------------------------------------
def wallclock(runs: Runs) -> ClaimRow:
    claim = "Mini-batch SGD reaches an approximate solution faster than full-batch GD in wall-clock time"
    exp = (f"{WALLCLOCK_SECTION} (linreg, shuffled mini-batches vs full batch over one lr grid; each seed its own "
           "data set, the methods' runs alternating)")
    rule = (f"accuracy: dist_to_opt ≤ {WALLCLOCK_ACCURACY:g} × its start; each method at its own best lr of the "
            "grid (fewest median steps to the accuracy over seeds); time to accuracy = the first evaluated step "
            "there × the run's median seconds per step (from train_seconds, evaluations excluded); SGD / "
            "full batch paired by seed: median of the ratios with its 95% distribution-free interval (sign-test "
            "order statistics, ≥ 6 seeds); reproduced if the interval is < 1, contradicted if > 1")
    recs = runs.section(WALLCLOCK_SECTION)
    by_method = _groups(recs, "sampler")
    full = by_method.get(("full",), [])
    mini = [r for (sampler,), rs in by_method.items() if sampler != "full" for r in rs]
    if not full or not mini:
        return _missing(claim, exp, rule, "needs full-batch and mini-batch runs on the same seeds")
    best = {name: _fastest(runs, rs) for name, rs in (("SGD", mini), ("GD", full))}
    if any(b is None for b in best.values()):
        return _missing(claim, exp, rule, "a method never reached the accuracy")
    (sgd_lr, sgd), (gd_lr, gd) = best["SGD"], best["GD"]  # type: ignore[misc]
    seeds = sorted(set(sgd) & set(gd))
    ratios = [math.log2(sgd[s][1] / gd[s][1]) for s in seeds if 0 < gd[s][1] < math.inf and sgd[s][1] < math.inf]
    med, low, high = median_interval(ratios)
    b = mini[0].batch_size

    def median_of(values: Iterable[float]) -> float:
        return median_interval(list(values))[0]

    parts = [f"{name} lr {lr:g}: {median_of(x[0] for x in ts.values()):.0f} steps, "
             f"{1000 * median_of(x[1] for x in ts.values()):.3g} ms" for name, lr, ts in
             ((f"SGD (B={b})", sgd_lr, sgd), ("full batch", gd_lr, gd))]
    interval = f"[{2 ** low:.2f}, {2 ** high:.2f}]" if math.isfinite(low) and math.isfinite(high) else "(no interval)"
    measured = (f"median to the accuracy: {'; '.join(parts)}; time SGD / full batch: ×{2 ** med:.2f} {interval} "
                f"(median over {len(ratios)} seeds; a stacked run's time is its share of its stack's)")
    verdict = decide(len(ratios) >= 6 and high < 0, len(ratios) >= 6 and low > 0)
    return ClaimRow(claim, exp, measured, verdict, rule)


def _to_accuracy(runs: Runs, record: RunRecord) -> tuple[float, float]:
    """(steps, seconds) to reach ``WALLCLOCK_ACCURACY`` × the start's distance to the optimum:
    the first evaluated step there, times the run's median training seconds per step between
    evaluations (robust to a step a busy machine preempted, and to once-an-epoch costs such as a
    shuffle); (inf, inf) if the run never got there."""
    if record.status not in ("completed", "diverged"):
        return math.inf, math.inf
    dist = runs.history(record, "dist_to_opt")
    clock = runs.history(record, TRAIN_SECONDS)
    per_step = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(clock, clock[1:], strict=False) if s1 > s0]
    if not dist or not per_step:
        return math.inf, math.inf
    goal = WALLCLOCK_ACCURACY * dist[0][1]
    step = next((s for s, v in dist if v <= goal), None)
    if step is None:
        return math.inf, math.inf
    return float(step), step * median_interval(per_step)[0]


def _fastest(runs: Runs, records: list[RunRecord]) -> tuple[float, dict[int, tuple[float, float]]] | None:
    """The lr whose runs need the fewest steps to the accuracy (median over seeds; then the least
    median time), with each seed's (steps, seconds) at it; None if no lr gets there."""
    by_lr: dict[float, dict[int, tuple[float, float]]] = {}
    for r in records:
        by_lr.setdefault(float(r.param("optimizer.lr")), {})[r.seed] = _to_accuracy(runs, r)
    ranked = sorted(by_lr, key=lambda lr: (median_interval([v[0] for v in by_lr[lr].values()])[0],
                                           median_interval([v[1] for v in by_lr[lr].values()])[0]))
    if not ranked or not math.isfinite(median_interval([v[0] for v in by_lr[ranked[0]].values()])[0]):
        return None
    return ranked[0], by_lr[ranked[0]]


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """The median of ``values`` with its 95% distribution-free interval: the order statistics
    x(k), x(n+1−k) with the largest k such that P(Binomial(n, ½) < k) ≤ 2.5% (coverage ≥ 95%);
    infinite ends below 6 values (nan median for none). Infinite values count as the largest."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return math.nan, -math.inf, math.inf
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    k, tail = 0, 0.0
    while True:
        tail += math.comb(n, k) / 2**n  # P(Binomial(n, ½) ≤ k)
        if tail > 0.025:
            break
        k += 1
    if k == 0:
        return med, -math.inf, math.inf
    return med, xs[k - 1], xs[n - k]


# -- weight decay: the best λ inside its range ----------------------------------------------------
def weight_decay_interior(runs: Runs) -> ClaimRow:
    claim = "Weight decay trades better conditioning against a shifted optimum: the best λ lies inside its range"
    exp = f"{WEIGHT_DECAY_SECTION} (NQM with optimum θ* ≠ 0, badly conditioned, short budget: a λ grid)"
    rule = ("final val_loss (the iterate's exact risk) per λ; the best λ has the lowest geometric mean over seeds; "
            "reproduced if it is interior and both ends of the grid are worse than it, paired log2 ratio interval "
            "> 0 each; contradicted if it is an end of the grid and every other λ is worse than it, paired and "
            "significant")
    recs = runs.section(WEIGHT_DECAY_SECTION)
    groups = _groups(recs, "optimizer.weight_decay")
    by = {float(lam or 0.0): _by_seed(runs, rs, "val_loss") for (lam,), rs in groups.items()}
    lams = sorted(by)
    if len(lams) < 3:
        return _missing(claim, exp, rule, "needs ≥ 3 values of λ")
    geo = {lam: mean_interval(math.log2(v) for v in by[lam].values() if 0 < v < math.inf).mean for lam in lams}
    best = min((lam for lam in lams if not math.isnan(geo[lam])), key=lambda lam: geo[lam], default=None)
    if best is None:
        return _missing(claim, exp, rule, "no finished run")
    vs = {lam: _log2_ratio(by[lam], by[best]) for lam in lams if lam != best}
    worse = {lam: e.n >= 2 and e.low > 0 for lam, e in vs.items()}
    ends = (lams[0], lams[-1])
    shown = ", ".join(f"λ={lam:g}: {_ratio_text(vs[lam])}" for lam in lams if lam != best)
    measured = (f"best λ = {best:g} of {', '.join(f'{lam:g}' for lam in lams)}; final risk against it: {shown} "
                f"({max((e.n for e in vs.values()), default=0)} seeds)")
    verdict = decide(best not in ends and worse[ends[0]] and worse[ends[1]], best in ends and all(worse.values()))
    return ClaimRow(claim, exp, measured, verdict, rule)


# -- EMA against the last iterate -----------------------------------------------------------------
def ema_improves(runs: Runs) -> ClaimRow:
    claim = "Evaluating the EMA of the iterates consistently improves on the last iterate"
    exp = f"{AVERAGING_SECTION} (linreg, EMA at each batch size and decay)"
    rule = ("final val_loss of the EMA model / that of the last iterate of the same run, paired log2 ratio over "
            "seeds, at each batch size and decay γ; reproduced if every interval is < 1, contradicted if any is > 1")
    recs = [r for r in runs.section(AVERAGING_SECTION) if r.param("averager") == "ema"]
    if not recs:
        return _missing(claim, exp, rule, "needs EMA runs")
    parts, ests = [], []
    for (b, decay), rs in sorted(_groups(recs, "batch_size", "averager.decay").items()):
        done = [r for r in rs if r.status == "completed"]
        est = _log2_ratio({r.seed: r.metric("avg_val_loss") or math.nan for r in done},
                          {r.seed: r.metric("val_loss") or math.nan for r in done})
        ests.append(est)
        better = sum((r.metric("avg_val_loss") or math.inf) < (r.metric("val_loss") or math.inf) for r in done)
        parts.append(f"B={b}, γ={decay:g}: {_ratio_text(est)} (EMA better on {better} of {len(done)} seeds)")
    measured = "final val_loss, EMA / last iterate: " + "; ".join(parts)
    verdict = decide(all(e.n >= 2 and e.high < 0 for e in ests), any(e.n >= 2 and e.low > 0 for e in ests))
    return ClaimRow(claim, exp, measured, verdict, rule)


# -- the minimal working example's printed weights --------------------------------------------------
def final_params(runs: Runs, record: RunRecord) -> dict[str, dict[str, list[float]]] | None:
    """A run's ``final_params.json`` artifact: learned, averaged and true parameters by name."""
    text = runs.artifact_text(record, "final_params.json")
    return json.loads(text) if text else None


def _w4(params: dict[str, dict[str, list[float]]] | None, kind: str) -> float | None:
    weights = (params or {}).get(kind, {}).get("weight")
    return float(weights[4]) if weights and len(weights) > 4 else None


def mwe_weights(runs: Runs) -> ClaimRow:
    printed = LECTURE_W4
    claim = (f"The minimal working example recovers the true weights: w4 true {printed['true']:.4f}, model "
             f"{printed['learned']:.4f}, EMA {printed['averaged']:.4f} (as printed)")
    exp = (f"{MWE_SECTION} (the lecture's configuration, seed 42) + {MWE_ORDERS_SECTION} (the same data, other "
           "initialisations and sampling orders)")
    rule = (f"the seed-42 run's true w4 equals the printed one to its {PRINTED_DECIMALS} decimals (the same data); "
            "the printed model and EMA w4 each lie in the 95% prediction interval of the final w4 over the "
            f"{MWE_ORDERS_SECTION} seeds (the suite shuffles with its own random stream, not the DataLoader's, so "
            "the same sampling order cannot be replayed); reproduced if all three hold, contradicted if any fails")
    mwe = [r for r in runs.section(MWE_SECTION) if r.status == "completed"]
    params = final_params(runs, mwe[0]) if mwe else None
    true = _w4(params, "true")
    if params is None or true is None:
        return _missing(claim, exp, rule, f"needs the {MWE_SECTION} run's final parameters")
    same_data = round(true, PRINTED_DECIMALS) == printed["true"]
    ours = {k: _w4(params, k) for k in ("learned", "averaged")}
    err = max(abs(a - b) for kind in ("learned", "averaged") for key in ("weight", "bias")
              for a, b in zip(params.get(kind, {}).get(key, []), params["true"].get(key, []), strict=False))
    orders = [final_params(runs, r) for r in runs.section(MWE_ORDERS_SECTION) if r.status == "completed"]
    bands = {k: _prediction_interval([w for p in orders if (w := _w4(p, k)) is not None]) for k in ours}
    seed42 = ", ".join(f"{'model' if k == 'learned' else 'EMA'} {v:.4f}" for k, v in ours.items() if v is not None)
    measured = (f"true w4 {true:.4f} (printed {printed['true']:.4f}); seed 42: {seed42}; every weight and bias of "
                f"either model within {err:.4f} of the true ones")
    if any(b is None for b in bands.values()):
        return ClaimRow(claim, exp, measured + f"; no {MWE_ORDERS_SECTION} spread (≥ 2 seeds needed)",
                        CONTRADICTED if not same_data else INCONCLUSIVE, rule)
    spread = {k: band for k, band in bands.items() if band is not None}
    inside = {k: lo <= printed[k] <= hi for k, (lo, hi) in spread.items()}
    measured += f"; over {len(orders)} sampling orders: " + ", ".join(
        f"{'model' if k == 'learned' else 'EMA'} w4 in [{lo:.4f}, {hi:.4f}] "
        f"(printed {printed[k]:.4f} {'inside' if inside[k] else 'outside'})" for k, (lo, hi) in spread.items())
    verdict = REPRODUCED if same_data and all(inside.values()) else CONTRADICTED
    return ClaimRow(claim, exp, measured, verdict, rule)


def _prediction_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95% t prediction interval of one more draw: mean ± t·sd·√(1 + 1/n)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def evaluate(runs: Runs) -> list[ClaimRow]:
    """Every claim's row, in the lecture's order: those of :mod:`suite.report.claims` and this module's."""
    sweep = claims.Sweep(runs)
    plain: list[Callable[[Runs], ClaimRow]] = [claims.steady_state, wallclock, claims.sampling, momentum_steady_factor]
    rows = [f(runs) for f in plain] + [f(runs, sweep) for f in claims.SWEPT[:4]]
    rows += [weight_decay_interior(runs), claims.schedules_noise_ball(runs), claims.inverse_time_rate(runs)]
    rows += [f(runs, sweep) for f in claims.SWEPT[4:]]
    rows += [ema_improves(runs), mwe_weights(runs)]
    rows.append(claims.tuning_regret(runs, sweep))
    return rows


def closed_form(runs: Runs) -> dict[str, ClaimRow]:
    """Claim -> its rule applied to the NQM closed form, for this module's claims that have one
    (momentum's steady-state factor); the swept and steady-state claims:
    :func:`suite.report.power_nqm.closed_form`."""
    row = momentum_steady_factor(runs, theory_only=True)
    return {} if row.measured.startswith("no data") else {row.claim: row}
