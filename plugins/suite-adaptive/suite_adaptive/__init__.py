"""Adaptive optimizers from torch.optim, registered as sgd-suite plugins.

Only the suite's public API is used (``suite.hookimpl``, ``suite.Param``, ``suite.Space``,
``suite.stacked``), exactly as any third-party package would. ``adam`` and ``adamw`` have one
stacked implementation (:mod:`suite_adaptive.stacked`), the worked example of docs/plugins.md §7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from suite import Param, Space, hookimpl
from suite.registry import lazy

if TYPE_CHECKING:  # torch is imported when a factory runs, so that `suite list` does not need it
    import torch

    from suite import BuildContext

__version__ = "0.1.0"

ADAM_STACK = lazy("suite_adaptive.stacked:adam_stack")  # one stacked Adam for adam and adamw


def _lr(default: float) -> Param:
    return Param("lr", default, "learning rate α", low=0.0, low_inclusive=False, space=Space.log(1e-5, 1.0))


def _weight_decay(help_text: str, default: float = 0.0) -> Param:
    return Param("weight_decay", default, help_text, low=0.0, space=Space.log(1e-6, 1e-1, off=0.0))


BETA1 = Param("beta1", 0.9, "first-moment decay β₁", low=0.0, high=1.0, high_inclusive=False,
              space=Space.log(1e-3, 0.5, transform="one_minus"))
BETA2 = Param("beta2", 0.999, "second-moment decay β₂", low=0.0, high=1.0, high_inclusive=False,
              space=Space.log(1e-4, 0.1, transform="one_minus"))
EPS = Param("eps", 1e-8, "denominator floor ε", low=0.0, low_inclusive=False)
L2_CAUTION = "ℓ2 penalty λw added to the gradient before adaptive scaling: NOT decoupled weight decay"


def make_adam(ctx: BuildContext, lr: float, beta1: float, beta2: float, eps: float,
              weight_decay: float) -> torch.optim.Adam:
    import torch

    return torch.optim.Adam(ctx.model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps,
                            weight_decay=weight_decay)


def make_adamw(ctx: BuildContext, lr: float, beta1: float, beta2: float, eps: float,
               weight_decay: float) -> torch.optim.AdamW:
    import torch

    return torch.optim.AdamW(ctx.model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps,
                             weight_decay=weight_decay)


def make_adagrad(ctx: BuildContext, lr: float, eps: float, weight_decay: float) -> torch.optim.Adagrad:
    import torch

    return torch.optim.Adagrad(ctx.model.parameters(), lr=lr, eps=eps, weight_decay=weight_decay)


def make_rmsprop(ctx: BuildContext, lr: float, alpha: float, eps: float, momentum: float,
                 weight_decay: float) -> torch.optim.RMSprop:
    import torch

    return torch.optim.RMSprop(ctx.model.parameters(), lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                               weight_decay=weight_decay)


@hookimpl
def suite_register_optimizers(register):
    register(
        name="adam",
        factory=make_adam,
        description="Adam (torch.optim.Adam); its weight_decay is an l2 penalty, not decoupled decay",
        params=[_lr(1e-3), BETA1, BETA2, EPS, _weight_decay(L2_CAUTION)],
        stacked=ADAM_STACK,
    )
    register(
        name="adamw",
        factory=make_adamw,
        description="AdamW (torch.optim.AdamW): Adam with decoupled weight decay w <- (1-αλ)w",
        params=[_lr(1e-3), BETA1, BETA2, EPS,
                _weight_decay("decoupled weight decay λ: w ← (1-αλ)w, as in SGD", default=0.01)],
        stacked=ADAM_STACK,
    )
    register(
        name="adagrad",
        factory=make_adagrad,
        description="Adagrad (torch.optim.Adagrad): step divided by the root of summed squared gradients",
        params=[_lr(1e-2), Param("eps", 1e-10, "denominator floor ε", low=0.0, low_inclusive=False),
                _weight_decay(L2_CAUTION)],
    )
    register(
        name="rmsprop",
        factory=make_rmsprop,
        description="RMSprop (torch.optim.RMSprop): step divided by an EMA of squared gradients",
        params=[
            _lr(1e-3),
            Param("alpha", 0.99, "squared-gradient EMA decay", low=0.0, high=1.0, high_inclusive=False,
                  space=Space.log(1e-3, 0.5, transform="one_minus")),
            EPS,
            Param("momentum", 0.0, "heavy-ball momentum β", low=0.0, high=1.0, high_inclusive=False,
                  space=Space.log(1e-3, 1.0, transform="one_minus")),
            _weight_decay(L2_CAUTION),
        ],
    )
