"""Built-in learning-rate schedulers (torch.optim.lr_scheduler), stepped once per epoch.

The registrations only. The factories (:mod:`suite.builtin.scheduler_factories`) and the stacked
implementations need torch: they are imported when a run first builds the component
(:func:`suite.registry.lazy`), so that ``suite list`` and flag validation start without torch.
"""

from __future__ import annotations

from suite import Param, Space, hookimpl
from suite.registry import lazy

INTERVAL = "epoch"
WARMUP = Param("warmup_steps", 0, "linear warm-up over the first scheduler steps (epochs)", low=0)
GAMMA_HELP = "multiplicative decay γ in (0, 1]"


@hookimpl
def suite_register_schedulers(register):
    register(
        name="constant",
        factory=lazy("suite.builtin.scheduler_factories:make_constant"),
        description="Constant learning rate",
        interval=INTERVAL,
        stacked=lazy("suite.stacked:proxy_scheduler"),
        params=[WARMUP],
    )
    register(
        name="step",
        factory=lazy("suite.builtin.scheduler_factories:make_step"),
        description="Step decay α₀γ^⌊k/step_size⌋ (StepLR)",
        interval=INTERVAL,
        stacked=lazy("suite.stacked:proxy_scheduler"),
        params=[
            Param("step_size", None, "epochs between decays (default: a third of the run)", type=int, low=1),
            Param("gamma", 0.1, GAMMA_HELP, low=0.0, high=1.0, low_inclusive=False,
                  space=Space.log(1e-2, 1.0)),
            WARMUP,
        ],
    )
    register(
        name="exponential",
        factory=lazy("suite.builtin.scheduler_factories:make_exponential"),
        description="Exponential decay α₀γ^k (ExponentialLR)",
        interval=INTERVAL,
        stacked=lazy("suite.stacked:proxy_scheduler"),
        params=[
            Param("gamma", 0.95, GAMMA_HELP, low=0.0, high=1.0, low_inclusive=False,
                  space=Space.log(1e-3, 0.5, transform="one_minus")),
            WARMUP,
        ],
    )
    register(
        name="inverse_time",
        factory=lazy("suite.builtin.scheduler_factories:make_inverse_time"),
        description="1/t decay α₀/(1+βk) (LambdaLR)",
        interval=INTERVAL,
        stacked=lazy("suite.stacked:proxy_scheduler"),
        params=[
            Param("beta", 0.1, "decay rate β", low=0.0, space=Space.log(1e-3, 10.0)),
            WARMUP,
        ],
    )
    register(
        name="cosine",
        factory=lazy("suite.builtin.scheduler_factories:make_cosine"),
        description="Cosine annealing to eta_min over T_max epochs (default: the whole run)",
        interval=INTERVAL,
        stacked=lazy("suite.stacked:proxy_scheduler"),
        params=[
            Param("T_max", None, "epochs of the half cosine (default: the run's length)", type=int, low=1),
            Param("eta_min", 0.0, "final learning rate", low=0.0, space=Space.log(1e-5, 1e-2, off=0.0)),
            WARMUP,
        ],
    )
    register(
        name="plateau",
        factory=lazy("suite.builtin.scheduler_factories:make_plateau"),
        description="Reduce the lr by a factor when the validation loss stops improving (ReduceLROnPlateau)",
        interval=INTERVAL,
        stacked=lazy("suite.stacked:proxy_scheduler"),
        params=[
            Param("factor", 0.1, "multiplicative decay in (0, 1)", low=0.0, high=1.0, low_inclusive=False,
                  high_inclusive=False, space=Space.log(1e-2, 0.9)),
            Param("patience", 10, "epochs without improvement before decaying", low=0, space=Space.int(0, 20)),
            Param("threshold", 1e-4, "relative improvement that counts", low=0.0),
            Param("cooldown", 0, "epochs to wait after a decay", low=0),
            Param("min_lr", 0.0, "lower bound on the lr", low=0.0),
        ],
    )


def __getattr__(name: str):
    """The factories' names, imported on first use (``from suite.builtin.schedulers import ...``)."""
    from importlib import import_module

    return getattr(import_module("suite.builtin.scheduler_factories"), name)
