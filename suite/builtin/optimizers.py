"""Built-in optimizers: ``sgd`` (torch.optim.SGD) and ``precond`` (diagonal preconditioning).

The registrations only. The factories (:mod:`suite.builtin.optimizer_factories`) and the stacked
implementations need torch: they are imported when a run first builds the component
(:func:`suite.registry.lazy`), so that ``suite list`` and flag validation start without torch.
"""

from __future__ import annotations

from suite import Param, Space, hookimpl
from suite.registry import lazy

LR = Param("lr", 0.01, "learning rate α", low=0.0, low_inclusive=False, space=Space.log(1e-4, 1.0))
MOMENTUM = Param(
    "momentum", 0.0, "heavy-ball momentum β (m ← βm + g)", low=0.0, high=1.0, high_inclusive=False,
    space=Space.log(1e-3, 1.0, transform="one_minus"),
)
WEIGHT_DECAY = Param(
    "weight_decay", 0.0, "weight decay λ: w ← (1-αλ)w - α∇L", low=0.0,
    space=Space.log(1e-6, 1e-1, off=0.0),
)
POWER = Param("p", 0.5, "preconditioner power: P = diag(h)^p", low=0.0, high=1.0, space=Space.uniform(0.0, 1.0))


@hookimpl
def suite_register_optimizers(register):
    register(
        name="sgd",
        factory=lazy("suite.builtin.optimizer_factories:make_sgd"),
        stacked=lazy("suite.builtin.stacked_components:sgd_stack"),
        description="SGD with heavy-ball momentum, Nesterov and weight decay (torch.optim.SGD)",
        params=[LR, MOMENTUM, WEIGHT_DECAY, Param("nesterov", False, "Nesterov momentum")],
    )
    register(
        name="precond",
        factory=lazy("suite.builtin.optimizer_factories:make_precond"),
        stacked=lazy("suite.builtin.stacked_components:precond_stack"),
        description="Diagonally preconditioned SGD w ← w − αP⁻¹g, P = diag(h)^p from the problem's curvature",
        params=[LR, POWER, MOMENTUM, WEIGHT_DECAY],
    )


def __getattr__(name: str):
    """The factories' names, imported on first use (``from suite.builtin.optimizers import ...``)."""
    from importlib import import_module

    return getattr(import_module("suite.builtin.optimizer_factories"), name)
