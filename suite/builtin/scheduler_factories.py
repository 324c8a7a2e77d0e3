"""Built-in learning-rate schedulers (torch.optim.lr_scheduler), stepped once per epoch as in
the lecture (an NQM "epoch" is one evaluation window).

Linear warm-up: every scheduler but ``plateau`` takes ``warmup_steps`` = w. The warm-up counts
the scheduler's own steps (epochs here): for k < w the lr is α₀(k+1)/(w+1), then the schedule
runs from its own start (torch's ``LinearLR`` followed by the schedule in a ``SequentialLR``).
``plateau`` cannot be sequenced by ``SequentialLR`` (it steps on a metric), so it has no
``warmup_steps``.

Registered in :mod:`suite.builtin.schedulers` (lazily: this module imports torch).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from suite import BuildContext


def with_warmup(optimizer: Optimizer, warmup_steps: int, schedule: Callable[[], LRScheduler]) -> LRScheduler:
    """``schedule()`` preceded by a linear warm-up of ``warmup_steps`` scheduler steps."""
    if warmup_steps == 0:
        return schedule()
    warmup = LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, schedule()], milestones=[warmup_steps])


def inverse_time_factor(k: int, beta: float) -> float:
    """The 1/t schedule's factor: α_k = α₀ / (1 + βk)."""
    return 1.0 / (1.0 + beta * k)


def make_constant(ctx: BuildContext, warmup_steps: int) -> LRScheduler:
    """A constant learning rate (torch's ConstantLR with factor 1)."""
    return with_warmup(ctx.optimizer, warmup_steps, lambda: ConstantLR(ctx.optimizer, factor=1.0, total_iters=0))


def make_step(ctx: BuildContext, step_size: int | None, gamma: float, warmup_steps: int) -> LRScheduler:
    """Step decay: α_k = α₀ γ^⌊k / step_size⌋ (step_size defaults to a third of the run)."""
    size = step_size or max(1, ctx.total_epochs // 3)
    return with_warmup(ctx.optimizer, warmup_steps, lambda: StepLR(ctx.optimizer, step_size=size, gamma=gamma))


def make_exponential(ctx: BuildContext, gamma: float, warmup_steps: int) -> LRScheduler:
    """Exponential decay: α_k = α₀ γ^k."""
    return with_warmup(ctx.optimizer, warmup_steps, lambda: ExponentialLR(ctx.optimizer, gamma=gamma))


def make_inverse_time(ctx: BuildContext, beta: float, warmup_steps: int) -> LRScheduler:
    """1/t decay: α_k = α₀ / (1 + βk), through LambdaLR as in the lecture."""
    return with_warmup(
        ctx.optimizer, warmup_steps, lambda: LambdaLR(ctx.optimizer, partial(inverse_time_factor, beta=beta))
    )


def make_cosine(ctx: BuildContext, T_max: int | None, eta_min: float, warmup_steps: int) -> LRScheduler:
    """Cosine annealing from the initial lr to ``eta_min`` over ``T_max`` epochs (default: the
    run, less the warm-up)."""
    length = T_max or max(1, ctx.total_epochs - warmup_steps)
    return with_warmup(
        ctx.optimizer, warmup_steps, lambda: CosineAnnealingLR(ctx.optimizer, T_max=length, eta_min=eta_min)
    )


def make_plateau(
    ctx: BuildContext, factor: float, patience: int, threshold: float, cooldown: int, min_lr: float
) -> ReduceLROnPlateau:
    """Multiply the lr by ``factor`` after ``patience`` epochs without the validation loss
    improving (relative ``threshold``); the engine feeds it the validation loss."""
    return ReduceLROnPlateau(
        ctx.optimizer, mode="min", factor=factor, patience=patience, threshold=threshold, cooldown=cooldown,
        min_lr=min_lr,
    )
