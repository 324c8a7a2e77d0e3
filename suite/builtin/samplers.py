"""Built-in samplers: index batches for ``torch.utils.data.DataLoader``-style loops.

``shuffle``, ``replacement`` and ``full`` return a ``torch.utils.data.BatchSampler`` (lists of
training-set indices, one per mini-batch); ``importance`` yields weighted batches
``(indices, weights)``; all draw from the run's sampling generator ``ctx.generator``. ``none``
is the sampler of problems without a data set (``nqm``), recorded where no sampler applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler

from suite import BuildContext, Param, hookimpl
from suite.builtin.stacked_components import full_stack, replacement_stack, shuffle_stack
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


DROP_LAST = Param("drop_last", False, "drop the last incomplete batch")


@hookimpl
def suite_register_samplers(register):
    register(
        name="shuffle",
        factory=make_shuffle,
        stacked=shuffle_stack,
        description="Without replacement: each example exactly once per epoch (epoch shuffling)",
        params=[DROP_LAST],
    )
    register(
        name="replacement",
        factory=make_replacement,
        stacked=replacement_stack,
        description="With replacement: n i.i.d. uniform draws per epoch",
        params=[DROP_LAST],
    )
    register(
        name="full",
        factory=make_full,
        stacked=full_stack,
        description="Full batch: one batch of all n examples per epoch (gradient descent)",
        params=[Param("drop_last", False, "no effect: the single batch of all n is always complete")],
    )
    register(
        name="importance",
        factory=make_importance,
        description="Importance sampling ∝ per-example smoothness 1+‖x‖², weighted 1/(n·p) (unbiased)",
        params=[
            Param("mix", 0.5, "share of uniform sampling mixed in (bounds every weight by 1/mix)",
                  low=0.0, high=1.0, low_inclusive=False),
            DROP_LAST,
        ],
    )
    register(
        name="none",
        factory=make_no_sampler,
        stacked=no_sampler_stack,
        description="No sampler: for problems without a data set (nqm), which draw their own gradient noise",
    )
