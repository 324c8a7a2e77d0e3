"""Built-in problems: linreg, mean, logistic, mlp and the noisy quadratic model (nqm, in
:mod:`suite.builtin.nqm`): their factories, registered in :mod:`suite.builtin.problems` (lazily:
this module imports torch).

Every problem but ``linreg`` (which keeps the lecture's single stream so ``--seed 42``
reproduces its numbers) draws its data from ``derive_seed(seed, "data")`` and its model's
initialisation from ``derive_seed(seed, "init")``; the engine draws the sampling noise from a
third stream, ``derive_seed(seed, "sampling")``. Each has a validation set or its exact risk.

``problem.data_seed`` (every problem with a data set) holds the data set fixed across seeds: set,
the data come from ``derive_seed(data_seed, "data")`` (``linreg``: from ``data_seed``'s own
stream, in the lecture's order) and only the initialisation and the sampling follow the seed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from suite import BuildContext, Problem
from suite.builtin.sizes import check_fits
from suite.context import cpu_seeded, derive_seed


@contextmanager
def seeded(seed: int, purpose: str) -> Iterator[torch.Generator]:
    """Run a block with torch's global CPU generator seeded for ``purpose`` (restored afterwards),
    and hand it a generator on the same derived seed (for explicit draws)."""
    s = derive_seed(seed, purpose)
    with cpu_seeded(s):
        yield torch.Generator().manual_seed(s)


def _split(n: int, val_fraction: float) -> int:
    n_train = int((1 - val_fraction) * n)
    return min(max(n_train, 1), n - 1)


class ClassificationProblem(Problem):
    """A problem with class labels: also logs the validation accuracy ``val_acc`` (and the
    averaged model's ``avg_val_acc``)."""

    is_classifier = True  # read by its stacked implementation (which logs ``val_acc`` too)

    @torch.no_grad()
    def model_metrics(self, model: nn.Module) -> dict[str, float]:
        out = model(self.X_val)
        if out.shape[-1] == 1:  # one logit: binary
            pred = (out > 0).to(self.y_val.dtype)
        else:
            pred = out.argmax(dim=-1)
        return {"val_acc": float((pred == self.y_val).float().mean())}


# -- linreg ---------------------------------------------------------------------------------
def make_linreg(ctx: BuildContext, n: int, d: int, noise: float, val_fraction: float,
                data_seed: int | None = None) -> Problem:
    """The lecture's linear regression (its ``generate_data``), split train/val in order.

    The data and then the model's initialisation are drawn from one stream seeded with the run
    seed, in the lecture's order, so ``--seed 42`` reproduces the lecture's true weights. With
    ``data_seed`` the data come from that stream instead (in the same order) and the
    initialisation from ``derive_seed(seed, "init")``.
    """
    # the data in float32, the least-squares system in float64 (and lstsq's copy), its squares
    check_fits("linreg", n * (d + 2) * (4 + 8 + 8 + 4), f"n={n}, d={d}")
    data = _linreg_data(n, d, noise, val_fraction, ctx.seed if data_seed is None else data_seed)
    if data_seed is None:  # the lecture's stream goes on from the data to the model
        with torch.random.fork_rng(devices=[]):
            torch.random.set_rng_state(data.rng_after)
            model = nn.Linear(d, 1)
    else:
        with seeded(ctx.seed, "init"):
            model = nn.Linear(d, 1)
    X_train, y_train, X_val, y_val = (t.clone() for t in data.tensors)  # a run's own, as if drawn for it
    return Problem(
        model,
        nn.MSELoss(),
        train=(X_train, y_train),
        val=(X_val, y_val),
        curvature=[c.clone() for c in data.curvature],
        optimum=[o.clone() for o in data.optimum],
        true_params={k: v.clone() for k, v in data.true_params.items()},
    )


class _LinregData(NamedTuple):
    tensors: tuple[Tensor, Tensor, Tensor, Tensor]  # X_train, y_train, X_val, y_val
    optimum: list[Tensor]
    curvature: list[Tensor]
    true_params: dict[str, Tensor]
    rng_after: Tensor  # torch's RNG state after the data's draws (the lecture draws the model next)


LINREG_CACHE_BYTES = 1 << 28  # the data sets kept, at most (the least recently used go first)
DATA_CACHE_ENV = "SUITE_DATA_CACHE"  # 0: every run draws its data set itself (the same data, slower)
_LINREG_KEPT: OrderedDict[tuple, _LinregData] = OrderedDict()


def _draw_linreg(n: int, d: int, noise: float, val_fraction: float, stream: int) -> _LinregData:
    """linreg's data set drawn from seed ``stream``, its least-squares optimum and curvature: a
    function of its arguments alone (:func:`_linreg_data` keeps it)."""
    with cpu_seeded(stream):
        w_true = torch.randn(d, 1)
        b_true = torch.randn(1)
        X = torch.randn(n, d)
        y = X @ w_true + b_true * torch.ones(n, 1) + noise * torch.randn(n, 1)
        rng_after = torch.random.get_rng_state()
    n_train = int((1 - val_fraction) * n)
    X_train, y_train = X[:n_train], y[:n_train]
    # Closed-form optimum of the training loss: least squares with an intercept column.
    A = torch.cat([X_train, torch.ones(n_train, 1)], dim=1).double()
    sol = torch.linalg.lstsq(A, y_train.double()).solution.float()
    optimum = [sol[:d].T.contiguous(), sol[d:].reshape(1)]
    # The MSE loss is ½·mean(2(w·x+b-y)²): its Hessian is 2·AᵀA/n; the diagonal per parameter.
    diag = 2 * (A.float() ** 2).mean(dim=0)
    curvature = [diag[:d].reshape(1, d), diag[d:].reshape(1)]
    return _LinregData((X_train, y_train, X[n_train:], y[n_train:]), optimum, curvature,
                       {"weight": w_true.T.contiguous(), "bias": b_true}, rng_after)


def _linreg_data(n: int, d: int, noise: float, val_fraction: float, stream: int) -> _LinregData:
    """:func:`_draw_linreg`, kept per process for the runs that share it (the runs of one seed, or
    of one ``data_seed``), up to :data:`LINREG_CACHE_BYTES` of data sets; :func:`make_linreg`
    hands each run copies. Why: a grid drew it once per run and more (its planning builds the
    runs too), and on ``make bench``'s wall-clock experiment (n = 50000, 176 runs on 22 data
    sets) the least squares and the draws were most of its building phase."""
    key = (n, d, noise, val_fraction, stream)
    if os.environ.get(DATA_CACHE_ENV, "1").strip() == "0":
        return _draw_linreg(*key)
    found = _LINREG_KEPT.get(key)
    if found is not None:
        _LINREG_KEPT.move_to_end(key)
        return found
    found = _draw_linreg(*key)
    if _bytes(key) <= LINREG_CACHE_BYTES:
        _LINREG_KEPT[key] = found
        while sum(map(_bytes, _LINREG_KEPT)) > LINREG_CACHE_BYTES:
            _LINREG_KEPT.popitem(last=False)
    return found


def _bytes(key: tuple) -> int:
    """About what a kept data set of ``key`` (n, d, ...) holds: its float32 inputs, targets and intercept."""
    n, d = key[0], key[1]
    return n * (d + 2) * 4


# -- mean -----------------------------------------------------------------------------------
class MeanModel(nn.Module):
    """A single parameter vector ``w``: the prediction for every example is ``w``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def forward(self, x: Tensor) -> Tensor:
        return self.w.expand_as(x)


def half_squared_error(pred: Tensor, target: Tensor) -> Tensor:
    """ℓ(w, x) = ½‖w − x‖², averaged over the batch."""
    return 0.5 * ((pred - target) ** 2).sum(dim=-1).mean()


class MeanProblem(Problem):
    """Mean estimation; ``val_loss`` is the exact population risk ½‖w − μ‖² + ½dσ²."""

    def __init__(self, model: MeanModel, train: tuple[Tensor, Tensor], mu: Tensor, sigma: float) -> None:
        x_bar = train[0].mean(dim=0)
        super().__init__(
            model, half_squared_error, train=train,
            curvature=[torch.ones_like(mu)], optimum=[x_bar], true_params={"w": mu},
        )
        self.sigma = sigma

    def to(self, device: torch.device | str) -> MeanProblem:
        super().to(device)
        self.true_params = {k: v.to(device) for k, v in self.true_params.items()}
        return self

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        mu = self.true_params["w"]
        return float(0.5 * ((model.w - mu) ** 2).sum()) + 0.5 * len(mu) * self.sigma**2


def make_mean(ctx: BuildContext, n: int, d: int, sigma: float, data_seed: int | None = None) -> MeanProblem:
    """Mean estimation (lecture 6): x ~ N(μ, σ²I), μ ~ N(0, I) drawn from the data seed.

    The optimum of the training loss (``dist_to_opt``) is the sample mean; the population
    optimum μ is the true parameter.
    """
    check_fits("mean", 2 * n * d * 4, f"n={n}, d={d}")
    with seeded(ctx.seed if data_seed is None else data_seed, "data") as g:
        mu = torch.randn(d, generator=g)
        x = mu + sigma * torch.randn(n, d, generator=g)
    with seeded(ctx.seed, "init"):
        model = MeanModel(d)
    return MeanProblem(model, (x, x), mu, sigma)


# -- logistic -------------------------------------------------------------------------------
def logistic_optimum(X: Tensor, y: Tensor, iters: int = 100, tol: float = 1e-9) -> Tensor | None:
    """Minimiser (weights, then bias) of the mean binary cross-entropy by Newton's method in
    float64, or ``None`` when it does not converge (separable data has no finite optimum)."""
    A = torch.cat([X, torch.ones(len(X), 1)], dim=1).double()
    t = y.double().reshape(-1)
    w = torch.zeros(A.shape[1], dtype=torch.float64)
    for _ in range(iters):
        p = torch.sigmoid(A @ w)
        grad = A.T @ (p - t) / len(A)
        if float(grad.norm()) < tol:
            # a separable set has no finite optimum: Newton only pushes |w| up until the
            # gradient underflows, with every training example classified correctly
            separable = bool((((A @ w) > 0).double() == t).all())
            return None if separable else w
        hess = (A.T * (p * (1 - p))) @ A / len(A)
        try:
            w = w - torch.linalg.solve(hess, grad)
        except RuntimeError:  # singular Hessian: separable
            return None
        if not bool(torch.isfinite(w).all()) or float(w.norm()) > 1e6:
            return None
    return None


def make_logistic(ctx: BuildContext, n: int, d: int, label_noise: float, val_fraction: float,
                  data_seed: int | None = None) -> Problem:
    """Logistic regression (binary cross-entropy on logits) on synthetic data.

    A generating (w*, b*) ~ N(0, I) labels x ~ N(0, I) by the sign of w*·x + b*, and a
    fraction ``label_noise`` of the labels is flipped. When the training set is not separable
    the optimum is found by Newton's method (``dist_to_opt``); the curvature is the diagonal
    of the Hessian there (at w = 0 when there is no finite optimum).
    """
    # the data in float32, Newton's system in float64 (the design matrix, its squares, the Hessian)
    check_fits("logistic", n * (d + 2) * (4 + 8 + 8) + 3 * (d + 1) ** 2 * 8, f"n={n}, d={d}")
    with seeded(ctx.seed if data_seed is None else data_seed, "data") as g:
        w_true = torch.randn(d, generator=g)
        b_true = torch.randn(1, generator=g)
        X = torch.randn(n, d, generator=g)
        y = (X @ w_true + b_true > 0).float()
        flip = torch.rand(n, generator=g) < label_noise
        y = torch.where(flip, 1 - y, y).reshape(n, 1)
    with seeded(ctx.seed, "init"):
        model = nn.Linear(d, 1)
    n_train = _split(n, val_fraction)
    X_train, y_train = X[:n_train], y[:n_train]
    sol = logistic_optimum(X_train, y_train)
    A = torch.cat([X_train, torch.ones(n_train, 1)], dim=1).double()
    p = torch.sigmoid(A @ sol) if sol is not None else torch.full((n_train,), 0.5, dtype=torch.float64)
    diag = ((A**2) * (p * (1 - p))[:, None]).mean(dim=0).float()
    optimum = None if sol is None else [sol[:d].float().reshape(1, d), sol[d:].float().reshape(1)]
    return ClassificationProblem(
        model,
        nn.BCEWithLogitsLoss(),
        train=(X_train, y_train),
        val=(X[n_train:], y[n_train:]),
        curvature=[diag[:d].reshape(1, d), diag[d:].reshape(1)],
        optimum=optimum,
        true_params={"weight": w_true.reshape(1, d), "bias": b_true},
    )


# -- mlp ------------------------------------------------------------------------------------
def relu_mlp(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``width`` units, then a linear output layer."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width if depth else d_in, d_out))
    return nn.Sequential(*layers)


def make_mlp(
    ctx: BuildContext, n: int, d: int, width: int, depth: int, task: str, classes: int, noise: float,
    val_fraction: float, data_seed: int | None = None,
) -> Problem:
    """A ReLU network fitting a random teacher network of the same shape.

    Classification: the label is the teacher's arg-max over ``classes`` logits (cross-entropy).
    Regression: the teacher's standardised output plus N(0, noise²) (MSE). No known optimum or
    curvature.
    """
    d_out = classes if task == "classification" else 1
    weights = d * width + depth * width * width + (width if depth else d) * d_out
    # the data and the teacher's activations on all of it; teacher and model weights
    check_fits("mlp", n * (d + 2 * max(width, d_out) + 1) * 4 + 2 * weights * 4,
               f"n={n}, d={d}, width={width}, depth={depth}")
    d_out = classes if task == "classification" else 1
    with seeded(ctx.seed if data_seed is None else data_seed, "data") as g:
        teacher = relu_mlp(d, width, depth, d_out)
        X = torch.randn(n, d, generator=g)
        with torch.no_grad():
            t = teacher(X)
        if task == "classification":
            y = t.argmax(dim=1)
        else:
            y = (t - t.mean()) / t.std().clamp_min(1e-12) + noise * torch.randn(n, 1, generator=g)
    with seeded(ctx.seed, "init"):
        model = relu_mlp(d, width, depth, d_out)
    n_train = _split(n, val_fraction)
    cls = ClassificationProblem if task == "classification" else Problem
    loss = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
    return cls(model, loss, train=(X[:n_train], y[:n_train]), val=(X[n_train:], y[n_train:]))
