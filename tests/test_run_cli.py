"""`suite run` for one configuration end to end, checked through MLflow's own API."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import runs_of

MWE = [
    "run", "--problem", "linreg", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
    "--weight-decay", "1e-4", "--scheduler", "cosine", "--set", "scheduler.eta_min=0.001",
    "--averager", "ema", "--set", "averager.decay=0.99", "--batch-size", "32", "--epochs", "50",
    "--seed", "42",
]


def test_minimal_working_example_reproduces_the_lecture(cli, mlflow_client, workdir):
    out = cli(*MWE).output
    val = float(re.search(r"final .*\bval_loss=([0-9.]+)", out).group(1))
    assert abs(val - 0.247) / 0.247 < 0.02, out
    w4 = re.search(r"w4: true=(-?[0-9.]+)\s+learned=(-?[0-9.]+)", out)
    assert float(w4.group(1)) == pytest.approx(-1.1229, abs=1e-4)
    assert abs(float(w4.group(2)) - (-1.125)) < 0.01, out
    assert "bias: true=-0.1863" in out

    runs = runs_of(mlflow_client, "linreg")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    p = run.data.params
    for key, value in {
        "problem": "linreg", "sampler": "shuffle", "optimizer": "sgd", "scheduler": "cosine",
        "averager": "ema", "batch_size": "32", "epochs": "50", "seed": "42", "optimizer.lr": "0.1",
        "optimizer.momentum": "0.9", "optimizer.weight_decay": "0.0001", "optimizer.nesterov": "False",
        "scheduler.eta_min": "0.001", "scheduler.T_max": "None", "averager.decay": "0.99",
        "problem.n": "1000", "problem.d": "5", "problem.noise": "0.5",
    }.items():
        assert p[key] == value, key
    assert "steps" not in p

    tags = run.data.tags
    assert re.fullmatch(r"[0-9a-f]{16}", tags["suite.spec_hash"])
    assert tags["suite.status"] == "completed"
    assert tags["suite.version"]
    assert tags["suite.dist.optimizer"].startswith("sgd-suite==")
    assert tags["suite.torch_version"] and tags["suite.device"] == "cpu"
    assert tags["suite.scheduler_interval"] == "epoch"

    for key in ("train_loss", "val_loss", "lr", "epoch", "avg_val_loss", "dist_to_opt", "avg_dist_to_opt"):
        assert key in run.data.metrics, key
    history = mlflow_client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [25 * e for e in range(51)]  # step = optimizer steps
    assert history[-1].value == pytest.approx(val, rel=1e-4)
    lrs = mlflow_client.get_metric_history(run.info.run_id, "lr")
    assert lrs[0].value == pytest.approx(0.1) and lrs[-1].value < 0.002

    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"spec.yaml", "curves.png", "final_params.json"} <= artifacts
    final = json.loads(open(mlflow_client.download_artifacts(run.info.run_id, "final_params.json")).read())
    assert set(final) == {"learned", "averaged", "true"}
    assert final["true"]["weight"][4] == pytest.approx(-1.1229, abs=1e-4)
    spec_yaml = open(mlflow_client.download_artifacts(run.info.run_id, "spec.yaml")).read()
    assert tags["suite.spec_hash"] in spec_yaml


def test_experiment_and_tracking_uri_options(cli, tmp_path, mlflow_client):
    other = f"sqlite:///{tmp_path}/other.db"
    cli("run", "--epochs", "1", "--experiment", "mine", "--tracking-uri", other, "--quiet")
    from mlflow import MlflowClient

    assert len(runs_of(MlflowClient(other), "mine")) == 1
    assert runs_of(mlflow_client, "mine") == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--optimizer", "sgdd"], "unknown optimizer 'sgdd' (did you mean 'sgd'?)"),
        (["--set", "optimizer.lrr=0.1"], "has no hyperparameter 'lrr'"),
        (["--lr", "0"], "optimizer.lr=0.0 is out of range"),
        (["--lr", "-1"], "optimizer.lr=-1.0 is out of range"),
        (["--momentum", "1"], "optimizer.momentum=1.0 is out of range"),
        (["--momentum", "-0.1"], "optimizer.momentum=-0.1 is out of range"),
        (["--batch-size", "0"], "--batch-size=0 is out of range"),
        (["--batch-size", "801"], "--batch-size=801 is out of range: problem 'linreg' has 800 training examples"),
        (["--epochs", "0"], "--epochs=0 is out of range"),
        (["--steps", "0"], "--steps=0 is out of range"),
        (["--set", "optimizer.lr"], "malformed --set"),
        (["--set", "nonsense=1"], "malformed --set"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run(cli, mlflow_client, args, fragment):
    budget = [] if "--steps" in args or "--epochs" in args else ["--epochs", "1"]
    result = cli("run", *budget, *args, ok=False)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.output
    assert runs_of(mlflow_client, "linreg") == []


def test_diverging_run_is_recorded_as_diverged(cli, mlflow_client):
    # One configuration that diverges: recorded as diverged, said plainly, exit code 1 (in a grid,
    # divergence is a result and does not change the exit code: see test_grid_run.py).
    result = cli("run", "--lr", "50", "--epochs", "5", "--quiet", ok=False)
    assert result.exit_code == 1
    assert "run diverged: " in result.output
    (run,) = runs_of(mlflow_client, "linreg")
    assert run.info.status == "FAILED"
    assert run.data.tags["suite.status"] == "diverged"
    assert run.data.tags["suite.reason"]


def test_list_json_has_every_component_with_distribution_and_params(cli):
    data = json.loads(cli("list", "--format", "json").output)
    by_key = {(d["family"], d["name"]): d for d in data}
    for key in [("problem", "linreg"), ("sampler", "shuffle"), ("optimizer", "sgd"), ("scheduler", "constant"),
                ("scheduler", "cosine"), ("averager", "none"), ("averager", "ema")]:
        entry = by_key[key]
        assert entry["distribution"] == "sgd-suite" and entry["description"]
        assert isinstance(entry["params"], list)
    lr = next(p for p in by_key[("optimizer", "sgd")]["params"] if p["name"] == "lr")
    assert lr["default"] == 0.01 and lr["space"] == {"kind": "log", "low": 1e-4, "high": 1.0}
    table = cli("list", "optimizer").output
    assert "sgd" in table and "optimizer.lr" in table and "log[0.0001, 1]" in table
