"""The conformance checks, collected by ``pytest --suite-plugin=DIST``.

Every failure message names the component and says what to fix.
"""

from __future__ import annotations

import math

import pytest
import torch

from suite.conformance import TINY_BATCH, tiny_spec
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
from suite.errors import StackCheckFailed, SuiteError
from suite.problem import Problem
from suite.registry import DESCRIPTION_LIMIT, get_registry


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
    if not component.description or len(component.description) > DESCRIPTION_LIMIT:
        _fail(component, f"give a one-line description of at most {DESCRIPTION_LIMIT} characters")
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


def test_stacked_matches_per_run(component):
    """A stacked implementation gives every row of a stack the numbers of its spec trained alone
    (every metric at every evaluation, and the final metrics, within the exactness promise's
    tolerance, the same status): at least 4 stable rows with hyperparameters of their own, in a
    stack of their own and mixed with a built-in partner's rows (:mod:`suite.conformance.stacks`)."""
    from suite.conformance import stacks
    from suite.engine.stack import stackable

    if component.stacked is None:
        pytest.skip(f"{component.family} {component.name!r} has no stacked implementation: "
                    "its specs train through the per-run loop")
    registry = get_registry()
    alone = _AloneRuns()
    try:
        rows = stacks.stable_rows(component, stacks.varied(component, registry), stacks.ROWS, alone, registry=registry)
        if not all(stackable(r.spec, registry) for r in rows):
            pytest.skip("a partner component of the tiny run has no stacked implementation")
        other = stacks.partner(component, registry)
        if component.family in stacks.SHARED_FAMILIES:
            mixed = stacks.stable_rows(component, other, stacks.PARTNER_ROWS, alone, {"optimizer": "sgd"}, registry)
        else:
            mixed = stacks.stable_rows(other, other, stacks.PARTNER_ROWS, alone, registry=registry)
    except StackCheckFailed as exc:
        _fail(component, f"stacked check: {exc}")
    _same_as_alone(component, rows, rows, alone)
    _same_as_alone(component, [*rows, *mixed], rows, alone, f" in a stack shared with {other.family} {other.name!r}")


class _AloneRuns:
    """Runs alone on the CPU, each spec trained once."""

    def __init__(self) -> None:
        self.done: dict[str, object] = {}

    def __call__(self, spec):
        if spec.hash not in self.done:
            self.done[spec.hash] = train(spec, "cpu")
        return self.done[spec.hash]


def _same_as_alone(component, rows, own, alone, how: str = "") -> None:
    """Stack ``rows`` and compare each with its run alone; a differing row of the component
    (``own``) is explained where another row's values explain it."""
    from suite.conformance import stacks
    from suite.engine.units import run_unit

    results = dict(run_unit([r.spec for r in rows], "cpu", get_registry(), engine="stacked"))
    for i, row in enumerate(rows):
        got = results[i]
        wrong = stacks.mismatch(got, row.alone)
        if wrong is None:
            continue
        where = f"row {i} of {len(rows)} ({row.label()}){how}"
        if got.status == "failed":
            _fail(component, f"stacked: {where} {wrong}; the stacked implementation raised where the per-run one "
                             f"did not: fix what the traceback shows\n{_plugin_frames(got.traceback)}")
        others = [o for o in own if o is not row]
        why = stacks.broadcast(row, got, others, alone) if len(others) < len(own) else None
        _fail(component, f"stacked implementation differs from the per-run one: {where}: {wrong}; " + (why or (
            "each row must use its own spec's data, initialisation, hyperparameters and generator (ctx.generator), "
            "and a component given a block of a stack only its rows (stack.initial_params())")))


def _plugin_frames(tb: str | None, keep: int = 6) -> str:
    """The last lines of a traceback (the frames nearest the error), without its final line,
    which the message already shows."""
    lines = (tb or "").rstrip().splitlines()[1:-1]
    return "\n".join(lines[-2 * keep:])
