"""Built-in iterate averagers (torch.optim.swa_utils.AveragedModel), updated after every
optimizer step by the engine."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from suite import BuildContext, Param, Space, hookimpl
from suite.builtin.stacked_components import ema_stack, none_stack, swa_stack


def make_none(ctx: BuildContext) -> None:
    """No averaging."""
    return None


def make_ema(ctx: BuildContext, decay: float) -> AveragedModel:
    """Exponential moving average of the iterates: w̃ ← γ w̃ + (1-γ) w."""
    return AveragedModel(ctx.model, multi_avg_fn=get_ema_multi_avg_fn(decay))


def swa_start_step(start: float, total_steps: int) -> int:
    """Optimizer steps before SWA starts averaging: the first ``start`` fraction of the run."""
    return int(start * total_steps)


class AveragedFrom(AveragedModel):
    """torch's uniform (SWA) average of the iterates after the first ``start_step`` updates:
    w̃ = mean of w_{s+1}, ..., w_t; until then w̃ is the initial model."""

    def __init__(self, model: nn.Module, start_step: int) -> None:
        super().__init__(model)
        self.start_step = start_step
        self.calls = 0

    def update_parameters(self, model: nn.Module) -> None:
        self.calls += 1
        if self.calls > self.start_step:
            super().update_parameters(model)


def make_swa(ctx: BuildContext, start: float) -> AveragedFrom:
    """Stochastic weight averaging: the uniform average of the iterates from a start point."""
    return AveragedFrom(ctx.model, swa_start_step(start, ctx.total_steps))


@hookimpl
def suite_register_averagers(register):
    register(name="none", factory=make_none, description="No iterate averaging", stacked=none_stack)
    register(
        name="ema",
        factory=make_ema,
        stacked=ema_stack,
        description="Exponential moving average of the iterates (decay γ)",
        params=[
            Param("decay", 0.99, "EMA decay γ: w̃ ← γw̃ + (1-γ)w", low=0.0, high=1.0, high_inclusive=False,
                  space=Space.log(1e-4, 0.5, transform="one_minus")),
        ],
    )
    register(
        name="swa",
        factory=make_swa,
        stacked=swa_stack,
        description="Uniform average of the iterates from a start point (SWA)",
        params=[
            Param("start", 0.5, "fraction of the run's steps before averaging starts", low=0.0, high=1.0,
                  high_inclusive=False, space=Space.uniform(0.0, 0.9)),
        ],
    )
