"""The NQM that matches a network at a checkpoint, and its predicted steps to a target against B.

The NQM is a sum of independent quadratic directions, each with a curvature h, one example's
gradient noise c and the start's second moment s₀ = E θ₀²; its risk and its moment recursions are
linear in (s₀, c) together, so a direction holding only start (c = 0) and one holding only noise
(s₀ = 0) at the same h add up exactly to one holding both. The fitted NQM is built from such
atoms, all measured at the checkpoint:

- the top k eigenvectors u_i of the Hessian (Lanczos): h_i, c_i = u_iᵀΣu_i, and the start from the
  gradient along u_i, g_i = h_i θ_i, so s₀ᵢ = g_i² / h_i²;
- the rest of the spectrum (the Hessian with the top k projected out), where no single direction
  is resolved: the measure of the gradient over it by Lanczos quadrature from the projected
  gradient (nodes x_j, weights w_j = energy of g near x_j) gives start atoms s₀ = w_j / x_j²; the
  measure of Σ over it, by Lanczos quadrature from random combinations of the centred per-example
  gradients (whose covariance is Σ), gives noise atoms c = w_j, scaled so that they hold exactly
  the measured tr Σ − Σ_i c_i.

Directions of non-positive curvature cannot be a convex quadratic's: they are left out, and the
share of the gradient energy and of tr Σ they held is reported (:attr:`FittedNQM.dropped_gradient`,
:attr:`FittedNQM.dropped_noise`). The power law of the top k eigenvalues and the exponent of
c ∝ h^q on them are descriptive (logged), not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from suite import theory
from suite.critical import critical_batch_size
from suite.nqmfit.spectrum import PowerLaw

MOMENTUM = 0.9
ADAM_P = 0.5


@dataclass(frozen=True)
class FittedNQM:
    """Per atom: curvature ``h``, one example's gradient noise ``c`` and the start's second
    moment ``s0`` (measured masses; an atom may stand for many directions)."""

    h: np.ndarray
    c: np.ndarray
    s0: np.ndarray
    curvature_tail: PowerLaw  # descriptive: h_i ∝ i^−α on the top k
    noise_exponent: float  # descriptive: c ∝ h^q on the top k
    tail_noise: float  # the noise mass outside the top k (tr Σ − Σ_i c_i)
    dropped_gradient: float = 0.0  # share of |g|² on non-positive curvature, left out
    dropped_noise: float = 0.0  # share of tr Σ on non-positive curvature, left out
    top: int = 0  # the first ``top`` atoms are the top-k eigendirections

    @property
    def initial_risk(self) -> float:
        """½ Σ h s₀: the NQM's risk at the start (the checkpoint's excess loss as the model sees it)."""
        return 0.5 * float((self.h * self.s0).sum())

    @property
    def top_risk_share(self) -> float:
        """The share of :attr:`initial_risk` the top-k directions hold (they come first)."""
        top = 0.5 * float((self.h[: self.top] * self.s0[: self.top]).sum())
        return top / self.initial_risk if self.initial_risk > 0 else 0.0


Measure = tuple[np.ndarray, np.ndarray]  # (nodes, weights) of a Lanczos quadrature


def fit_nqm(top_h: np.ndarray, top_c: np.ndarray, top_g: np.ndarray, rest_gradient: Measure,
            rest_noise: Measure, noise_trace: float) -> FittedNQM:
    """The NQM from the top eigenvalues ``top_h`` (descending) with the noise ``top_c`` and the
    gradient ``top_g`` along their eigenvectors, the gradient's and the noise's measures over the
    rest of the spectrum, and the measured tr Σ (module docstring)."""
    top_h, top_c, top_g = (np.asarray(a, dtype=np.float64) for a in (top_h, top_c, top_g))
    gx, gw = rest_gradient
    nx, nw = rest_noise
    tail_noise = max(noise_trace - float(np.maximum(top_c, 0).sum()), 0.0)
    nw = nw * (tail_noise / nw.sum()) if nw.sum() > 0 else nw
    grad_total = float((top_g**2).sum() + gw.sum())
    keep, gk, nk = top_h > 0, gx > 0, nx > 0
    dropped_g = (float((top_g[~keep] ** 2).sum() + gw[~gk].sum()) / grad_total) if grad_total > 0 else 0.0
    dropped_c = (float(np.maximum(top_c[~keep], 0).sum() + nw[~nk].sum()) / noise_trace) if noise_trace > 0 else 0.0
    h_top = top_h[keep]
    h = np.concatenate([h_top, gx[gk], nx[nk]])
    c = np.concatenate([np.maximum(top_c[keep], 0.0), np.zeros(int(gk.sum())), nw[nk]])
    s0 = np.concatenate([top_g[keep] ** 2 / h_top**2, gw[gk] / gx[gk] ** 2, np.zeros(int(nk.sum()))])
    pos = (top_c > 0) & keep
    q = float(np.polyfit(np.log(top_h[pos]), np.log(top_c[pos]), 1)[0]) if pos.sum() >= 2 else float("nan")
    law = PowerLaw.fit(top_h) if keep.sum() >= 2 else PowerLaw(float("nan"), float("nan"))
    return FittedNQM(h, c, s0, law, q, tail_noise, dropped_g, dropped_c, len(h_top))


def momentum_steps(nqm: FittedNQM, batch_size: float, target: float, beta: float = MOMENTUM) -> tuple[float, float]:
    """(fewest steps, lr) of heavy-ball momentum with constant lr: the exact optimum of
    :func:`suite.theory.optimum` (the moment recursion followed step by step, the lr searched up to
    its stability cap 2(1+β)/h_max)."""
    best = theory.optimum(nqm.h, nqm.c, batch_size, target, momentum=beta, s0=nqm.s0)
    return best.steps, best.lr


MOMENTUM_TUNED = "momentum β tuned"
METHODS = ("SGD", f"momentum β={MOMENTUM:g}", MOMENTUM_TUNED, f"Adam as precond p={ADAM_P:g}")


def predicted_steps(nqm: FittedNQM, method: str, batch_size: float, target: float) -> tuple[float, float]:
    """(fewest steps to ``target``, its lr) of ``method`` (one of :data:`METHODS`) at ``batch_size``."""
    if method == "SGD":
        return theory.best_steps_to_target(nqm.h, nqm.c, batch_size, target, s0=nqm.s0)
    if method == MOMENTUM_TUNED:  # β tuned jointly with the lr, as the networks benchmark tunes it
        best = theory.optimum(nqm.h, nqm.c, batch_size, target, tune_momentum=True, s0=nqm.s0)
        return best.steps, best.lr
    if method.startswith("momentum"):
        return momentum_steps(nqm, batch_size, target)
    if method.startswith("Adam"):
        return theory.best_steps_to_target(nqm.h, nqm.c, batch_size, target, p=ADAM_P, s0=nqm.s0)
    raise ValueError(f"no prediction for {method!r}; one of {', '.join(METHODS)}")


@dataclass
class Prediction:
    """One method's predicted steps (and best lr) at each batch size, and its critical batch size
    (:func:`suite.critical.critical_batch_size` of the predicted curve)."""

    method: str
    batch_sizes: list[float]
    steps: list[float]
    lrs: list[float]
    critical: float | None


def predict(nqm: FittedNQM, batch_sizes: Sequence[float], target: float,
            methods: Sequence[str] = METHODS) -> list[Prediction]:
    """Each method's predicted steps against ``batch_sizes`` (ascending) and its critical batch size."""
    out = []
    for m in methods:
        res = [predicted_steps(nqm, m, b, target) for b in batch_sizes]
        steps = [s for s, _ in res]
        out.append(Prediction(m, list(map(float, batch_sizes)), steps, [lr for _, lr in res],
                              critical_batch_size(list(batch_sizes), steps)))
    return out
