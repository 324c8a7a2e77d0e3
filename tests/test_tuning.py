"""Tuning building blocks: budgets, objectives, search spaces from registrations, study plans."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from suite.engine.loop import RunResult
from suite.errors import TuneError
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.tuning.budget import Budget
from suite.tuning.objective import Objective
from suite.tuning.plan import plan_studies
from suite.tuning.space import Variant, parse_space_option, search_space, variants

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
    assert [p.name.rpartition("-")[0] for p in plans] == [
        "linreg/sgd-constant-none-shuffle/b8", "linreg/sgd-constant-none-shuffle/b64",
        "linreg/sgd-cosine-none-shuffle/b8", "linreg/sgd-cosine-none-shuffle/b64",
    ]
    assert all(re.fullmatch(r"[0-9a-f]{6}", p.name.rpartition("-")[2]) for p in plans)
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

    from suite.tuning.studies import n_counted
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


# -- issue 13: honest objectives, study identity, steps:auto --------------------------------
def _history(losses, key="val_loss", every=10):
    return [(every * i, {"val_loss": 1.0, key: v}) for i, v in enumerate(losses)]


def test_trial_value_is_read_from_the_mean_curve_over_seeds():
    seeds = [_history([1.0, 0.6, 0.2, 0.5]), _history([1.0, 0.2, 0.6, 0.3])]  # mean: 1.0, 0.4, 0.4, 0.4
    assert Objective.parse("final").trial_value(seeds) == pytest.approx(0.4)
    # best: one checkpoint for all seeds, not the mean of each seed's best (0.2)
    assert Objective.parse("best").trial_value(seeds) == pytest.approx(0.4)
    # steps-to-target: where the mean curve reaches the target, not where a seed dips below it
    assert Objective.parse("steps-to-target:0.4").trial_value(seeds) == pytest.approx(10.0)
    assert Objective.parse("steps-to-target:0.3").trial_value(seeds) == pytest.approx(30 * 0.4 / 0.3)
    # a stack of seeds stops once every seed and the mean have reached the target
    obj = Objective.parse("steps-to-target:0.4")
    assert obj.all_reached(seeds) and not Objective.parse("steps-to-target:0.3").all_reached(seeds)
    assert not obj.all_reached([h[:2] for h in seeds]) and not Objective.parse("final").all_reached(seeds)
    # a seed stopped at its target holds its last value
    stopped = [_history([1.0, 0.2]), _history([1.0, 0.6, 0.4, 0.25])]
    # mean 0.3 at step 20, (0.2 + 0.25) / 2 at step 30: crossing 0.25 log-linearly in between
    assert Objective.parse("steps-to-target:0.25").trial_value(stopped) == pytest.approx(
        20 + 10 * math.log(0.3 / 0.25) / math.log(0.3 / 0.225))
    assert Objective.parse("steps-to-target:0.1").trial_value(stopped, 100) == pytest.approx(100 * 0.225 / 0.1)


def test_steps_to_target_watches_the_expected_risk_where_the_problem_knows_it():
    obj = Objective.parse("steps-to-target:0.5")
    noisy = {"val_loss": 0.1, "theory_risk": 0.9}
    assert obj.watched(noisy) == 0.9 and Objective.parse("final").watched(noisy) == 0.1
    averaged = {"val_loss": 0.1, "theory_risk": 0.9, "avg_val_loss": 0.2, "theory_avg_risk": 0.4}
    assert obj.watched(averaged) == 0.4 and Objective.parse("final").watched(averaged) == 0.2
    assert obj.watched({"val_loss": 0.3}) == 0.3  # no theory: the measured loss
    assert obj.reached([(5, noisy)]) is False and obj.reached([(5, averaged)]) is True
    assert obj.eval_growth == 0.05 and Objective.parse("final").eval_growth is None


def _plans(**kw):
    args = dict(problems=["nqm"], variant_list=variants({"optimizer": ["sgd"], "scheduler": ["constant"],
                                                         "averager": ["none"], "sampler": ["shuffle"]}),
                batch_sizes=[4], budget=Budget("steps", 100), objective=Objective("final"), seeds=1)
    args.update(kw)
    return plan_studies(get_registry(), **args)


def test_study_names_carry_everything_that_changes_a_trials_value():
    (base,) = _plans()
    assert re.fullmatch(r"nqm/sgd-constant-none-shuffle/b4-[0-9a-f]{6}", base.name)
    assert base.legacy_name == "nqm/sgd-constant-none-shuffle/b4"
    (same,) = _plans(fixed={"optimizer.momentum": "0.0"})
    (same_again,) = _plans(fixed={"optimizer.momentum": 0})
    assert same.name == same_again.name  # one setting however it is written
    others = [same, *_plans(space_overrides={"optimizer.lr": "log:0.001:0.5"}),
              *_plans(objective=Objective.parse("best")), *_plans(budget=Budget("steps", 200)),
              *_plans(seeds=2), *_plans(eval_every=5), *_plans(fixed={"problem.dim": 32})]
    names = [base.name, *(p.name for p in others)]
    assert len(set(names)) == len(names), names
    assert all(p.legacy_name == base.legacy_name for p in others)


def test_steps_auto_scales_the_budget_with_the_batch_size():
    from suite.theory import best_steps_to_target

    obj = Objective.parse("steps-to-target:0.05")
    plans = _plans(budget=Budget.parse("steps:auto"), objective=obj, batch_sizes=[4, 1024],
                   fixed={"problem.dim": 32}, seeds=3)
    h = 1 / np.arange(1, 33)
    assert [p.budget.n for p in plans] == [4 * best_steps_to_target(h, h, 4, 0.05)[0], 56]  # 4 x 14 = 56 > 50
    assert str(Budget.parse("steps:auto")) == "steps:auto" and plans[0].settings()["budget"] == "steps:1124"
    assert plans[0].eval_growth == 0.05 and plans[0].spec(get_registry(), {}, 0).eval_growth == 0.05
    (logistic,) = plan_studies(get_registry(), problems=["logistic"], variant_list=[plans[0].variant],
                               batch_sizes=[8], budget=Budget.parse("steps:auto"), objective=obj, seeds=1)
    assert logistic.budget.n == 20 * 800 // 8  # 20 epochs of the 800 training examples
    with pytest.raises(TuneError, match="steps:auto needs --objective steps-to-target"):
        _plans(budget=Budget.parse("steps:auto"))


def test_old_studies_resume_under_their_old_name_when_their_settings_match():
    import json

    import optuna

    from suite.tuning.studies import resolve_names
    from suite.vocab import STUDY_SETTINGS

    def storage_with_old_study(settings):
        storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(storage=storage, study_name="nqm/sgd-constant-none-shuffle/b4")
        study.set_user_attr(STUDY_SETTINGS, json.loads(json.dumps(settings)))
        return storage

    (final,) = _plans()
    (to_target,) = _plans(objective=Objective.parse("steps-to-target:0.05"), seeds=3)
    # what the suite stored before issue 13: no evaluation growth, no measure
    old_final = {k: v for k, v in final.settings().items() if k not in ("eval_growth", "measure")}
    old_target = {k: v for k, v in to_target.settings().items() if k not in ("eval_growth", "measure")}
    assert old_final == final.settings()  # `final` is measured as before...
    assert resolve_names(storage_with_old_study(old_final), [final])[0].name == final.legacy_name  # ...and resumes
    # steps-to-target is measured differently now (expected risk, mean curve, 5% evaluations): a new study
    assert resolve_names(storage_with_old_study(old_target), [to_target])[0].name == to_target.name
    # another pinned value (the old names' collision): not that study either
    (pinned,) = _plans(fixed={"optimizer.momentum": 0})
    assert resolve_names(storage_with_old_study(old_final), [pinned])[0].name == pinned.name != final.legacy_name


def test_the_winner_is_the_best_reevaluated_mean():
    import optuna

    from suite.tuning.studies import top_trials
    from suite.tuning.winners import Reeval, summarize
    from suite.vocab import STUDY_OVERRIDES

    (plan,) = _plans()
    study = optuna.create_study()
    for v in (36.0, 50.0, 60.0, 90.0):  # trial 0: the lucky draw
        t = study.ask()
        t.set_user_attr(STUDY_OVERRIDES, {"optimizer.lr": v / 100})
        study.tell(t, v)
    assert [t.number for t in top_trials(study, 3)] == [0, 1, 2]
    reevals = {0: Reeval([600.0, 700.0]), 1: Reeval([55.0, 57.0]), 2: Reeval([], n_diverged=2)}
    s = summarize(study, plan, reevals)
    assert (s.best_number, s.best_value, s.best_params, s.reeval.mean) == (1, 50.0, {"optimizer.lr": 0.5}, 56.0)
    assert s.n_reevaluated == 3 and "56 ± 1.4 on 2 fresh seeds, tuned 50" in s.cell()
    assert summarize(study, plan).best_number == 0  # without re-evaluation: the tuned best
    # a seed that diverged (or missed the target) counts before the mean of the others
    s = summarize(study, plan, {0: Reeval([40.0], n_diverged=1), 1: Reeval([55.0, 57.0])})
    assert s.best_number == 1 and s.reevaluated == (0, 1)


def test_optunas_figures_leave_the_processs_matplotlib_style_as_it_was():
    """Optuna's matplotlib plots switch to the ggplot style with ``plt.style.use``; the figures
    drawn after them in the same process (the findings report's) keep the default look."""
    import matplotlib
    import optuna

    from suite.tuning.winners import study_figures

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))  # in memory
    study.optimize(lambda t: t.suggest_float("lr", 0.01, 1.0, log=True) + t.suggest_float("wd", 0.0, 0.1), n_trials=4)
    before = {k: matplotlib.rcParams[k] for k in ("axes.facecolor", "axes.grid", "font.size", "axes.labelsize")}
    figs = study_figures(study)
    assert set(figs) == {"optuna_history.png", "optuna_importance.png"}
    assert figs["optuna_history.png"].axes[0].get_facecolor() != matplotlib.colors.to_rgba(before["axes.facecolor"])
    assert {k: matplotlib.rcParams[k] for k in before} == before


