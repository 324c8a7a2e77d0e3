"""The conformance checks, collected by ``pytest --suite-plugin=DIST``.

Every failure message names the component and says what to fix.
"""

from __future__ import annotations

import math

import pytest
import torch

from suite.conformance import TINY_BATCH, metric_mismatch_advice, tiny_spec
from suite.contract import (
    batch_violation,
    first_batches,
    loss_violation,
    lr_cap_violation,
    problem_violations,
    signature_violation,
    split_batch,
    where,
)
from suite.engine.loop import build, preflight, takes_weights, train
from suite.errors import SuiteError
from suite.problem import Problem
from suite.registry import get_registry


def only(*families: str):
    def mark(fn):
        fn.families = families
        return fn

    return mark


def _fail(component, text: str) -> None:
    """Fail the check with one fix-it message (no traceback, no chained exception)."""
    __tracebackhide__ = True
    message = f"{component.family} {component.name!r} ({component.distribution}): {text}"
    raise pytest.fail.Exception(message, pytrace=False) from None


def _tiny(component, seed: int = 0):
    """The tiny run of ``component``, checked as ``suite run`` checks it before running (a fix-it
    failure where it cannot be set up or breaks the contract)."""
    try:
        spec = tiny_spec(component, seed=seed)
    except SuiteError as exc:
        _fail(component, f"cannot set up a tiny run with built-in partners: {exc}")
    try:
        preflight([spec])
    except SuiteError as exc:
        text = str(exc).removeprefix(f"{where(component)}: ").removeprefix(f"{where(component)} ")
        _fail(component, f"suite run would refuse it: {text}")
    return spec


def test_distribution_loads_cleanly(distribution):
    """Every plugin module of the distribution loads, every hook function carries @hookimpl,
    every registration is valid and no name is registered by another distribution too."""
    from suite.conformance import normalise

    registry = get_registry()
    want = normalise(distribution)
    problems = [f"plugin {b.name}: {b.error}" for b in registry.broken if normalise(b.distribution) == want]
    problems += [registry.conflict_message(fam, name) for (fam, name), dists in registry.conflicts.items()
                 if want in {normalise(d) for d in dists}]
    if problems:
        pytest.fail(f"{distribution}: " + "; ".join(problems), pytrace=False)


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
    wrong = signature_violation(component)
    if wrong:
        _fail(component, wrong)


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
    spec = _tiny(component)
    try:
        built = build(spec, "cpu")
    except SuiteError as exc:
        _fail(component, str(exc))
    except Exception as exc:  # noqa: BLE001 - report whatever the plugin raised
        _fail(component, f"building a tiny run raised {type(exc).__name__}: {exc}")
    if component.family == "sampler" and built.sampler is not None:
        try:
            batches = list(first_batches(built.sampler, limit=len(built.sampler)))
        except Exception as exc:  # noqa: BLE001 - report whatever the plugin raised
            _fail(component, f"iterating the sampler raised {type(exc).__name__}: {exc}")
        for batch in batches:
            wrong = batch_violation(batch, built.ctx.n)
            if wrong:
                _fail(component, wrong)
        if len(batches) != len(built.sampler):
            _fail(component, f"len(sampler) is {len(built.sampler)} but an epoch yields {len(batches)} batches: "
                             "__len__ must count the batches of one epoch")
        if any(split_batch(b)[1] is not None for b in batches) and not takes_weights(built.problem):
            _fail(component, "yields weighted batches on a problem that cannot weight its examples")


def test_few_steps_without_nan(component):
    """A few CPU steps complete with finite losses."""
    result = train(_tiny(component), "cpu")
    if result.status == "failed":
        _fail(component, f"a {result.spec.budget_text} run raised {result.error}; where, in its traceback:\n"
                         f"{_plugin_frames(result.traceback)}")
    if result.status == "diverged" or not all(
        math.isfinite(v) for _, m in result.history for k, v in m.items() if k.endswith("loss")
    ):
        _fail(component, f"produced a non-finite or exploding loss within {result.spec.budget_text} "
                         f"({result.reason}); check the update and the defaults")


def test_deterministic_under_fixed_seed(component):
    """Two runs with the same seed give identical metrics."""
    a = train(_tiny(component, seed=3), "cpu")
    b = train(_tiny(component, seed=3), "cpu")
    if a.history != b.history:
        _fail(component, "two runs with the same seed differ: draw all randomness from the run seed "
                         "(ctx.seed) or the sampling generator (ctx.generator), never unseeded global state")


@only("problem")
def test_declared_lr_cap(component):
    """A declared lr stability cap (``lr_cap=``) is a positive lr, or None, for every installed optimizer."""
    wrong = lr_cap_violation(component, get_registry().components("optimizer"))
    if wrong:
        _fail(component, wrong)


