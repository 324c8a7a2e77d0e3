"""Real-data problems on data sets bundled with scikit-learn, as an sgd-suite plugin.

Only the suite's public API is used (``suite.hookimpl``, ``suite.Param``, ``suite.Problem``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from suite import Param, hookimpl

if TYPE_CHECKING:  # torch is imported when a factory runs, so that `suite list` does not need it
    import torch
    from torch import nn

    from suite import BuildContext, Problem

__version__ = "0.1.0"


def _load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    from sklearn import datasets  # bundled CSVs, read from the installed package

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)


def _split(X: torch.Tensor, y: torch.Tensor, val_fraction: float, split_seed: int, standardise_y: bool = False):
    """A fixed permutation split, standardised with the training split's statistics."""
    import torch

    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(split_seed))
    n_val = max(1, int(round(val_fraction * len(X))))
    tr, va = perm[n_val:], perm[:n_val]
    mean, std = X[tr].mean(0), X[tr].std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant columns (digits' borders)
    Xs = (X - mean) / std
    if standardise_y:
        y = (y - y[tr].mean()) / y[tr].std()
    return (Xs[tr], y[tr]), (Xs[va], y[va])


def _init(seed: int, build):
    """Build a module with its initialisation drawn from the run seed only."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _bce_on_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), target.to(logits.dtype))


def make_breast_cancer(ctx: BuildContext, val_fraction: float, split_seed: int) -> Problem:
    from torch import nn

    from suite import Problem

    X, y = _load("breast_cancer")
    train, val = _split(X, y.float(), val_fraction, split_seed)
    model = _init(ctx.seed, lambda: nn.Linear(X.shape[1], 1))
    return Problem(model, _bce_on_logits, train=train, val=val)


def make_digits(ctx: BuildContext, val_fraction: float, split_seed: int, width: int, depth: int) -> Problem:
    from torch import nn

    from suite import Problem

    X, y = _load("digits")
    train, val = _split(X, y.long(), val_fraction, split_seed)

    def build() -> nn.Module:
        layers: list[nn.Module] = []
        fan_in = X.shape[1]
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, 10))
        return nn.Sequential(*layers)

    return Problem(_init(ctx.seed, build), nn.CrossEntropyLoss(), train=train, val=val)


def make_diabetes(ctx: BuildContext, val_fraction: float, split_seed: int) -> Problem:
    import torch
    from torch import nn

    from suite import Problem

    X, y = _load("diabetes")
    (Xt, yt), (Xv, yv) = _split(X, y.float(), val_fraction, split_seed, standardise_y=True)
    yt, yv = yt.unsqueeze(1), yv.unsqueeze(1)
    model = _init(ctx.seed, lambda: nn.Linear(X.shape[1], 1))
    A = torch.cat([Xt, torch.ones(len(Xt), 1)], dim=1).double()
    sol = torch.linalg.lstsq(A, yt.double()).solution.float()
    d = X.shape[1]
    diag = 2 * (A.float() ** 2).mean(dim=0)  # Hessian diagonal of the MSE loss
    return Problem(
        model, nn.MSELoss(), train=(Xt, yt), val=(Xv, yv),
        optimum=[sol[:d].T.contiguous(), sol[d:].reshape(1)],
        curvature=[diag[:d].reshape(1, d), diag[d:].reshape(1)],
    )


def _split_params() -> list[Param]:
    return [
        Param("val_fraction", 0.2, "fraction of examples held out for validation",
              low=0.0, high=0.9, low_inclusive=False),
        Param("split_seed", 0, "seed of the fixed train/validation split (not the run seed)", low=0),
    ]


@hookimpl
def suite_register_problems(register):
    register(
        name="breast_cancer",
        factory=make_breast_cancer,
        description="Logistic regression on scikit-learn's bundled breast-cancer data (569 x 30, binary)",
        params=_split_params(),
    )
    register(
        name="digits",
        factory=make_digits,
        description="ReLU MLP on scikit-learn's bundled 8x8 digits (1797 x 64, 10 classes)",
        params=[*_split_params(),
                Param("width", 32, "hidden units per layer", low=1),
                Param("depth", 1, "hidden layers", low=0)],
    )
    register(
        name="diabetes",
        factory=make_diabetes,
        description="Linear regression on scikit-learn's bundled diabetes data (442 x 10); knows its optimum",
        params=_split_params(),
    )
