"""The stacked engine's exactness promise (suite.engine.exactness), both halves: stable stacked
rows equal their runs alone within 1e-4; rows whose loss passes 4x its start are recorded as
unstable (a tag and a line in the grid summary). And the kit leaves such rows out."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from mlflow import MlflowClient

from suite.conformance import stacks
from suite.engine.exactness import STACKED_REL_TOL, UNSTABLE_FACTOR, loss_growth, unstable
from suite.engine.loop import train
from suite.engine.units import run_unit
from suite.errors import StackCheckFailed
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.vocab import TAG_UNSTABLE
from tests.conftest import runs_of, suite_cmd

STABLE = [("mean", {"optimizer.lr": 1.5}),  # near the stability cap 2/h: the loss rises, but stays below 4x
          ("logistic", {"optimizer.lr": 1.0, "optimizer.momentum": 0.9}),
          ("linreg", {"optimizer.lr": 0.05, "optimizer.momentum": 0.5})]


@pytest.mark.parametrize(("problem", "overrides"), STABLE)
def test_stable_stacked_rows_equal_their_runs_alone_within_the_promise(problem, overrides):
    registry = get_registry()
    specs = [resolve_spec(registry, components={"problem": problem}, overrides={"problem.n": 300, **overrides},
                          batch_size=16, epochs=4, seed=s) for s in (0, 1, 2)]
    for i, got in run_unit(specs, "cpu", registry, engine="stacked"):
        ref = train(specs[i], "cpu")
        assert got.engine == "stacked" and got.status == ref.status == "completed"
        assert unstable(got) is None and loss_growth(ref.history) is None  # stable: inside the promise
        for (_, a), (_, b) in zip(got.history, ref.history, strict=True):
            for key, value in a.items():
                assert math.isclose(value, b[key], rel_tol=STACKED_REL_TOL, abs_tol=1e-6), (key, value, b[key])


def test_loss_growth_past_the_factor_is_unstable_and_below_it_is_not():
    start = {"val_loss": 1.0}
    assert loss_growth([(0, start), (5, {"val_loss": 0.9 * UNSTABLE_FACTOR, "train_loss": 2.0})]) is None
    why = loss_growth([(0, start), (5, {"val_loss": 0.5, "train_loss": 1.1 * UNSTABLE_FACTOR})])
    assert why.startswith(f"train_loss 4.4 passed {UNSTABLE_FACTOR:g}x the initial val_loss (1) at step 5")
    assert "only for stable runs" in why


def test_an_unstable_stacked_run_is_tagged_and_named_in_the_grid_summary(workdir):
    """logistic + sgd at lr 100, momentum 0.9: chaos that never trips the 1000x divergence rule."""
    res = suite_cmd("run", "--problem", "logistic", "--set", "problem.n=300", "--lr", "100,0.5", "--momentum", "0.9",
                    "--seeds", "2", "--epochs", "3", "--quiet", cwd=workdir)
    assert res.returncode == 0, res.stderr
    runs = runs_of(MlflowClient(), "logistic", "tags.`suite.kind` = 'run'")
    tagged = {r.data.tags["suite.spec_hash"]: r.data.tags.get(TAG_UNSTABLE) for r in runs}
    lrs = {r.data.tags["suite.spec_hash"]: r.data.params["optimizer.lr"] for r in runs}
    assert {lrs[h] for h, tag in tagged.items() if tag} == {"100.0"}
    assert sum(1 for tag in tagged.values() if tag) == 2
    assert all(r.data.tags["suite.status"] == "completed" for r in runs)  # not diverged: unstable
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith("UNSTABLE: ")]
    assert line.startswith("UNSTABLE: 2 stacked run(s) unstable (loss past 4x its start; tag suite.unstable)")
    assert all(f"[{h}]" in line for h, tag in tagged.items() if tag)


def test_the_kit_leaves_rows_outside_the_promise_out():
    registry = get_registry()
    sgd = registry.get("optimizer", "sgd")

    def seed_one_chaotic(spec):  # the run alone of the row with seed 1 grows past the factor
        result = train(spec, "cpu")
        if spec.seed == 1:
            step, metrics = result.history[-1]
            result = replace(result, history=[*result.history[:-1], (step, {**metrics, "val_loss": 1e3})])
        return result

    rows = stacks.stable_rows(sgd, sgd, stacks.ROWS, seed_one_chaotic, registry=registry)
    assert [r.spec.seed for r in rows] == [0, 2, 3, 4]
    assert len({tuple(r.spec.params_of("optimizer").items()) for r in rows}) == stacks.ROWS  # distinct rows
    with pytest.raises(StackCheckFailed, match=r"only 0 of 10 rows drawn from the search spaces train stably"):
        stacks.stable_rows(sgd, sgd, stacks.ROWS, lambda spec: seed_one_chaotic(spec.with_seed(1)), registry=registry)
