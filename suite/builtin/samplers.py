"""Built-in samplers: shuffle, replacement, full, importance (weighted batches), and none (for
problems without a data set, such as nqm).

The registrations only. The factories (:mod:`suite.builtin.sampler_factories`) and the stacked
implementations need torch: they are imported when a run first builds the component
(:func:`suite.registry.lazy`), so that ``suite list`` and flag validation start without torch.
"""

from __future__ import annotations

from suite import Param, hookimpl
from suite.registry import lazy

DROP_LAST = Param("drop_last", False, "drop the last incomplete batch")


@hookimpl
def suite_register_samplers(register):
    register(
        name="shuffle",
        factory=lazy("suite.builtin.sampler_factories:make_shuffle"),
        stacked=lazy("suite.builtin.stacked_components:shuffle_stack"),
        description="Without replacement: each example exactly once per epoch (epoch shuffling)",
        params=[DROP_LAST],
    )
    register(
        name="replacement",
        factory=lazy("suite.builtin.sampler_factories:make_replacement"),
        stacked=lazy("suite.builtin.stacked_components:replacement_stack"),
        description="With replacement: n i.i.d. uniform draws per epoch",
        params=[DROP_LAST],
    )
    register(
        name="full",
        factory=lazy("suite.builtin.sampler_factories:make_full"),
        stacked=lazy("suite.builtin.stacked_components:full_stack"),
        description="Full batch: one batch of all n examples per epoch (gradient descent)",
        params=[Param("drop_last", False, "no effect: the single batch of all n is always complete")],
    )
    register(
        name="importance",
        factory=lazy("suite.builtin.sampler_factories:make_importance"),
        description="Importance sampling ∝ per-example smoothness 1+‖x‖², weighted 1/(n·p) (unbiased)",
        params=[
            Param("mix", 0.5, "share of uniform sampling mixed in (bounds every weight by 1/mix)",
                  low=0.0, high=1.0, low_inclusive=False),
            DROP_LAST,
        ],
    )
    register(
        name="none",
        factory=lazy("suite.builtin.sampler_factories:make_no_sampler"),
        stacked=lazy("suite.builtin.sampler_factories:no_sampler_stack"),
        description="No sampler: for problems without a data set (nqm), which draw their own gradient noise",
    )


def __getattr__(name: str):
    """The factories' names, imported on first use (``from suite.builtin.samplers import ...``)."""
    from importlib import import_module

    return getattr(import_module("suite.builtin.sampler_factories"), name)
