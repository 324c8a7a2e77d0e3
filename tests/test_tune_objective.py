"""A steps-to-target trial, in the engine: evaluations 5% apart, runs stopped at the target and
recorded as completed, the value read from the expected risk's mean curve over seeds."""

from __future__ import annotations

import math

import optuna
import pytest

from suite.engine.loop import train
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.tuning.budget import Budget
from suite.tuning.objective import Objective
from suite.tuning.plan import plan_studies
from suite.tuning.space import variants
from suite.tuning.trials import TrialObjective

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

    def eval_rows(self, rows):
        for key, step, metrics in rows:
            self.eval(key, step, metrics)

    def done(self, key, result):
        self.results[key] = result

    def tag(self, key, tags):
        self.tags[key] = tags

    def interrupted(self, key):
        pass

    def echo(self, line):
        pass

    def settle(self):
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
        assert min(m["theory_risk"] for _, m in r.history) <= 0.05  # every seed reached it
        assert r.history[-1][0] < 2000
    # the seeds train as one stack, which stops at the first evaluation at which every seed and
    # their mean have reached the target (a row evaluated just before that moment stops at the next)
    histories = [r.history for r in results]
    steps = sorted({s for h in histories for s, _ in h})
    first = next(s for s in steps if plan.objective.all_reached([[e for e in h if e[0] <= s] for h in histories]))
    following = steps[min(steps.index(first) + 1, len(steps) - 1)]
    assert all(first <= h[-1][0] <= following for h in histories)
    # the value: where the mean expected-risk curve reaches the target, exact since no seed stopped
    # before the mean reached it; each seed's own value is where its curve reached it
    assert trial.value == plan.objective.trial_value(histories)
    assert trial.value <= first
    assert trial.user_attrs["suite.values"] == [plan.objective.value(r) for r in results]
    assert all(v <= first for v in trial.user_attrs["suite.values"])
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


def test_steps_to_target_interpolate_between_evaluations_as_the_report_reads_them():
    from suite.report.scaling import steps_to_target

    def history(values):
        return [(s, {"val_loss": v, "theory_risk": v}) for s, v in values]

    objective = Objective.parse("steps-to-target:0.02")
    fast = history([(0, 1.0), (10, 0.04), (12, 0.01)])  # crosses halfway on the log scale: step 11
    slow = history([(0, 1.0), (10, 0.025), (12, 0.019)])  # just before step 12
    assert objective.trial_value([fast]) == pytest.approx(11.0)
    assert objective.trial_value([slow]) == pytest.approx(10 + 2 * math.log(1.25) / math.log(0.025 / 0.019))
    assert objective.trial_value([fast]) < objective.trial_value([slow]) < 12  # they no longer tie at step 12
    mean = objective.mean_curve([fast, slow])
    assert objective.trial_value([fast, slow]) == pytest.approx(steps_to_target(mean, 0.02))
    assert objective.trial_value([history([(0, 0.01), (5, 0.005)])]) == 0.0  # at the target from the start
    accuracy = Objective.parse("steps-to-target:0.9:val_acc:max")  # a metric to raise: its first step there
    assert accuracy.trial_value([[(0, {"val_acc": 0.5}), (10, {"val_acc": 0.8}), (12, {"val_acc": 0.95})]]) == 12.0
