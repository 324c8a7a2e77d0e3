"""Built-in iterate averagers (torch.optim.swa_utils.AveragedModel)."""

from __future__ import annotations

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from suite import BuildContext, Param, Space, hookimpl


def make_none(ctx: BuildContext) -> None:
    """No averaging."""
    return None


def make_ema(ctx: BuildContext, decay: float) -> AveragedModel:
    """Exponential moving average of the iterates: w̃ ← γ w̃ + (1-γ) w."""
    return AveragedModel(ctx.model, multi_avg_fn=get_ema_multi_avg_fn(decay))


@hookimpl
def suite_register_averagers(register):
    register(name="none", factory=make_none, description="No iterate averaging")
    register(
        name="ema",
        factory=make_ema,
        description="Exponential moving average of the iterates (decay γ)",
        params=[
            Param("decay", 0.99, "EMA decay γ: w̃ ← γw̃ + (1-γ)w", low=0.0, high=1.0, high_inclusive=False,
                  space=Space.log(1e-4, 0.5, transform="one_minus")),
        ],
    )
