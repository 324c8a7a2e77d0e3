"""The conformance checks, collected by ``pytest --suite-plugin=DIST``.

Every failure message names the component and says what to fix.
"""

from __future__ import annotations

import math

import pytest
import torch

from suite.conformance import TINY_BATCH, tiny_spec
from suite.engine.loop import build, train
from suite.errors import SuiteError
from suite.problem import Problem
from suite.registry import get_registry


def only(*families: str):
    def mark(fn):
        fn.families = families
        return fn

    return mark


def _fail(component, text: str) -> None:
    pytest.fail(f"{component.family} {component.name!r} ({component.distribution}): {text}", pytrace=False)


def test_registration_fields(component):
    """Name, one-line description, typed hyperparameters with valid defaults."""
    if not component.name.replace("_", "").replace("-", "").isalnum():
        _fail(component, "use letters, digits, '_' or '-' in the name")
    if not component.description or len(component.description) > 120:
        _fail(component, "give a one-line description of at most 120 characters")
    for p in component.params:
        if not p.name.isidentifier():
            _fail(component, f"hyperparameter name {p.name!r} must be a Python identifier (it is a factory argument)")
        if p.default is not None:
            try:
                p.validate(p.default)
            except SuiteError as exc:
                _fail(component, f"default is invalid: {exc}")
    if component.family == "scheduler" and component.interval not in ("step", "epoch"):
        _fail(component, "register with interval='step' or interval='epoch'")


def test_defaults_inside_search_space(component):
    """Each tunable hyperparameter's default lies in its search space."""
    for p in component.params:
        if p.space is not None and not p.space.contains(p.default):
            _fail(
                component,
                f"default {p.name}={p.default!r} lies outside its search space {p.space.describe()}; "
                "move the default into the space or widen the space",
            )


def test_factory_builds_torch_type(component):
    """The factory builds on a tiny problem and returns the family's torch type."""
    spec = tiny_spec(component)
    try:
        built = build(spec, "cpu")
    except SuiteError as exc:
        _fail(component, str(exc))
    except Exception as exc:  # noqa: BLE001 - report whatever the plugin raised
        _fail(component, f"building a tiny run raised {type(exc).__name__}: {exc}")
    if component.family == "sampler":
        n = built.ctx.n
        for batch in built.sampler:
            idx = list(batch)
            if not idx or not all(isinstance(i, int) and 0 <= i < n for i in idx):
                _fail(component, f"batches must be non-empty lists of indices in [0, {n}), got {idx[:5]}")


def test_few_steps_without_nan(component):
    """A few CPU steps complete with finite losses."""
    result = train(tiny_spec(component), "cpu")
    if result.status == "failed":
        _fail(component, f"a {result.spec.budget_text} run raised {result.error}\n{result.traceback}")
    if result.status == "diverged" or not all(
        math.isfinite(v) for _, m in result.history for k, v in m.items() if k.endswith("loss")
    ):
        _fail(component, f"produced a non-finite or exploding loss within {result.spec.budget_text} "
                         f"({result.reason}); check the update and the defaults")


def test_deterministic_under_fixed_seed(component):
    """Two runs with the same seed give identical metrics."""
    a = train(tiny_spec(component, seed=3), "cpu")
    b = train(tiny_spec(component, seed=3), "cpu")
    if a.history != b.history:
        _fail(component, "two runs with the same seed differ: draw all randomness from the run seed "
                         "(ctx.seed) or the sampling generator (ctx.generator), never unseeded global state")


@only("problem")
def test_problem_contract(component):
    """Train and validation data (or an exact risk) and a loss that fits the model's outputs."""
    registry = get_registry()
    spec = tiny_spec(component)
    problem = registry.get("problem", component.name).build(
        build(spec, "cpu").ctx, spec.params_of("problem")
    )
    assert isinstance(problem, Problem)
    if problem.n_train is not None:
        exact_risk = type(problem).val_loss is not Problem.val_loss  # e.g. `mean`: the population risk
        if not exact_risk and (problem.X_val is None or problem.y_val is None or len(problem.X_val) == 0):
            _fail(component, "a finite problem needs a validation set (val=(X_val, y_val)) or an exact val_loss")
        if len(problem.X_train) != len(problem.y_train):
            _fail(component, "X_train and y_train have different lengths")
    idx = torch.arange(min(TINY_BATCH, problem.n_train or TINY_BATCH))
    loss = problem.batch_loss(problem.model, idx, torch.Generator().manual_seed(0))
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad):
        _fail(component, "batch_loss must return a differentiable scalar tensor (does the loss fit the outputs?)")
    loss.backward()
    if not all(p.grad is not None for p in problem.model.parameters()):
        _fail(component, "the loss does not reach every model parameter")
    val = problem.val_loss(problem.model)
    if not (isinstance(val, float) and math.isfinite(val)):
        _fail(component, f"val_loss must return a finite float, got {val!r}")


STACKED_REL_TOL = 1e-4


def test_stacked_matches_per_run(component):
    """A stacked implementation gives every row of a stack the numbers of its spec trained alone
    (every metric at every evaluation within 1e-4 relative, the same status)."""
    from suite.engine.stacked import stackable
    from suite.engine.units import run_unit

    if component.stacked is None:
        pytest.skip(f"{component.family} {component.name!r} has no stacked implementation: "
                    "its specs train through the per-run loop")
    registry = get_registry()
    specs = [tiny_spec(component, seed=s) for s in (0, 1, 2)]
    if not all(stackable(s, registry) for s in specs):
        pytest.skip("a partner component of the tiny run has no stacked implementation")
    results = dict(run_unit(specs, "cpu", registry, engine="stacked"))
    for i, spec in enumerate(specs):
        got, ref = results[i], train(spec, "cpu")
        where = f"seed {spec.seed}"
        if got.status != ref.status:
            _fail(component, f"stacked: {where} ended {got.status} ({got.reason}), alone it ended {ref.status} "
                             f"({ref.reason})\n{got.traceback or ''}")
        if [s for s, _ in got.history] != [s for s, _ in ref.history]:
            _fail(component, f"stacked: {where} evaluated at other steps than alone")
        for (step, a), (_, b) in zip(got.history, ref.history, strict=True):
            if a.keys() != b.keys():
                _fail(component, f"stacked: {where} logs {sorted(a)} at step {step}, alone {sorted(b)}")
            for key, value in a.items():
                if not (math.isclose(value, b[key], rel_tol=STACKED_REL_TOL, abs_tol=1e-6)
                        or (math.isnan(value) and math.isnan(b[key]))):
                    _fail(component, f"stacked implementation differs from the per-run one: {where}, step {step}, "
                                     f"{key} = {value!r} stacked vs {b[key]!r} alone (tolerance "
                                     f"{STACKED_REL_TOL:g} relative); each row must use its own spec's data, "
                                     "initialisation, hyperparameters and generator (ctx.generator)")