@only("problem")
def test_problem_contract(component):
    """Train and validation data (or an exact risk) and a loss that fits the model's outputs."""
    registry = get_registry()
    spec = _tiny(component)
    problem = registry.get("problem", component.name).build(
        build(spec, "cpu").ctx, spec.params_of("problem")
    )
    if not isinstance(problem, Problem):
        _fail(component, f"the factory returned {type(problem).__name__}, not a suite.Problem")
    for wrong in problem_violations(problem):
        _fail(component, wrong)
    try:
        wrong = loss_violation(problem, TINY_BATCH)
    except Exception as exc:  # noqa: BLE001 - report whatever the plugin raised
        wrong = f"computing the loss of a batch raised {type(exc).__name__}: {exc}"
    if wrong:
        _fail(component, wrong)
    if problem.n_train is not None and takes_weights(problem):
        idx = torch.arange(min(TINY_BATCH, problem.n_train))
        per = problem.example_losses(problem.model, idx, torch.Generator().manual_seed(0))
        mean = problem.batch_loss(problem.model, idx, torch.Generator().manual_seed(0))
        if per.shape != idx.shape or not torch.allclose(per.mean(), mean, rtol=1e-4, atol=1e-6):
            _fail(component, f"example_losses (shape {tuple(per.shape)}) must give one loss per example whose "
                             "mean is batch_loss (weighted samplers use it)")


STACKED_REL_TOL = 1e-4


def test_stacked_matches_per_run(component):
    """A stacked implementation gives every row of a stack the numbers of its spec trained alone
    (every metric at every evaluation, and the final metrics, within 1e-4 relative, the same status)."""
    from suite.engine.stack import stackable
    from suite.engine.units import run_unit

    if component.stacked is None:
        pytest.skip(f"{component.family} {component.name!r} has no stacked implementation: "
                    "its specs train through the per-run loop")
    registry = get_registry()
    specs = [_tiny(component, seed=s) for s in (0, 1, 2)]
    if not all(stackable(s, registry) for s in specs):
        pytest.skip("a partner component of the tiny run has no stacked implementation")
    _same_as_alone(component, specs, dict(run_unit(specs, "cpu", registry, engine="stacked")))
    partner = _block_partner(component)
    if partner is not None:  # a stack may mix optimizers or averagers: then the component serves a block of rows
        mixed = [*specs, *(tiny_spec(registry.get(component.family, partner), seed=s) for s in (0, 1))]
        _same_as_alone(component, mixed, dict(run_unit(mixed, "cpu", registry, engine="stacked")),
                       f" in a stack shared with {component.family} {partner!r}")


def _block_partner(component) -> str | None:
    """The built-in component of the same family that the check's second stack mixes in (a
    stack may mix optimizers, and averagers: the checked one then serves a block of its rows)."""
    choices = {"optimizer": ("sgd", "precond"), "averager": ("none", "ema")}.get(component.family)
    if choices is None:
        return None
    return choices[0] if component.name != choices[0] else choices[1]


def _same_as_alone(component, specs, results, how: str = "") -> None:
    for i, spec in enumerate(specs):
        got, ref = results[i], train(spec, "cpu")
        where = f"{spec.component(component.family)}, seed {spec.seed}{how}"
        if got.status != ref.status:
            _fail(component, f"stacked: {where} ended {got.status} ({got.reason}), alone it ended {ref.status} "
                             f"({ref.reason})\n{got.traceback or ''}")
        if [s for s, _ in got.history] != [s for s, _ in ref.history]:
            _fail(component, f"stacked: {where} evaluated at other steps than alone")
        pairs = [(s, a, b) for (s, a), (_, b) in zip(got.history, ref.history, strict=True)]
        pairs.append((pairs[-1][0] if pairs else 0, got.final_metrics, ref.final_metrics))  # reported once, at the end
        for step, a, b in pairs:
            if a.keys() != b.keys():
                _fail(component, f"stacked: {where} logs {sorted(a)} at step {step}, alone {sorted(b)}; "
                                 + metric_mismatch_advice(set(a), set(b)))
            for key, value in a.items():
                if not (math.isclose(value, b[key], rel_tol=STACKED_REL_TOL, abs_tol=1e-6)
                        or (math.isnan(value) and math.isnan(b[key]))):
                    _fail(component, f"stacked implementation differs from the per-run one: {where}, step {step}, "
                                     f"{key} = {value!r} stacked vs {b[key]!r} alone (tolerance "
                                     f"{STACKED_REL_TOL:g} relative); each row must use its own spec's data, "
                                     "initialisation, hyperparameters and generator (ctx.generator), and a "
                                     "component given a block of a stack only its rows (stack.initial_params())")


def _plugin_frames(tb: str | None, keep: int = 6) -> str:
    """The last lines of a traceback (the frames nearest the error), without its final line,
    which the message already shows."""
    lines = (tb or "").rstrip().splitlines()[1:-1]
    return "\n".join(lines[-2 * keep:])
