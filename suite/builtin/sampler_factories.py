"""Built-in samplers: index batches for ``torch.utils.data.DataLoader``-style loops.

Each returns a ``torch.utils.data.BatchSampler`` (lists of training-set indices, one per
mini-batch) drawing from the run's sampling generator ``ctx.generator``.

Registered in :mod:`suite.builtin.samplers` (lazily: this module imports torch).
"""

from __future__ import annotations

from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from suite import BuildContext


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
