"""Built-in problems: linreg, mean, logistic, mlp and the noisy quadratic model (nqm).

The registrations only. The factories (:mod:`suite.builtin.problem_factories`) and the stacked
implementations need torch: they are imported when a run first builds the component
(:func:`suite.registry.lazy`), so that ``suite list`` and flag validation start without torch.
"""

from __future__ import annotations

from suite import DATA_SEED, Param, hookimpl
from suite.builtin.stability import nqm_lr_cap
from suite.registry import lazy

VAL_FRACTION = Param("val_fraction", 0.2, "fraction held out for validation (the last examples)",
                     low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)


@hookimpl
def suite_register_problems(register):
    register(
        name="linreg",
        factory=lazy("suite.builtin.problem_factories:make_linreg"),
        stacked=lazy("suite.builtin.stacked_problems:linear_stack"),
        description="Linear regression on the lecture's synthetic data (MSE); knows its optimum",
        params=[
            Param("n", 1000, "number of examples (train + validation)", low=2),
            Param("d", 5, "input dimension", low=1),
            Param("noise", 0.5, "standard deviation of the label noise", low=0.0),
            VAL_FRACTION,
            DATA_SEED,
        ],
    )
    register(
        name="mean",
        factory=lazy("suite.builtin.problem_factories:make_mean"),
        stacked=lazy("suite.builtin.stacked_problems:mean_stack"),
        description="Mean estimation ℓ(w,x)=½‖w−x‖², x~N(μ,σ²I); val_loss is the exact population risk",
        params=[
            Param("n", 1000, "number of training examples", low=1),
            Param("d", 1, "dimension", low=1),
            Param("sigma", 1.0, "standard deviation of x around μ", low=0.0),
            DATA_SEED,
        ],
    )
    register(
        name="nqm",
        factory=lazy("suite.builtin.nqm:make_nqm"),
        stacked=lazy("suite.builtin.stacked_problems:nqm_stack"),
        description="Noisy quadratic model: h_i=1/i, gradient noise N(0, noise·H/B); exact risk; --steps",
        params=[
            Param("dim", 100, "dimension d (the paper uses 10⁴)", low=1),
            Param("noise", 1.0, "gradient covariance C = noise · H", low=0.0),
            Param("optimum", 0.0, "scale s of the optimum θ* ~ N(0, s²I) (0: θ* = 0)", low=0.0),
        ],
        dataset=False,
        lr_cap=nqm_lr_cap,  # the tuned lr's space reaches 2× the stability cap (suite.tuning.caps)
    )
    register(
        name="logistic",
        factory=lazy("suite.builtin.problem_factories:make_logistic"),
        stacked=lazy("suite.builtin.stacked_problems:linear_stack"),
        description="Logistic regression (BCE on logits) on data labelled by a known w*, with label noise",
        params=[
            Param("n", 1000, "number of examples (train + validation)", low=2),
            Param("d", 10, "input dimension", low=1),
            Param("label_noise", 0.1, "fraction of labels flipped", low=0.0, high=0.5),
            VAL_FRACTION,
            DATA_SEED,
        ],
    )
    register(
        name="mlp",
        factory=lazy("suite.builtin.problem_factories:make_mlp"),
        stacked=lazy("suite.builtin.stacked_problems:module_problem_stack"),
        description="Small ReLU network on data from a random teacher network (cross-entropy or MSE)",
        params=[
            Param("n", 2000, "number of examples (train + validation)", low=2),
            Param("d", 10, "input dimension", low=1),
            Param("width", 32, "hidden units per layer", low=1),
            Param("depth", 2, "hidden layers", low=0, high=1000),
            Param("task", "classification", "classification (cross-entropy) or regression (MSE)",
                  choices=("classification", "regression")),
            Param("classes", 3, "classes (classification)", low=2),
            Param("noise", 0.1, "label noise std (regression)", low=0.0),
            VAL_FRACTION,
            DATA_SEED,
        ],
    )


def __getattr__(name: str):
    """The factories' names, imported on first use (``from suite.builtin.problems import ...``)."""
    from importlib import import_module

    return getattr(import_module("suite.builtin.problem_factories"), name)
