"""The conformance kit: checks that a plugin distribution's components honour the contract.

Plugin authors run it with pytest on their own distribution::

    pytest --suite-plugin=my-dist

(the kit is a pytest plugin announced through pytest's ``pytest11`` entry point, so it is
available wherever sgd-suite is installed; ``-p suite.conformance.plugin`` loads it explicitly).
Each component gets these checks: valid registration fields, defaults inside the search space,
the factory builds the right torch type on a tiny problem, a few CPU steps without NaN,
determinism under a fixed seed, for problems the data/loss contract, and for components with a
stacked implementation that a stack gives every row the numbers of its spec trained alone.
"""

from __future__ import annotations

import re

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


def tiny_spec(comp: Component, seed: int = 0, registry: Registry | None = None) -> RunSpec:
    """A few-step run that exercises ``comp`` with built-in partners on a tiny problem
    (the lecture's linear regression with 80 examples, unless ``comp`` is the problem; the NQM for
    the sampler ``none`` of problems without a data set)."""
    registry = registry or get_registry()
    overrides = {} if comp.family == "problem" else dict(TINY_PROBLEM)
    components = {comp.family: comp.name}
    if comp.family == "sampler" and comp.name == NO_SAMPLER:  # the sampler of problems without data
        components["problem"], overrides = "nqm", {"problem.dim": 3}
    return resolve_spec(
        registry,
        components=components,
        overrides=overrides,
        batch_size=TINY_BATCH,
        steps=TINY_STEPS,
        eval_every=2,
        seed=seed,
    )
