"""The problems and their factories. Classifiers (``digits``, ``mnist1d_mlp``, ``mnist1d_cnn``)
keep a held-out test split besides the validation split: ``val_acc`` is logged at every
evaluation, ``test_loss`` and ``test_acc`` once, when a run completes (:meth:`final_metrics`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite import BuildContext, Problem
from suite_realdata.data import Splits, load_sklearn, mnist1d_splits, split
from suite_realdata.models import cnn1d, mlp, seeded

N_CLASSES = 10
MNIST1D_LENGTH = 40


def accuracy(logits: Tensor, y: Tensor) -> float:
    """The fraction of examples whose arg-max logit is their class."""
    return float((logits.argmax(dim=-1) == y).float().mean())


class Classifier(Problem):
    """A classifier with cross-entropy loss on train / validation / test splits. The test split
    is looked at only once, by :meth:`final_metrics`."""

    def __init__(self, model: nn.Module, splits: Splits) -> None:
        super().__init__(model, nn.CrossEntropyLoss(), train=splits.train, val=splits.val)
        self.X_test, self.y_test = splits.test

    def to(self, device: torch.device | str) -> Classifier:
        super().to(device)
        self.X_test, self.y_test = self.X_test.to(device), self.y_test.to(device)
        return self

    @torch.no_grad()
    def model_metrics(self, model: nn.Module) -> dict[str, float]:
        return {"val_acc": accuracy(model(self.X_val), self.y_val)}

    @torch.no_grad()
    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        out = model(self.X_test)
        return {"test_loss": float(F.cross_entropy(out, self.y_test)), "test_acc": accuracy(out, self.y_test)}


def _bce_on_logits(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.to(logits.dtype))


def make_breast_cancer(ctx: BuildContext, val_fraction: float, split_seed: int) -> Problem:
    X, y = load_sklearn("breast_cancer")
    s = split(X, y.float(), val_fraction, split_seed)
    model = seeded(ctx.seed, lambda: nn.Linear(X.shape[1], 1))
    return Problem(model, _bce_on_logits, train=s.train, val=s.val)


def make_digits(ctx: BuildContext, val_fraction: float, test_fraction: float, split_seed: int, width: int,
                depth: int) -> Classifier:
    X, y = load_sklearn("digits")
    s = split(X, y.long(), val_fraction, split_seed, test_fraction=test_fraction)
    return Classifier(seeded(ctx.seed, lambda: mlp(X.shape[1], width, depth, N_CLASSES)), s)


def make_diabetes(ctx: BuildContext, val_fraction: float, split_seed: int) -> Problem:
    X, y = load_sklearn("diabetes")
    (Xt, yt), (Xv, yv), _ = split(X, y.float(), val_fraction, split_seed, standardise_y=True)
    yt, yv = yt.unsqueeze(1), yv.unsqueeze(1)
    model = seeded(ctx.seed, lambda: nn.Linear(X.shape[1], 1))
    A = torch.cat([Xt, torch.ones(len(Xt), 1)], dim=1).double()
    sol = torch.linalg.lstsq(A, yt.double()).solution.float()
    d = X.shape[1]
    diag = 2 * (A.float() ** 2).mean(dim=0)  # Hessian diagonal of the MSE loss
    return Problem(
        model, nn.MSELoss(), train=(Xt, yt), val=(Xv, yv),
        optimum=[sol[:d].T.contiguous(), sol[d:].reshape(1)],
        curvature=[diag[:d].reshape(1, d), diag[d:].reshape(1)],
    )


def make_mnist1d_mlp(ctx: BuildContext, num_samples: int, data_seed: int, val_fraction: float, split_seed: int,
                     width: int, depth: int) -> Classifier:
    s = mnist1d_splits(num_samples, data_seed, val_fraction, split_seed)
    return Classifier(seeded(ctx.seed, lambda: mlp(MNIST1D_LENGTH, width, depth, N_CLASSES)), s)


def make_mnist1d_cnn(ctx: BuildContext, num_samples: int, data_seed: int, val_fraction: float, split_seed: int,
                     channels: int) -> Classifier:
    s = mnist1d_splits(num_samples, data_seed, val_fraction, split_seed)
    return Classifier(seeded(ctx.seed, lambda: cnn1d(MNIST1D_LENGTH, channels, N_CLASSES)), s)
