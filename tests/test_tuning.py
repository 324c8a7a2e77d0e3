"""Tuning building blocks: budgets, objectives, search spaces from registrations, study plans."""

from __future__ import annotations

import pytest

from suite.engine.loop import RunResult
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.tune.plan import (
    Budget,
    Objective,
    TuneError,
    Variant,
    parse_space_option,
    plan_studies,
    search_space,
    variants,
)

SGD = {"problem": "linreg", "optimizer": "sgd", "scheduler": "constant", "averager": "none", "sampler": "shuffle"}


def test_budget_and_objective_parse():
    assert Budget.parse("epochs:3").kwargs() == {"epochs": 3}
    assert Budget.parse("steps:500").kwargs() == {"steps": 500}
    assert str(Objective.parse("steps-to-target:0.3")) == "steps-to-target:0.3"
    for bad in ("epochs", "epochs:0", "hours:3", "steps:x", ""):
        with pytest.raises(TuneError, match="malformed --budget"):
            Budget.parse(bad)
    for bad in ("fastest", "final:3", "steps-to-target:", "steps-to-target:-1", "steps-to-target:nan"):
        with pytest.raises(TuneError, match="malformed --objective"):
            Objective.parse(bad)


def _result(losses, averaged=None):
    spec = resolve_spec(get_registry(), batch_size=8, steps=40)
    history = []
    for i, v in enumerate(losses):
        m = {"val_loss": v}
        if averaged is not None:
            m["avg_val_loss"] = averaged[i]
        history.append((10 * i, m))
    return RunResult(spec=spec, history=history)


def test_objective_values():
    r = _result([1.0, 0.5, 0.2, 0.3])
    assert Objective.parse("final").value(r, 30) == 0.3
    assert Objective.parse("best").value(r, 30) == 0.2
    assert Objective.parse("steps-to-target:0.5").value(r, 30) == 10.0
    # never reached: more than the budget, and less the closer the run came
    assert Objective.parse("steps-to-target:0.1").value(r, 30) == pytest.approx(30 * 0.3 / 0.1)
    assert Objective.parse("steps-to-target:0.25").value(r, 30) < Objective.parse("steps-to-target:0.1").value(r, 30)
    # with an averager the averaged model is judged
    assert Objective.parse("final").value(_result([1.0, 0.5], averaged=[0.9, 0.4]), 10) == 0.4
    assert Objective.parse("best").intermediate(r.history[:3]) == 0.2


def test_search_space_comes_from_registrations():
    reg = get_registry()
    space = search_space(reg, SGD)
    assert list(space) == ["optimizer.lr", "optimizer.momentum", "optimizer.weight_decay"]
    assert space["optimizer.momentum"].transform == "one_minus"
    assert space["optimizer.weight_decay"].off == 0.0
    both = search_space(reg, {**SGD, "scheduler": "cosine", "averager": "ema"})
    assert {"scheduler.eta_min", "averager.decay"} <= set(both)
    assert not any(k.startswith("problem.") for k in both)
    # a fixed value is not tuned; an override keeps the declared transform
    fixed = search_space(reg, SGD, fixed={"optimizer.momentum": "0"},
                         overrides={"optimizer.lr": "log:0.001:0.5", "optimizer.weight_decay": "choice:0,0.01"})
    assert "optimizer.momentum" not in fixed
    assert (fixed["optimizer.lr"].low, fixed["optimizer.lr"].high) == (0.001, 0.5)
    assert fixed["optimizer.weight_decay"].choices == (0, 0.01)
    kept = search_space(reg, SGD, overrides={"optimizer.momentum": "log:0.01:0.5"})
    assert kept["optimizer.momentum"].transform == "one_minus"


def test_plugin_components_are_tuned_from_their_registration():
    """An installed plugin's optimizer (suite-adaptive's adam) is tuned with no tuning code."""
    space = search_space(get_registry(), {**SGD, "optimizer": "adam"})
    assert {"optimizer.lr", "optimizer.beta1", "optimizer.beta2", "optimizer.weight_decay"} == set(space)
    assert space["optimizer.beta2"].transform == "one_minus"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("optimizer.lr", "malformed --space"),
        ("optimizer.lr=", "malformed --space"),
        ("lr=log:1:2", "malformed --space"),
        ("problem.n=int:10:100", "the problem is fixed"),
        ("widget.lr=log:1:2", "unknown family"),
    ],
)
def test_malformed_space_option(text, fragment):
    with pytest.raises(TuneError, match=fragment):
        parse_space_option(text)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("log:1", "malformed space"),
        ("cubic:1:2", "malformed space"),
        ("log:2:1", "LOW < HIGH"),
        ("uniform:-1:1", "out of range"),
        ("choice:fast", "not a valid float"),
    ],
)
def test_bad_space_values(override, fragment):
    with pytest.raises(TuneError, match=fragment):
        search_space(get_registry(), SGD, overrides={"optimizer.lr": override})


def test_plans_are_validated_before_anything_runs():
    reg = get_registry()
    kw = dict(problems=["linreg"], variant_list=variants({"optimizer": ["sgd"], "scheduler": ["constant", "cosine"],
                                                          "averager": ["none"], "sampler": ["shuffle"]}),
              budget=Budget("epochs", 2), objective=Objective("final"), seeds=1)
    plans = plan_studies(reg, batch_sizes=[8, 64], **kw)
    assert [p.name for p in plans] == [
        "linreg/sgd-constant-none-shuffle/b8", "linreg/sgd-constant-none-shuffle/b64",
        "linreg/sgd-cosine-none-shuffle/b8", "linreg/sgd-cosine-none-shuffle/b64",
    ]
    assert "scheduler.eta_min" in plans[2].space_dict and "scheduler.eta_min" not in plans[0].space_dict
    with pytest.raises(TuneError, match="out of range"):
        plan_studies(reg, batch_sizes=[5000], **kw)  # larger than the data
    with pytest.raises(TuneError, match="has no hyperparameter"):
        plan_studies(reg, batch_sizes=[8], space_overrides={"optimizer.lrr": "log:1e-3:1"}, **kw)
    with pytest.raises(TuneError, match="--seeds"):
        plan_studies(reg, batch_sizes=[8], **{**kw, "seeds": 0})


def test_interrupted_trials_do_not_count():
    import optuna
    from optuna.trial import TrialState

    from suite.tune.studies import n_counted
    from suite.vocab import TRIAL_STATUS as ATTR_STATUS

    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), state=TrialState.PRUNED)
    t = study.ask()
    t.set_user_attr(ATTR_STATUS, "failed")
    study.tell(t, state=TrialState.FAIL)  # failed in plugin code: counts
    study.tell(study.ask(), state=TrialState.FAIL)  # interrupted: redone on the next invocation
    study.ask()  # running
    assert n_counted(study) == 3


def test_variant_names():
    v = Variant("sgd", "cosine", "ema", "shuffle")
    assert v.name == "sgd-cosine-ema-shuffle"
