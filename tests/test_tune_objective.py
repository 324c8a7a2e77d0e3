"""A steps-to-target trial, in the engine: evaluations 5% apart, runs stopped at the target and
recorded as completed, the value read from the expected risk's mean curve over seeds."""

from __future__ import annotations

import math

import optuna
import pytest

from suite.engine.loop import train
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.tune.plan import Budget, Objective, TrialObjective, plan_studies, variants

NQM = {"problem": "nqm", "optimizer": "sgd"}


def test_geometric_evaluations_resolve_any_step_to_five_percent():
    spec = resolve_spec(get_registry(), components=NQM, overrides={"problem.dim": 8}, batch_size=4, steps=1000,
                        eval_growth=0.05)
    steps = [s for s, _ in train(spec).history]
    assert steps[:21] == list(range(21)) and steps[-1] == 1000
    assert all(b - a <= max(1, 0.05 * a) for a, b in zip(steps, steps[1:], strict=False))
    assert len(steps) < 130  # not every step
    # a spec without it keeps the hash it had before the field existed
    plain = resolve_spec(get_registry(), components=NQM, batch_size=4, steps=1000)
    assert "eval_growth" not in plain.to_json() and resolve_spec(
        get_registry(), components=NQM, batch_size=4, steps=1000, eval_growth=0.05).hash != plain.hash


class MemorySink:
    """A TrialSink that keeps everything in memory."""

    def __init__(self):
        self.results, self.evals, self.tags = {}, {}, {}

    def start(self, key, study, spec, kind, tags):
        self.evals[key] = []

    def eval(self, key, step, metrics):
        self.evals[key].append((step, metrics))

    def done(self, key, result):
        self.results[key] = result

    def tag(self, key, tags):
        self.tags[key] = tags

    def interrupted(self, key):
        pass

    def echo(self, line):
        pass


def _plan(target, seeds=3, lr=0.3):
    (plan,) = plan_studies(
        get_registry(), problems=["nqm"], variant_list=variants({"optimizer": ["sgd"], "scheduler": ["constant"],
                                                                 "averager": ["none"], "sampler": ["shuffle"]}),
        batch_sizes=[16], budget=Budget("steps", 2000), objective=Objective.parse(f"steps-to-target:{target}"),
        seeds=seeds, fixed={"problem.dim": 32, "optimizer.momentum": 0, "optimizer.weight_decay": 0,
                            "optimizer.lr": lr})
    return plan


def test_a_trial_stops_at_the_target_and_completes():
    plan = _plan(0.05)
    sink = MemorySink()
    study = optuna.create_study()
    study.optimize(TrialObjective(plan, get_registry(), "cpu", sink), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    results = list(sink.results.values())
    assert len(results) == 3
    for r in results:
        assert r.status == "completed" and r.reason.startswith("reached the target")
        last = r.history[-1]
        assert last[1]["theory_risk"] <= 0.05 < r.history[-2][1]["theory_risk"]  # stopped right there
        assert last[0] < 2000
    # the value: where the mean expected-risk curve reaches the target (a seed stopped earlier holds
    # its last value), within 5% of the exact step of each seed's expected risk
    assert trial.value == plan.objective.trial_value([r.history for r in results])
    assert trial.value >= max(r.history[-1][0] for r in results) * 0.95
    assert trial.user_attrs["suite.values"] == [float(r.history[-1][0]) for r in results]
    assert {t["suite.trial_state"] for t in sink.tags.values()} == {"COMPLETE"}


def test_a_trial_that_never_reaches_the_target_scores_past_its_budget():
    plan = _plan(0.05, seeds=1, lr=0.001)
    study = optuna.create_study()
    sink = MemorySink()
    study.optimize(TrialObjective(plan, get_registry(), "cpu", sink), n_trials=1)
    (result,) = sink.results.values()
    assert result.status == "completed" and result.history[-1][0] == 2000
    risk = result.history[-1][1]["theory_risk"]
    assert study.trials[0].value == pytest.approx(2000 * risk / 0.05) and study.trials[0].value > 2000
    assert math.isfinite(study.trials[0].value)
