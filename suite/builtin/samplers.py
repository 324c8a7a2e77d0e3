"""Built-in samplers: index batches for ``torch.utils.data.DataLoader``-style loops.

Each returns a ``torch.utils.data.BatchSampler`` (lists of training-set indices, one per
mini-batch) drawing from the run's sampling generator ``ctx.generator``.
"""

from __future__ import annotations

from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from suite import BuildContext, Param, hookimpl
from suite.builtin.stacked_components import full_stack, replacement_stack, shuffle_stack


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
