"""Built-in samplers: index batches for ``torch.utils.data.DataLoader``-style loops.

Each returns a ``torch.utils.data.BatchSampler`` (lists of training-set indices, one per
mini-batch) drawing from the run's sampling generator ``ctx.generator``.

Registered in :mod:`suite.builtin.samplers` (lazily: this module imports torch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler

from suite import BuildContext
from suite.errors import SpecError


def make_shuffle(ctx: BuildContext, drop_last: bool) -> BatchSampler:
    """Sampling without replacement: a fresh permutation every epoch."""
    return BatchSampler(RandomSampler(range(ctx.n), generator=ctx.generator), ctx.batch_size, drop_last)


def make_replacement(ctx: BuildContext, drop_last: bool) -> BatchSampler:
    """Sampling with replacement: n i.i.d. uniform draws per epoch."""
    draws = RandomSampler(range(ctx.n), replacement=True, num_samples=ctx.n, generator=ctx.generator)
    return BatchSampler(draws, ctx.batch_size, drop_last)


def make_full(ctx: BuildContext, drop_last: bool) -> BatchSampler:
    """Full batch (gradient descent): one batch of all n examples per epoch, whatever the
    batch size. ``drop_last`` has no effect: the one batch is always complete."""
    return BatchSampler(SequentialSampler(range(ctx.n)), ctx.n, drop_last)


class ImportanceSampler(Sampler):
    """Importance sampling: each epoch draws n indices i.i.d. with probabilities ``probs`` and
    yields ``(indices, weights)`` batches with ``weight_i = 1 / (n p_i)``, so the weighted batch
    loss ``mean(w_i * loss_i)`` is an unbiased estimate of the mean training loss (and its
    gradient of the full gradient)."""

    def __init__(self, probs: torch.Tensor, batch_size: int, drop_last: bool, generator: torch.Generator | None):
        self.probs = probs.double() / probs.double().sum()
        self.n = len(probs)
        self.weights = (1.0 / (self.n * self.probs)).tolist()
        self.batch_size, self.drop_last, self.generator = batch_size, drop_last, generator

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[list[int], list[float]]]:
        draws = torch.multinomial(self.probs, self.n, replacement=True, generator=self.generator).tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = draws[start:start + self.batch_size]
            yield idx, [self.weights[i] for i in idx]


def smoothness_probs(X: torch.Tensor, mix: float) -> torch.Tensor:
    """p_i ∝ (1 - mix) · L_i / ΣL + mix / n with L_i = 1 + ‖x_i‖², the smoothness of example i's
    squared loss under a linear model with an intercept (Needell, Srebro and Ward's choice for
    SGD), mixed with uniform sampling so every weight stays bounded by 1/mix."""
    x = X.detach().reshape(len(X), -1).double().cpu()
    smooth = 1.0 + (x**2).sum(dim=1)
    return (1 - mix) * smooth / smooth.sum() + mix / len(x)


def make_importance(ctx: BuildContext, mix: float, drop_last: bool) -> ImportanceSampler:
    """Importance sampling by per-example smoothness (see :func:`smoothness_probs`), weighted
    so that the gradient estimate stays unbiased."""
    X = ctx.problem.X_train
    if X is None or not torch.is_floating_point(X):
        raise SpecError("sampler 'importance' needs a problem with real-valued inputs X_train")
    return ImportanceSampler(smoothness_probs(X, mix), ctx.batch_size, drop_last, ctx.generator)


def make_no_sampler(ctx: BuildContext) -> Any:
    """Never built: problems without a data set take no sampler."""
    raise SpecError("sampler 'none' is for problems without a data set (such as nqm)")


def no_sampler_stack(samplers: Sequence[Any], stack: Any) -> Any:
    """Never called: the stacked engine builds no sampler for a problem without a data set."""
    raise SpecError("sampler 'none' is for problems without a data set (such as nqm)")
