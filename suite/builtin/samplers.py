"""Built-in samplers: index batches for ``torch.utils.data.DataLoader``-style loops."""

from __future__ import annotations

from torch.utils.data import BatchSampler, RandomSampler

from suite import BuildContext, Param, hookimpl


def make_shuffle(ctx: BuildContext, drop_last: bool) -> BatchSampler:
    """Sampling without replacement: a fresh permutation every epoch."""
    return BatchSampler(RandomSampler(range(ctx.n), generator=ctx.generator), ctx.batch_size, drop_last)


@hookimpl
def suite_register_samplers(register):
    register(
        name="shuffle",
        factory=make_shuffle,
        description="Without replacement: each example exactly once per epoch (epoch shuffling)",
        params=[Param("drop_last", False, "drop the last incomplete batch")],
    )
