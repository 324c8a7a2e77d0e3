"""Weighted samplers (importance sampling), the averaged model's metrics, problem.data_seed and
objectives on any logged metric."""

from __future__ import annotations

import math

import pytest
import torch

from suite.engine.loop import Batch, batch_loss, build, preflight, train
from suite.engine.units import plan_units, run_unit
from suite.errors import TuneError
from suite.registry import get_registry
from suite.tuning.objective import Objective
from tests.builtin_helpers import full_grad, spec_of


# -- weighted samplers ---------------------------------------------------------------------
@pytest.mark.parametrize("problem", ["linreg", "logistic", "mean"])
def test_importance_sampling_gives_an_unbiased_gradient(problem):
    """Mean over many draws of the weighted minibatch gradient equals the full gradient within
    4 standard errors per coordinate (while the sampling is far from uniform)."""
    built = build(spec_of({"problem": problem, "sampler": "importance"}, {"problem.n": 200}, batch_size=4))
    prob, model = built.problem, built.problem.model
    probs = built.sampler.probs
    assert float(probs.max() / probs.min()) > 2  # really non-uniform
    full = torch.cat([g.reshape(-1) for g in full_grad(prob, model)])
    draws = []
    for _ in range(40):
        for indices, weights in built.sampler:
            model.zero_grad()
            batch_loss(prob, model, Batch(torch.tensor(indices), torch.tensor(weights)), None).backward()
            draws.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    g = torch.stack(draws).double()
    mean, stderr = g.mean(0), g.std(0) / math.sqrt(len(g))
    assert bool(((mean - full.double()).abs() <= 4 * stderr + 1e-6).all()), (mean, full, stderr)


def test_unit_weights_give_the_plain_batch_loss():
    built = build(spec_of({"problem": "logistic"}))
    idx = torch.arange(8)
    plain = batch_loss(built.problem, built.problem.model, Batch(idx), None)
    weighted = batch_loss(built.problem, built.problem.model, Batch(idx, torch.ones(8)), None)
    assert torch.allclose(plain, weighted)


def test_a_weighted_sampler_trains_in_the_loop_and_falls_back_from_the_stacked_engine():
    specs = [spec_of({"sampler": "importance"}, epochs=3, seed=s) for s in range(2)]
    preflight(specs)
    assert plan_units(specs, get_registry(), engine="stacked") == [[0], [1]]
    results = dict(run_unit(specs, "cpu", engine="stacked"))
    assert {r.engine for r in results.values()} == {"loop"}
    assert all(r.status == "completed" for r in results.values())
    assert results[0].final["val_loss"] < 0.5 * results[0].history[0][1]["val_loss"]


# -- the averaged model's metrics ----------------------------------------------------------
def test_the_averaged_model_gets_every_model_metric_in_both_engines():
    from tests.test_stacked import assert_stack_matches_loop

    specs = [spec_of({"problem": "logistic", "averager": "ema"}, epochs=2, seed=s) for s in range(2)]
    results = assert_stack_matches_loop(specs)
    final = results[0].final
    assert {"val_acc", "avg_val_acc", "avg_val_loss", "avg_dist_to_opt"} <= set(final)
    assert 0 <= final["avg_val_acc"] <= 1 and final["avg_val_acc"] != final["val_acc"]
    assert "avg_val_acc" not in train(spec_of({"problem": "logistic"})).final  # no averager, no avg_


# -- problem.data_seed ---------------------------------------------------------------------
@pytest.mark.parametrize("problem", ["linreg", "logistic", "mean", "mlp"])
def test_data_seed_holds_the_data_fixed_across_seeds(problem):
    def data(seed, **over):
        b = build(spec_of({"problem": problem}, over, seed=seed))
        return b.problem.X_train, next(b.problem.model.parameters()).detach()

    (x0, w0), (x1, w1) = data(0, **{"problem.data_seed": 5}), data(1, **{"problem.data_seed": 5})
    assert torch.equal(x0, x1) and not torch.equal(w0, w1)  # same data, other initialisation
    assert not torch.equal(data(0)[0], data(1)[0])  # by default the data follow the seed
    assert torch.equal(data(5, **{"problem.data_seed": 5})[0], data(5)[0])  # data_seed = seed: today's data


def test_the_lectures_mwe_is_unchanged_by_default():
    b = build(spec_of(seed=42))
    torch.manual_seed(42)
    w_true = torch.randn(5, 1)
    assert torch.equal(b.problem.true_params["weight"], w_true.T)


