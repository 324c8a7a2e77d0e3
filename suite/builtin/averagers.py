"""Built-in iterate averagers (torch.optim.swa_utils.AveragedModel).

The registrations only. The factories (:mod:`suite.builtin.averager_factories`) and the stacked
implementations need torch: they are imported when a run first builds the component
(:func:`suite.registry.lazy`), so that ``suite list`` and flag validation start without torch.
"""

from __future__ import annotations

from suite import Param, Space, hookimpl
from suite.registry import lazy


@hookimpl
def suite_register_averagers(register):
    register(name="none", factory=lazy("suite.builtin.averager_factories:make_none"),
             description="No iterate averaging", stacked=lazy("suite.builtin.stacked_components:none_stack"))
    register(
        name="ema",
        factory=lazy("suite.builtin.averager_factories:make_ema"),
        stacked=lazy("suite.builtin.stacked_components:ema_stack"),
        description="Exponential moving average of the iterates (decay γ)",
        params=[
            Param("decay", 0.99, "EMA decay γ: w̃ ← γw̃ + (1-γ)w", low=0.0, high=1.0, high_inclusive=False,
                  space=Space.log(1e-4, 0.5, transform="one_minus")),
        ],
    )
    register(
        name="swa",
        factory=lazy("suite.builtin.averager_factories:make_swa"),
        stacked=lazy("suite.builtin.stacked_components:swa_stack"),
        description="Uniform average of the iterates from a start point (SWA)",
        params=[
            Param("start", 0.5, "fraction of the run's steps before averaging starts", low=0.0, high=1.0,
                  high_inclusive=False, space=Space.uniform(0.0, 0.9)),
        ],
    )


def __getattr__(name: str):
    """The factories' names, imported on first use (``from suite.builtin.averagers import ...``)."""
    from importlib import import_module

    return getattr(import_module("suite.builtin.averager_factories"), name)
