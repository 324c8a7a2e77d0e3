"""Built-in problems."""

from __future__ import annotations

import torch
from torch import nn

from suite import BuildContext, Param, Problem, hookimpl
from suite.context import derive_seed


def make_linreg(ctx: BuildContext, n: int, d: int, noise: float, val_fraction: float) -> Problem:
    """The lecture's linear regression (its ``generate_data``), split train/val in order.

    The data and then the model's initialisation are drawn from one stream seeded with the run
    seed, in the lecture's order, so ``--seed 42`` reproduces the lecture's true weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        w_true = torch.randn(d, 1)
        b_true = torch.randn(1)
        X = torch.randn(n, d)
        y = X @ w_true + b_true * torch.ones(n, 1) + noise * torch.randn(n, 1)
        model = nn.Linear(d, 1)
    n_train = int((1 - val_fraction) * n)
    X_train, y_train = X[:n_train], y[:n_train]
    # Closed-form optimum of the training loss: least squares with an intercept column.
    A = torch.cat([X_train, torch.ones(n_train, 1)], dim=1).double()
    sol = torch.linalg.lstsq(A, y_train.double()).solution.float()
    optimum = [sol[:d].T.contiguous(), sol[d:].reshape(1)]
    # The MSE loss is ½·mean(2(w·x+b-y)²): its Hessian is 2·AᵀA/n; the diagonal per parameter.
    diag = 2 * (A.float() ** 2).mean(dim=0)
    curvature = [diag[:d].reshape(1, d), diag[d:].reshape(1)]
    return Problem(
        model,
        nn.MSELoss(),
        train=(X_train, y_train),
        val=(X[n_train:], y[n_train:]),
        curvature=curvature,
        optimum=optimum,
        true_params={"weight": w_true.T.contiguous(), "bias": b_true},
    )


@hookimpl
def suite_register_problems(register):
    register(
        name="linreg",
        factory=make_linreg,
        description="Linear regression on the lecture's synthetic data (MSE); knows its optimum",
        params=[
            Param("n", 1000, "number of examples (train + validation)", low=2),
            Param("d", 5, "input dimension", low=1),
            Param("noise", 0.5, "standard deviation of the label noise", low=0.0),
            Param("val_fraction", 0.2, "fraction held out for validation (the last examples)",
                  low=0.0, high=1.0, low_inclusive=False, high_inclusive=False),
        ],
    )


__all__ = ["derive_seed", "make_linreg"]
