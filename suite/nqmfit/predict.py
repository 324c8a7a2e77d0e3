"""The NQM that matches a fitted spectrum and noise, and its predicted steps to a target against B.

The fitted NQM has the measured top-k eigenvalues h_i with their measured noise c_i, and a tail
for the rest of the parameters: eigenvalues on the power law fitted to the top k
(:class:`suite.nqmfit.spectrum.PowerLaw`), noise c_i ∝ h_i^q with q fitted to the top directions
and the tail's total set to what the measured trace of Σ leaves. The tail is grouped into
log-spaced bins of indices; a bin of w dimensions is one dimension with (h, w·c, w·s₀), which
the moment recursions follow exactly (the second moments are linear in (s₀, c) together).

The start: θ₀ isotropic, E θ_i² = σ², with σ² such that the NQM's expected squared gradient
Σ h_i² σ² equals the measured full-batch gradient's squared norm. The target: a fraction of the
NQM's risk at the start.
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
    """Per (binned) dimension: curvature ``h``, one example's gradient noise ``c`` and the start's
    second moment ``s0`` (both times the bin's multiplicity)."""

    h: np.ndarray
    c: np.ndarray
    s0: np.ndarray
    curvature_tail: PowerLaw
    noise_exponent: float  # c ∝ h^q, fitted on the top directions
    tail_noise: float  # the tail's share of tr Σ
    sigma2: float

    @property
    def initial_risk(self) -> float:
        return 0.5 * float((self.h * self.s0).sum())


def fit_nqm(top_h: np.ndarray, top_c: np.ndarray, dim: int, noise_trace: float, grad_sq: float,
            bins: int = 64) -> FittedNQM:
    """The NQM of ``dim`` parameters from the top eigenvalues ``top_h`` (descending) with their
    noise ``top_c``, the trace of Σ and the squared norm of the full-batch gradient. Non-positive
    eigenvalues are left out (the NQM is convex)."""
    keep = top_h > 0
    h_top, c_top = top_h[keep], np.maximum(top_c[keep], 0.0)
    k = len(top_h)
    tail_law = PowerLaw.fit(top_h)
    pos = c_top > 0
    q = float(np.polyfit(np.log(h_top[pos]), np.log(c_top[pos]), 1)[0]) if pos.sum() >= 2 else 1.0
    h_bins, c_bins, w_bins, hh_bins = [], [], [], []
    if dim > k:
        edges = np.unique(np.round(np.geomspace(k + 1, dim + 1, bins + 1)).astype(np.int64))
        idx = np.arange(k + 1, dim + 1)
        h_tail = tail_law(idx)
        tail_noise = max(noise_trace - float(c_top.sum()), 0.0)
        weight = h_tail**q
        c_tail = tail_noise * weight / weight.sum()
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            sl = slice(a - k - 1, b - k - 1)
            h_bins.append(h_tail[sl].mean())
            c_bins.append(c_tail[sl].sum())
            w_bins.append(b - a)
            hh_bins.append((h_tail[sl] ** 2).sum())
    else:
        tail_noise = 0.0
    h = np.concatenate([h_top, h_bins])
    c = np.concatenate([c_top, c_bins])
    w = np.concatenate([np.ones_like(h_top), w_bins])
    sigma2 = grad_sq / float((h_top**2).sum() + sum(hh_bins))
    return FittedNQM(h, c, sigma2 * w, tail_law, q, tail_noise, sigma2)


def momentum_steps(nqm: FittedNQM, batch_size: float, target: float, beta: float = MOMENTUM) -> tuple[float, float]:
    """(fewest steps, lr) of heavy-ball momentum with constant lr: the exact optimum of
    :func:`suite.theory.optimum` (the moment recursion followed step by step, the lr searched up to
    its stability cap 2(1+β)/h_max)."""
    best = theory.optimum(nqm.h, nqm.c, batch_size, target, momentum=beta, s0=nqm.s0)
    return best.steps, best.lr


METHODS = ("SGD", f"momentum β={MOMENTUM:g}", f"Adam as precond p={ADAM_P:g}")


def predicted_steps(nqm: FittedNQM, method: str, batch_size: float, target: float) -> tuple[float, float]:
    """(fewest steps to ``target``, its lr) of ``method`` (one of :data:`METHODS`) at ``batch_size``."""
    if method == "SGD":
        return theory.best_steps_to_target(nqm.h, nqm.c, batch_size, target, s0=nqm.s0)
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
