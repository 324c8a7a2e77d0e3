"""The catalog through the CLI: a smoke run per problem, one-line errors, `suite list`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import runs_of

BUDGET = {"nqm": ["--steps", "50"]}


def test_every_problem_runs_with_its_default_components(cli, mlflow_client):
    # one MLflow store for all (creating one costs seconds)
    for problem in ["linreg", "mean", "nqm", "logistic", "mlp"]:
        out = cli("run", "--problem", problem, *BUDGET.get(problem, ["--epochs", "2"]), "--quiet").output
        assert "completed" in out, out
        (run,) = runs_of(mlflow_client, problem)
        assert run.info.status == "FINISHED"
        assert "val_loss" in run.data.metrics
        assert ("dist_to_opt" in run.data.metrics) == (problem != "mlp"), problem
        assert ("theory_risk" in run.data.metrics) == (problem == "nqm"), problem


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--scheduler", "step", "--set", "scheduler.gamma=0"],
         "scheduler.gamma=0.0 is out of range: must be in (0, 1]"),
        (["--scheduler", "exponential", "--set", "scheduler.gamma=1.5"], "scheduler.gamma=1.5 is out of range"),
        (["--averager", "ema", "--set", "averager.decay=1"], "averager.decay=1.0 is out of range: must be in [0, 1)"),
        (["--averager", "ema", "--set", "averager.decay=-0.1"], "averager.decay=-0.1 is out of range"),
        (["--optimizer", "precond", "--set", "optimizer.p=1.5"], "optimizer.p=1.5 is out of range: must be in [0, 1]"),
        (["--optimizer", "precond", "--set", "optimizer.p=-0.5"], "optimizer.p=-0.5 is out of range"),
        (["--problem", "mlp", "--optimizer", "precond"], "'precond' needs the problem's curvature"),
        (["--scheduler", "plateau", "--set", "scheduler.warmup_steps=2"], "has no hyperparameter 'warmup_steps'"),
        (["--scheduler", "plateau", "--set", "scheduler.factor=1"], "scheduler.factor=1.0 is out of range"),
        (["--averager", "swa", "--set", "averager.start=1"], "averager.start=1.0 is out of range"),
        (["--problem", "nqm"], "has no finite data set: give its budget in --steps"),
    ],
)
def test_bad_hyperparameters_are_one_line_exit_2_and_no_run(cli, workdir, args, fragment):
    result = cli("run", "--epochs", "1", *args, ok=False)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.output
    assert not (workdir / "mlflow.db").exists()  # refused before MLflow was touched


CATALOG = {
    "problem": ["linreg", "mean", "nqm", "logistic", "mlp"],
    "sampler": ["shuffle", "replacement", "full"],
    "optimizer": ["sgd", "precond"],
    "scheduler": ["constant", "step", "exponential", "inverse_time", "cosine", "plateau"],
    "averager": ["none", "ema", "swa"],
}


def test_list_shows_the_whole_catalog_with_params_ranges_and_spaces(cli):
    data = json.loads(cli("list", "--format", "json").output)
    by_key = {(d["family"], d["name"]): d for d in data}
    for family, names in CATALOG.items():
        for name in names:
            entry = by_key[(family, name)]
            assert entry["description"] and entry["distribution"] == "sgd-suite"
            for p in entry["params"]:
                assert p["range"] and "default" in p
            if family == "scheduler":
                assert entry["interval"] in ("step", "epoch")
    params = {(f, n): {p["name"]: p for p in by_key[(f, n)]["params"]} for f, n in by_key}
    assert params[("optimizer", "precond")]["p"]["range"] == "[0, 1]"
    assert params[("optimizer", "precond")]["lr"]["space"]["kind"] == "log"
    assert params[("optimizer", "sgd")]["momentum"]["space"]["transform"] == "one_minus"
    assert params[("optimizer", "sgd")]["weight_decay"]["space"]["off"] == 0.0
    assert params[("scheduler", "step")]["gamma"]["range"] == "(0, 1]"
    assert params[("averager", "ema")]["decay"]["range"] == "[0, 1)"
    for key in [("scheduler", "exponential"), ("scheduler", "inverse_time"), ("scheduler", "plateau"),
                ("averager", "swa"), ("averager", "ema")]:
        assert any(p["space"] for p in params[key].values()), key
    table = cli("list").output
    for names in CATALOG.values():
        for name in names:
            assert f"  {name} " in table, name
    assert "scheduler.warmup_steps" in table and "[stepped every epoch]" in table


def test_nqm_run_logs_theory_risk_next_to_the_measured_risk(cli, mlflow_client):
    cli("run", "--problem", "nqm", "--optimizer", "precond", "--momentum", "0.5", "--averager", "swa",
        "--scheduler", "exponential", "--lr", "0.3", "--steps", "200", "--batch-size", "16", "--quiet")
    (run,) = runs_of(mlflow_client, "nqm")
    for key in ("val_loss", "theory_risk", "avg_val_loss", "theory_avg_risk", "dist_to_opt"):
        assert key in run.data.metrics, key
    measured = mlflow_client.get_metric_history(run.info.run_id, "val_loss")
    predicted = mlflow_client.get_metric_history(run.info.run_id, "theory_risk")
    assert [m.step for m in measured] == [m.step for m in predicted]
    assert predicted[0].value == pytest.approx(measured[0].value, rel=1e-6)  # same θ₀
