"""Built-in learning-rate schedulers (torch.optim.lr_scheduler), stepped once per epoch as in
the lecture (an NQM "epoch" is one evaluation window).

Linear warm-up: every scheduler but ``plateau`` takes ``warmup_steps`` = w. The warm-up counts
the scheduler's own steps (epochs here): for k < w the lr is α₀(k+1)/(w+1), then the schedule
runs from its own start (torch's ``LinearLR`` followed by the schedule in a ``SequentialLR``).
``plateau`` cannot be sequenced by ``SequentialLR`` (it steps on a metric), so it has no
``warmup_steps``.
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

from suite import BuildContext, Param, Space, hookimpl
from suite.stacked import proxy_scheduler

INTERVAL = "epoch"


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


WARMUP = Param("warmup_steps", 0, "linear warm-up over the first scheduler steps (epochs)", low=0)
GAMMA_HELP = "multiplicative decay γ in (0, 1]"


@hookimpl
def suite_register_schedulers(register):
    register(
        name="constant",
        factory=make_constant,
        description="Constant learning rate",
        interval=INTERVAL,
        stacked=proxy_scheduler,
        params=[WARMUP],
    )
    register(
        name="step",
        factory=make_step,
        description="Step decay α₀γ^⌊k/step_size⌋ (StepLR)",
        interval=INTERVAL,
        stacked=proxy_scheduler,
        params=[
            Param("step_size", None, "epochs between decays (default: a third of the run)", type=int, low=1),
            Param("gamma", 0.1, GAMMA_HELP, low=0.0, high=1.0, low_inclusive=False,
                  space=Space.log(1e-2, 1.0)),
            WARMUP,
        ],
    )
    register(
        name="exponential",
        factory=make_exponential,
        description="Exponential decay α₀γ^k (ExponentialLR)",
        interval=INTERVAL,
        stacked=proxy_scheduler,
        params=[
            Param("gamma", 0.95, GAMMA_HELP, low=0.0, high=1.0, low_inclusive=False,
                  space=Space.log(1e-3, 0.5, transform="one_minus")),
            WARMUP,
        ],
    )
    register(
        name="inverse_time",
        factory=make_inverse_time,
        description="1/t decay α₀/(1+βk) (LambdaLR)",
        interval=INTERVAL,
        stacked=proxy_scheduler,
        params=[
            Param("beta", 0.1, "decay rate β", low=0.0, space=Space.log(1e-3, 10.0)),
            WARMUP,
        ],
    )
    register(
        name="cosine",
        factory=make_cosine,
        description="Cosine annealing to eta_min over T_max epochs (default: the whole run)",
        interval=INTERVAL,
        stacked=proxy_scheduler,
        params=[
            Param("T_max", None, "epochs of the half cosine (default: the run's length)", type=int, low=1),
            Param("eta_min", 0.0, "final learning rate", low=0.0, space=Space.log(1e-5, 1e-2, off=0.0)),
            WARMUP,
        ],
    )
    register(
        name="plateau",
        factory=make_plateau,
        description="Reduce the lr by a factor when the validation loss stops improving (ReduceLROnPlateau)",
        interval=INTERVAL,
        stacked=proxy_scheduler,
        params=[
            Param("factor", 0.1, "multiplicative decay in (0, 1)", low=0.0, high=1.0, low_inclusive=False,
                  high_inclusive=False, space=Space.log(1e-2, 0.9)),
            Param("patience", 10, "epochs without improvement before decaying", low=0, space=Space.int(0, 20)),
            Param("threshold", 1e-4, "relative improvement that counts", low=0.0),
            Param("cooldown", 0, "epochs to wait after a decay", low=0),
            Param("min_lr", 0.0, "lower bound on the lr", low=0.0),
        ],
    )
