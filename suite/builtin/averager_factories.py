"""Built-in iterate averagers (torch.optim.swa_utils.AveragedModel), updated after every
optimizer step by the engine.

Registered in :mod:`suite.builtin.averagers` (lazily: this module imports torch).
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from suite import BuildContext


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
