"""The five plugin hooks, one per component family.

Each hook receives a ``register`` callable. A plugin calls it once per component::

    @hookimpl
    def suite_register_optimizers(register):
        register(
            name="signsgd",
            factory=make_signsgd,            # factory(ctx: BuildContext, **hyperparams)
            description="Sign-SGD: w <- w - lr * sign(g)",
            params=[Param("lr", 0.01, low=0, low_inclusive=False, space=Space.log(1e-4, 1.0))],
        )

``register`` accepts the keyword arguments of :class:`suite.registry.Component` except
``family``, ``distribution`` and ``version``, which the registry fills in.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from suite import PROJECT_NAME

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

Register = Callable[..., None]


@hookspec
def suite_register_problems(register: Register) -> None:
    """Register problems. A problem factory returns a :class:`suite.Problem`. A problem without
    a finite data set registers with ``dataset=False`` (its runs take sampler ``none``); one that
    knows its learning-rate stability cap declares ``lr_cap=fn`` (:mod:`suite.tuning.caps`)."""


@hookspec
def suite_register_samplers(register: Register) -> None:
    """Register samplers. A sampler factory returns a ``torch.utils.data.Sampler`` that yields
    lists of training-set indices (one list per mini-batch), or for a weighted sampler pairs
    ``(indices, weights)``: the engine then minimises ``mean(w_i * loss_i)``."""


@hookspec
def suite_register_optimizers(register: Register) -> None:
    """Register optimizers. An optimizer factory returns a ``torch.optim.Optimizer`` over
    ``ctx.model.parameters()``."""


@hookspec
def suite_register_schedulers(register: Register) -> None:
    """Register learning-rate schedulers. A scheduler factory returns a
    ``torch.optim.lr_scheduler.LRScheduler`` (or ``ReduceLROnPlateau``) over ``ctx.optimizer``.
    The registration's ``interval`` says whether it steps per optimizer ``"step"`` or per
    ``"epoch"``."""


@hookspec
def suite_register_averagers(register: Register) -> None:
    """Register iterate averagers. An averager factory returns a
    ``torch.optim.swa_utils.AveragedModel`` over ``ctx.model``, or ``None`` for no averaging."""


FAMILIES: dict[str, str] = {
    "problem": "suite_register_problems",
    "sampler": "suite_register_samplers",
    "optimizer": "suite_register_optimizers",
    "scheduler": "suite_register_schedulers",
    "averager": "suite_register_averagers",
}
"""Family name -> hook name. The order is the order of a run's construction."""