def test_the_tune_table_tells_a_tuned_beta_near_one_from_one():
    import optuna

    from suite.specs.naming import value_text
    from suite.tuning.winners import summarize
    from suite.vocab import STUDY_OVERRIDES

    (plan,) = _plans()
    study = optuna.create_study()
    t = study.ask()
    t.set_user_attr(STUDY_OVERRIDES, {"optimizer.lr": 0.0123456, "optimizer.beta2": 0.99985, "optimizer.eps": 1e-8})
    study.tell(t, 1.0)
    assert "(lr=0.0123 beta2=0.99985 eps=1e-08)" in summarize(study, plan).cell()
    assert [value_text(v, 3) for v in (0.999, 0.9, 0.99, -0.9995, 3, 0.0, True)] == \
        ["0.999", "0.9", "0.99", "-0.9995", "3", "0", "True"]


def test_the_figures_of_a_tune_without_a_completed_trial_warn_nothing():
    import warnings

    import optuna

    from suite.tuning.winners import figures, summarize

    (plan,) = _plans()
    study = optuna.create_study()
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    summary = summarize(study, plan)
    assert summary.best_value is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend" among them
        figs = figures([summary], "final val loss")
    assert list(figs) == ["nqm_best_value_vs_batch_size.png"]
    texts = [t.get_text() for t in figs["nqm_best_value_vs_batch_size.png"].axes[0].texts]
    assert texts == ["no completed trial"]
