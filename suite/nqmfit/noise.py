"""The gradient-noise covariance in an eigenbasis, from per-example gradients."""

from __future__ import annotations

import numpy as np
from torch import Tensor


def noise_in_basis(example_grads: Tensor, basis: np.ndarray) -> tuple[np.ndarray, float]:
    """(c, trace): c_i = u_iᵀ Σ u_i for each column u_i of ``basis``, and tr Σ, where Σ is the
    covariance of one example's gradient (rows of ``example_grads``, centred on their mean, with
    the unbiased 1/(n−1)); a mini-batch of B examples drawn with replacement has covariance Σ/B."""
    G = example_grads.detach().double().numpy()
    n = G.shape[0]
    if n < 2:
        raise ValueError("the noise needs at least two examples")
    D = G - G.mean(0)
    proj = D @ basis
    return (proj**2).sum(0) / (n - 1), float((D**2).sum() / (n - 1))
