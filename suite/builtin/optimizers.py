"""Built-in optimizers."""

from __future__ import annotations

import torch

from suite import BuildContext, Param, Space, hookimpl

LR = Param("lr", 0.01, "learning rate α", low=0.0, low_inclusive=False, space=Space.log(1e-4, 1.0))
MOMENTUM = Param(
    "momentum", 0.0, "heavy-ball momentum β (m ← βm + g)", low=0.0, high=1.0, high_inclusive=False,
    space=Space.log(1e-3, 1.0, transform="one_minus"),
)
WEIGHT_DECAY = Param(
    "weight_decay", 0.0, "weight decay λ: w ← (1-αλ)w - α∇L", low=0.0,
    space=Space.log(1e-6, 1e-1, off=0.0),
)


def make_sgd(ctx: BuildContext, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.SGD:
    if nesterov and momentum == 0:
        from suite.errors import SpecError

        raise SpecError("optimizer.nesterov=true needs optimizer.momentum > 0")
    return torch.optim.SGD(
        ctx.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


@hookimpl
def suite_register_optimizers(register):
    register(
        name="sgd",
        factory=make_sgd,
        description="SGD with heavy-ball momentum, Nesterov and weight decay (torch.optim.SGD)",
        params=[LR, MOMENTUM, WEIGHT_DECAY, Param("nesterov", False, "Nesterov momentum")],
    )
