"""The top of a Hessian's spectrum by Lanczos on Hessian-vector products, and a power-law tail."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def lanczos(hvp: Callable[[Tensor], Tensor], dim: int, k: int, iters: int | None = None, *,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (descending) and their eigenvectors (columns, ``(dim, k)``)
    of the symmetric operator ``hvp``, from ``iters`` Lanczos steps (default ``min(dim, 2k + 20)``)
    with full reorthogonalisation, in float64. Ritz values converge first at the spectrum's ends;
    with ``iters = dim`` they are exact up to rounding."""
    m = min(dim, iters if iters is not None else 2 * k + 20)
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    gen = torch.Generator().manual_seed(seed)
    Q = torch.zeros(m, dim, dtype=torch.float64)
    q = torch.randn(dim, generator=gen, dtype=torch.float64)
    q /= q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(m):
        Q[j] = q
        w = hvp(q).detach().to(torch.float64).reshape(-1)
        alphas.append(float(w @ q))
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(w.norm())
        if j == m - 1 or b <= 1e-12 * max(1.0, max(abs(a) for a in alphas)):
            break  # an invariant subspace: its Ritz values are exact
        betas.append(b)
        q = w / b
    n = len(alphas)
    T = np.diag(alphas) + np.diag(betas[: n - 1], 1) + np.diag(betas[: n - 1], -1)
    vals, vecs = np.linalg.eigh(T)
    order = np.argsort(vals)[::-1][: min(k, n)]
    return vals[order], (Q[:n].T.numpy() @ vecs[:, order])


@dataclass(frozen=True)
class PowerLaw:
    """λ_i = scale · i^(−exponent), fitted by least squares in log-log on the indices 1..k of
    the positive eigenvalues given."""

    scale: float
    exponent: float

    @classmethod
    def fit(cls, values: np.ndarray) -> PowerLaw:
        """Fit to ``values`` (descending; the non-positive ones are left out)."""
        idx = np.arange(1, len(values) + 1)
        keep = values > 0
        if keep.sum() < 2:
            raise ValueError("a power law needs at least two positive values")
        slope, icpt = np.polyfit(np.log(idx[keep]), np.log(values[keep]), 1)
        return cls(math.exp(icpt), -float(slope))

    def __call__(self, i: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(i, dtype=np.float64) ** -self.exponent
