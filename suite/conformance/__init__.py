"""The conformance kit: checks that a plugin distribution's components honour the contract.

Plugin authors run it with pytest on their own distribution::

    pytest --suite-plugin=my-dist

(the kit is a pytest plugin announced through pytest's ``pytest11`` entry point, so it is
available wherever sgd-suite is installed; ``-p suite.conformance.plugin`` loads it explicitly).
Each component gets these checks: valid registration fields, defaults inside the search space,
the factory builds the right torch type on a tiny problem, a few CPU steps without NaN,
determinism under a fixed seed, for problems the data/loss contract, and for components with a
stacked implementation that stacks of rows with hyperparameters of their own give every row the
numbers of its spec trained alone (:mod:`suite.conformance.stacks`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from suite.registry import Component, Registry, get_registry
from suite.specs.spec import NO_SAMPLER, RunSpec, resolve_spec

TINY_PROBLEM = {"problem.n": 80, "problem.d": 3}
TINY_STEPS = 6
TINY_BATCH = 8


def normalise(dist: str) -> str:
    """Distribution names compare as pip does (``My_Dist`` == ``my-dist``)."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def components_of(distribution: str, registry: Registry | None = None) -> list[Component]:
    registry = registry or get_registry()
    want = normalise(distribution)
    return [c for c in registry.components() if normalise(c.distribution) == want]


def tiny_spec(comp: Component, seed: int = 0, registry: Registry | None = None, *,
              partners: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
              steps: int = TINY_STEPS, eval_every: int = 2) -> RunSpec:
    """A few-step run that exercises ``comp`` with built-in partners on a tiny problem
    (the lecture's linear regression with 80 examples, unless ``comp`` is the problem; the NQM for
    the sampler ``none`` of problems without a data set). ``partners`` names other components
    (``{"optimizer": "sgd"}``) and ``params`` sets hyperparameters (``{"optimizer.lr": 0.1}``)."""
    registry = registry or get_registry()
    overrides = {} if comp.family == "problem" else dict(TINY_PROBLEM)
    components = {**(partners or {}), comp.family: comp.name}
    if comp.family == "sampler" and comp.name == NO_SAMPLER:  # the sampler of problems without data
        components["problem"], overrides = "nqm", {"problem.dim": 3}
    return resolve_spec(
        registry,
        components=components,
        overrides={**overrides, **(params or {})},
        batch_size=TINY_BATCH,
        steps=steps,
        eval_every=eval_every,
        seed=seed,
    )


def metric_mismatch_advice(stacked: set[str], alone: set[str]) -> str:
    """What to implement when a stacked row logs other metrics than its spec alone: the
    :class:`suite.stacked.StackedProblem` method that returns each missing one, or ``missing``
    for rows that should not log one."""
    parts = []
    lacking, extra = sorted(alone - stacked), sorted(stacked - alone)
    if lacking:
        parts.append(
            f"the stack does not log {', '.join(lacking)}: return each from the problem's stacked implementation "
            "as a K-vector, from the StackedProblem method matching the Problem method that logs it alone "
            "(model_metrics(params), which the engine also asks for the averaged parameters: the avg_ metrics; "
            "extra_metrics(params, step); final_metrics(params); dist_to_opt(params)); a problem stacked with "
            "suite.stacked.module_stack gets its model_metrics and final_metrics row by row, so a stacked "
            "problem class of your own must implement them itself (or subclass ModuleStack)")
    if extra:
        parts.append(f"the stack logs {', '.join(extra)}, which the run alone does not: list the rows that lack a "
                     "metric in StackedProblem.missing (metric name -> set of rows)")
    return "; ".join(parts)