def test_stacked_engine_matches_the_loop_with_data_seed():
    from tests.test_stacked import assert_stack_matches_loop

    for problem in ("linreg", "logistic"):
        assert_stack_matches_loop([spec_of({"problem": problem, "averager": "ema"}, {"problem.data_seed": 3},
                                           epochs=2, seed=s) for s in range(3)])


# -- objectives on any metric --------------------------------------------------------------
def test_objective_on_any_metric_with_a_direction():
    obj = Objective.parse("final:val_acc:max")
    assert (obj.metric, obj.direction, obj.study_direction, str(obj)) == ("val_acc", "max", "maximize",
                                                                          "final:val_acc:max")
    history = [(0, {"val_loss": 1.0, "val_acc": 0.5}), (5, {"val_loss": 0.4, "val_acc": 0.9}),
               (10, {"val_loss": 0.5, "val_acc": 0.8})]
    result = type("R", (), {"history": history})()
    assert obj.value(result, 10) == 0.8
    assert Objective.parse("best:val_acc:max").value(result, 10) == 0.9
    assert Objective.parse("best").value(result, 10) == 0.4
    assert Objective.parse("steps-to-target:0.85:val_acc:max").value(result, 10) == 5.0
    assert Objective.parse("steps-to-target:0.95:val_acc:max").value(result, 10) > 10
    assert Objective.parse("final").study_direction == "minimize"
    with pytest.raises(TuneError, match="the runs do not log 'val_accc'; they log: val_acc, val_loss"):
        Objective.parse("final:val_accc:max").value(result, 10)
    for bad in ("final:val_acc", "final:val_acc:up", "steps-to-target:x:val_acc:max", "worst"):
        with pytest.raises(TuneError, match="malformed --objective"):
            Objective.parse(bad)


@pytest.mark.slow
def test_tune_maximises_val_acc(cli, workdir):
    from optuna.study import StudyDirection

    from suite.tuning.studies import best_trial
    from tests.test_tune_cli import studies

    out = cli("tune", "--problem", "logistic", "--optimizer", "sgd", "--batch-size", "16", "--trials", "4",
              "--budget", "epochs:1", "--workers", "1", "--study-seed", "0", "--objective", "final:val_acc:max",
              "--quiet").output
    (study,) = studies(workdir).values()
    assert study.direction == StudyDirection.MAXIMIZE
    values = [t.value for t in study.trials if t.value is not None]
    assert len(values) >= 2 and all(0 <= v <= 1 for v in values)
    assert best_trial(study).value == max(values)
    assert "final val acc" in out


# -- summaries and reports on any metric ------------------------------------------------------
def _best_label(output: str) -> str:
    """The configuration a summary line names best ("…: LABEL (…)" or "…best mean LABEL (…)")."""
    line = next(x for x in output.splitlines() if "batch 16:" in x)
    return line.split("best mean ")[-1].split("batch 16: ")[-1].split(" (")[0]


def test_a_grid_summary_and_the_report_compare_by_any_metric_with_a_direction(cli, workdir):
    grid = ["run", "--problem", "logistic", "--optimizer", "sgd", "--lr", "0.001,1.0", "--batch-size", "16",
            "--seeds", "3", "--epochs", "3", "--experiment", "acc"]
    by_acc = cli(*grid, "--metric", "val_acc:max").output
    assert "final val_acc" in by_acc  # the compared metric gets its own columns
    assert _best_label(by_acc) == "lr=1.0"  # the higher accuracy
    worst = cli(*grid, "--metric", "val_acc:min").output  # the same runs (skipped), compared the other way
    assert "6 done before" in worst and _best_label(worst) == "lr=0.001"

    cli("report", "acc", "--metric", "val_acc:max", "--out", workdir / "rep")
    md = (workdir / "rep" / "report.md").read_text()
    assert "final val_acc (mean ± sd)" in md and "in val_acc (higher is better)" in md
    line = next(x for x in md.splitlines() if "batch 16:" in x)
    assert "lr=1.0 − lr=0.001 in val_acc (higher is better): +0." in line  # the best's accuracy is higher


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_bad_metric_is_refused_with_exit_2(cli, workdir, command):
    args = ["run", "--problem", "logistic", "--epochs", "1"] if command == "run" else ["report", "acc"]
    result = cli(*args, "--metric", "val_acc:up", ok=False)
    assert result.exit_code == 2
    assert "expected METRIC[:min|max]" in result.output and len(result.output.strip().splitlines()) == 1
