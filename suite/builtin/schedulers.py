"""Built-in learning-rate schedulers."""

from __future__ import annotations

from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR

from suite import BuildContext, Param, Space, hookimpl


def make_constant(ctx: BuildContext) -> ConstantLR:
    """A constant learning rate (torch's ConstantLR with factor 1)."""
    return ConstantLR(ctx.optimizer, factor=1.0, total_iters=0)


def make_cosine(ctx: BuildContext, T_max: int | None, eta_min: float) -> CosineAnnealingLR:
    """Cosine annealing from the initial lr to ``eta_min`` over ``T_max`` epochs (default: the run)."""
    return CosineAnnealingLR(ctx.optimizer, T_max=T_max or ctx.total_epochs, eta_min=eta_min)


@hookimpl
def suite_register_schedulers(register):
    register(
        name="constant",
        factory=make_constant,
        description="Constant learning rate",
        interval="epoch",
    )
    register(
        name="cosine",
        factory=make_cosine,
        description="Cosine annealing to eta_min over T_max epochs (default: the whole run)",
        interval="epoch",
        params=[
            Param("T_max", None, "epochs of the half cosine (default: the run's length)", type=int, low=1),
            Param("eta_min", 0.0, "final learning rate", low=0.0, space=Space.log(1e-5, 1e-2, off=0.0)),
        ],
    )
