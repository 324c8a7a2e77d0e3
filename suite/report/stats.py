"""Statistics for comparisons over seeds: means with 95% t intervals, paired differences, slopes.

Variants of one experiment run on the same seeds, so they are compared *paired*: the difference
on each seed, then the mean of those differences with its 95% t interval. Data-set variation
between seeds cancels out of a paired difference, which is why it can show a real difference
that two overlapping "mean ± std" hide, and why a difference within the noise shows as an
interval covering 0 ("no significant difference").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval over ``n`` values (``low``/``high`` infinite when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

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


def mean_interval(values: Iterable[float]) -> Estimate:
    """Mean and 95% t interval of ``values`` (finite values only)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Estimate(math.nan, -math.inf, math.inf, 0)
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return Estimate(mean, -math.inf, math.inf, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


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
