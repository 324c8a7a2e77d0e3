"""Statistics for comparisons over seeds and tuning studies: means with 95% t intervals, paired
differences, the two-level bootstrap over studies and seeds, slopes.

Variants of one experiment run on the same seeds, so they are compared *paired*: the difference
on each seed, then the mean of those differences with its 95% t interval. Data-set variation
between seeds cancels out of a paired difference, which is why it can show a real difference
that two overlapping "mean ± std" hide, and why a difference within the noise shows as an
interval covering 0 ("no significant difference").

A tuned cell (method × batch size) is R independent tuning studies, each winner re-run on the
same fresh seeds (:func:`study_estimate`): its value is the median over studies of each
study's mean over seeds, and its interval a two-level percentile bootstrap (resample studies,
then seeds within each), so it covers the tuning as well as the seeds. Two methods are
compared every study against every study, paired on fresh seed, with an interval over the seeds
of the best studies' difference ± the larger of the two methods' spreads over studies
(:func:`crossed_studies`: tuning error is one-sided, so a spread around the median would not
cover the difference at the optima). With one study the
interval is the t interval over seeds, and says that it covers the seeds only. A claim that
rests on k cells reads each cell's interval at level 1 − 0.05/k (Bonferroni, :func:`bonferroni`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from suite.report.memo import remembered

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals):
    a table up to 30, the Cornish-Fisher expansion beyond (error < 1e-3)."""
    if df < 1:
        raise ValueError("a t interval needs at least 1 degree of freedom (2 values)")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@functools.lru_cache(maxsize=1024)
