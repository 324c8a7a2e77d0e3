"""The top of a Hessian's spectrum by Lanczos on Hessian-vector products, a power law fitted to
it (descriptive), and Lanczos quadrature: how a vector's energy is spread over the spectrum."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Operator = Callable[[Tensor], Tensor]


def _tridiagonal(op: Operator, start: Tensor, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Lanczos from ``start`` (any norm) for at most ``m`` steps with full reorthogonalisation,
    in float64: (T, Q) with T the tridiagonal matrix and Q the orthonormal basis (rows). It stops
    early at an invariant subspace, whose Ritz values are then exact."""
    dim = start.numel()
    Q = torch.zeros(m, dim, dtype=torch.float64)
    q = start.detach().to(torch.float64).reshape(-1)
    q = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(m):
        Q[j] = q
        w = op(q).detach().to(torch.float64).reshape(-1)
        alphas.append(float(w @ q))
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(w.norm())
        if j == m - 1 or b <= 1e-10 * max(1.0, max(abs(a) for a in alphas)):
            break
        betas.append(b)
        q = w / b
    n = len(alphas)
    T = np.diag(alphas) + np.diag(betas[: n - 1], 1) + np.diag(betas[: n - 1], -1)
    return T, Q[:n].numpy()


def lanczos(hvp: Operator, dim: int, k: int, iters: int | None = None, *,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (descending) and their eigenvectors (columns, ``(dim, k)``)
    of the symmetric operator ``hvp``, from ``iters`` Lanczos steps (default ``min(dim, 2k + 20)``)
    with full reorthogonalisation, in float64. Ritz values converge first at the spectrum's ends;
    with ``iters = dim`` they are exact up to rounding."""
    m = min(dim, iters if iters is not None else 2 * k + 20)
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    gen = torch.Generator().manual_seed(seed)
    T, Q = _tridiagonal(hvp, torch.randn(dim, generator=gen, dtype=torch.float64), m)
    vals, vecs = np.linalg.eigh(T)
    order = np.argsort(vals)[::-1][: min(k, len(T))]
    return vals[order], Q.T @ vecs[:, order]


def deflated(hvp: Operator, basis: np.ndarray) -> tuple[Operator, Callable[[Tensor], Tensor]]:
    """(v ↦ PHPv, v ↦ Pv), P the projection onto the complement of the orthonormal columns of
    ``basis``: the operator without the directions already measured."""
    U = torch.as_tensor(basis, dtype=torch.float64)

    def project(v: Tensor) -> Tensor:
        v = v.detach().to(torch.float64).reshape(-1)
        return v - U @ (U.T @ v)

    return (lambda v: project(hvp(project(v)))), project


def quadrature(op: Operator, start: Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Lanczos quadrature (Golub & Meurant): nodes x_j and weights w_j with
    Σ_j w_j f(x_j) ≈ vᵀ f(H) v for the vector ``v = start`` and the symmetric operator ``op``;
    the weights sum to |v|². Exact for polynomials f of degree < 2·``steps``, and for every f when
    the Krylov space of v is exhausted (v lies in ≤ ``steps`` eigenspaces). A zero vector has no
    nodes."""
    norm2 = float(start.detach().double().reshape(-1) @ start.detach().double().reshape(-1))
    if norm2 == 0.0:
        return np.zeros(0), np.zeros(0)
    T, _ = _tridiagonal(op, start, max(1, min(steps, start.numel())))
    nodes, vecs = np.linalg.eigh(T)
    return nodes, norm2 * vecs[0] ** 2


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