def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with ``df`` degrees of freedom: :func:`t975`
    at 0.975, else the CDF (Simpson's rule on the density, 4096 intervals) inverted by bisection
    (error < 1e-4 for q ≤ 0.999). Kept per (q, df): a report asks for the same few pairs hundreds
    of times (Bonferroni levels), at 1.6 ms each."""
    if df < 1:
        raise ValueError("a t interval needs at least 1 degree of freedom (2 values)")
    if q == 0.975:
        return t975(df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        u = np.linspace(0.0, t, 4097)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(u * u / df))
        return 0.5 + (u[1] - u[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


LEVEL = 0.95  # every interval's level, before a correction for multiple comparisons
SEEDS = "seeds"
STUDIES_AND_SEEDS = "studies and seeds"
STUDY_RANGE = "study range and seeds"  # two methods' tuning: best studies ± the larger spread (crossed_studies)


def bonferroni(cells: int, level: float = LEVEL) -> float:
    """The level of each of ``cells`` intervals that one claim rests on (Bonferroni): the claim's
    error rate stays ≤ 1 − ``level``."""
    return 1 - (1 - level) / max(1, cells)


@dataclass(frozen=True)
class Estimate:
    """A mean (for several tuning studies: the median over studies of each study's mean) with its
    interval over ``n`` values (``low``/``high`` infinite when n < 2); ``covers``: what the interval
    covers (:data:`SEEDS`, or :data:`STUDIES_AND_SEEDS` for ``studies`` ≥ 2)."""

    mean: float
    low: float
    high: float
    n: int
    covers: str = SEEDS
    studies: int = 1
    level: float = LEVEL

    @property
    def label(self) -> str:
        """What the interval is: ``95% t interval over seeds``, ``95% bootstrap over studies and
        seeds``; one study says that the tuning is not covered."""
        pct = f"{self.level * 100:.4g}%"
        if self.covers == STUDIES_AND_SEEDS:
            return f"{pct} bootstrap over {self.studies} studies and seeds"
        if self.covers == STUDY_RANGE:
            return f"{pct} over seeds of the best studies ± the larger spread over {self.studies} studies"
        return f"{pct} t interval over seeds" + (" (1 study: the tuning is not covered)" if self.studies == 1
                                                  and self.covers == SEEDS else "")

    @property
    def covers_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return not self.covers_zero

    def within(self, lo: float, hi: float) -> bool:
        """The whole interval lies in [lo, hi]."""
        return lo <= self.low and self.high <= hi

    def outside(self, lo: float, hi: float) -> bool:
        """The whole interval lies outside [lo, hi]."""
        return self.high < lo or self.low > hi

    def text(self, fmt: str = ".3g", signed: bool = False) -> str:
        """``mean [low, high]`` (``mean (n=1)`` when there is no interval)."""
        sign = "+" if signed else ""
        if not math.isfinite(self.low) or not math.isfinite(self.high):
            return f"{self.mean:{sign}{fmt}} (n={self.n}, no interval)"
        return f"{self.mean:{sign}{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def mean_interval(values: Iterable[float], level: float = LEVEL) -> Estimate:
    """Mean and t interval (95% unless ``level``) of ``values`` (finite values only)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Estimate(math.nan, -math.inf, math.inf, 0, level=level)
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return Estimate(mean, -math.inf, math.inf, n, level=level)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(1 - (1 - level) / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, level=level)


StudyValues = Mapping[int, Mapping[int, float]]  # study index -> fresh seed -> value
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # the bootstrap is seeded: a report computed twice reads the same


def study_estimate(values: StudyValues, level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> Estimate:
    """A tuned cell's value from its studies' re-evaluated winners (``study -> seed -> value``,
    finite values only): the median over studies of each study's mean over its seeds, with a
    two-level percentile bootstrap interval (``resamples`` times: draw the studies with
    replacement, then each drawn study's seeds with replacement; the median of those means).
    With one study: its mean and the t interval over its seeds (which does not cover the tuning,
    and says so: :attr:`Estimate.label`)."""
    kept = tuple(vals for vs in values.values()
                 if (vals := tuple(float(v) for v in vs.values() if v is not None and math.isfinite(v))))
    if len(kept) < 2:
        return mean_interval(kept[0] if kept else (), level)
    # the same cell's values come back from several claims and draws (suite.report.memo)
    return remembered(("study_estimate", kept, level, resamples, seed),
                      lambda: _two_level_bootstrap(kept, level, resamples, seed))


def _two_level_bootstrap(studies: tuple[tuple[float, ...], ...], level: float, resamples: int,
                         seed: int) -> Estimate:
    """:func:`study_estimate` of two or more studies' finite values."""
    arrays = [np.array(vals) for vals in studies]
    r, n = len(arrays), sum(len(a) for a in arrays)
    point = float(np.median([a.mean() for a in arrays]))
    rng = np.random.default_rng(seed)
    # means[s, b, j]: study s's seeds resampled for position j of bootstrap sample b
    means = np.stack([a[rng.integers(0, len(a), size=(resamples, r, len(a)))].mean(axis=2) for a in arrays])
    pick = rng.integers(0, r, size=(resamples, r))
    medians = np.median(np.take_along_axis(means, pick[None], axis=0)[0], axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return Estimate(point, float(low), float(high), n, STUDIES_AND_SEEDS, r, level)


def paired_studies(a: StudyValues, b: StudyValues, level: float = LEVEL) -> Estimate:
    """``a − b`` paired on (study index, seed): per study the differences on the seeds both have
    finite values for, then :func:`study_estimate` of them. Positive: ``a`` is larger."""
    diffs = {k: {s: a[k][s] - b[k][s] for s in a[k] if s in b[k] and _finite(a[k][s]) and _finite(b[k][s])}
             for k in a if k in b}
    return study_estimate(diffs, level)


def crossed_studies(a: StudyValues, b: StudyValues, level: float = LEVEL, resamples: int = RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> Estimate:
    """``a − b`` for two tuned methods whose R studies each were re-evaluated on the same fresh
    seeds: every study of ``a`` against every study of ``b`` (the two methods' tunings are
    independent, so no pairing of study indices is privileged), paired on seed. The value is the
    median over the R×R study pairs of the mean paired difference.

    Tuning error is one-sided (a tuned cell never beats its optimum, up to the seeds), so a spread
    of studies around their median does not cover the difference at the optima. The interval is
    the difference of the two methods' best studies, widened either way by the larger of the two
    methods' spreads over their studies (max − min of the study means): it covers the difference
    at the optima whenever each method's best study lies within that spread of its optimum, and it
    holds every study pair's difference (the range over the pairs). Its ends are the ``(1 −
    level)/2`` and ``(1 + level)/2`` quantiles over a bootstrap of the shared seeds. With one study
    each: :func:`paired_studies` (the t interval over seeds, which says it does not cover the
    tuning)."""
    ka = [k for k in a if any(_finite(v) for v in a[k].values())]
    kb = [k for k in b if any(_finite(v) for v in b[k].values())]
    if len(ka) < 2 or len(kb) < 2:
        return paired_studies(a, b, level)
    seeds = sorted(set.intersection(*(set(s for s, v in a[k].items() if _finite(v)) for k in ka),
                                    *(set(s for s, v in b[k].items() if _finite(v)) for k in kb)))
    if len(seeds) < 2:
        return paired_studies(a, b, level)
    A = np.array([[a[k][s] for s in seeds] for k in ka])  # [studies of a, seeds]
    B = np.array([[b[k][s] for s in seeds] for k in kb])
    point = float(np.median(A.mean(axis=1)[:, None] - B.mean(axis=1)[None, :]))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    am, bm = A[:, pick].mean(axis=2), B[:, pick].mean(axis=2)  # [studies, resamples]: each study's mean
    best = am.min(axis=0) - bm.min(axis=0)
    spread = np.maximum(am.max(axis=0) - am.min(axis=0), bm.max(axis=0) - bm.min(axis=0))
    tail = (1 - level) / 2
    low = float(np.quantile(best - spread, tail))
    high = float(np.quantile(best + spread, 1 - tail))
    return Estimate(point, low, high, A.shape[0] * B.shape[0] * len(seeds), STUDY_RANGE, min(len(ka), len(kb)),
                    level)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Estimate:
    """The mean of ``a[seed] - b[seed]`` over the seeds both have finite values for, with its 95%
    t interval. Positive: ``a`` is larger (for a loss: worse)."""
    seeds = [s for s in a if s in b and _finite(a[s]) and _finite(b[s])]
    return mean_interval(a[s] - b[s] for s in seeds)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` on ``xs``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a slope needs at least two distinct x values")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def fit_two(x1: Sequence[float], x2: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares coefficients (b1, b2) of y = b0 + b1·x1 + b2·x2."""
    n = len(ys)
    m1, m2, my = sum(x1) / n, sum(x2) / n, sum(ys) / n
    a = [u - m1 for u in x1]
    b = [v - m2 for v in x2]
    c = [y - my for y in ys]
    s11, s22, s12 = sum(u * u for u in a), sum(v * v for v in b), sum(u * v for u, v in zip(a, b, strict=True))
    s1y, s2y = sum(u * y for u, y in zip(a, c, strict=True)), sum(v * y for v, y in zip(b, c, strict=True))
    det = s11 * s22 - s12 * s12
    if det <= 0:
        raise ValueError("the two regressors are collinear")
    return (s22 * s1y - s12 * s2y) / det, (s11 * s2y - s12 * s1y) / det


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


STEADY_TAIL = 0.5  # the steady state: the last half of a run's evaluations


def tail_mean(history: list[tuple[int, float]], fraction: float = 0.5) -> float | None:
    """Mean of the last ``fraction`` of a history's evaluations (the steady state's average)."""
    vals = [v for _, v in history]
    if not vals:
        return None
    k = max(1, int(len(vals) * fraction))
    tail = vals[-k:]
    return sum(tail) / len(tail) if all(math.isfinite(v) for v in tail) else None
