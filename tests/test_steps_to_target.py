"""``suite run --target X``: every run logs steps_to_target, the first evaluated step at which its
expected risk (nqm) or else its validation loss was <= X, as a metric that lines up in MLflow's
runs table; the grid table shows it per configuration; a benchmark file takes ``target:``."""

from __future__ import annotations

import csv
import io

from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from tests.conftest import runs_of


def first_at(client, run_id: str, key: str, target: float) -> float | None:
    """The first logged step of ``key``'s history at or below ``target``, read back from MLflow."""
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return next((float(step) for step, value in history if value <= target), None)


def test_grid_runs_log_steps_to_target_on_the_expected_risk(cli, mlflow_client):
    out = cli("run", "--problem", "nqm", "--lr", "0.02,0.5", "--batch-size", "16", "--steps", "300", "--seeds", "2",
              "--averager", "ema", "--target", "0.1").output
    runs = runs_of(mlflow_client, "nqm", "tags.`suite.kind` = 'run'")
    assert len(runs) == 4
    reached = 0
    for run in runs:
        assert run.data.params["target"] == "0.1"
        for metric, watched in (("steps_to_target", "theory_risk"), ("avg_steps_to_target", "theory_avg_risk")):
            expected = first_at(mlflow_client, run.info.run_id, watched, 0.1)
            assert run.data.metrics.get(metric) == expected, (run.info.run_name, metric)
            reached += expected is not None
    assert 0 < reached < 8  # lr=0.5 gets there, lr=0.02 does not: both cases are checked
    header = next(line for line in out.splitlines() if "configuration" in line)
    assert "steps to target" in header
    (lr_small,) = [line for line in out.splitlines() if line.strip().startswith("lr=0.02")]
    assert "not reached" in lr_small
    (parent,) = runs_of(mlflow_client, "nqm", "tags.`suite.kind` = 'grid'")
    summary = mlflow_client.download_artifacts(parent.info.run_id, "summary.csv")
    rows = list(csv.DictReader(io.StringIO(open(summary).read())))
    assert {r["configuration"]: r["reached"] for r in rows} == {"lr=0.02": "0", "lr=0.5": "2"}


def test_without_a_risk_the_validation_loss_is_read_and_reruns_keep_the_metric(cli, mlflow_client):
    args = ["run", "--problem", "linreg", "--lr", "0.05", "--batch-size", "32", "--epochs", "3", "--eval-every", "5",
            "--seeds", "2", "--target", "0.5"]
    cli(*args)
    runs = runs_of(mlflow_client, "linreg", "tags.`suite.kind` = 'run'")
    steps = [first_at(mlflow_client, r.info.run_id, "val_loss", 0.5) for r in runs]
    assert None not in steps and [r.data.metrics["steps_to_target"] for r in runs] == steps
    again = cli(*args).output  # done before: the table reads the metric back from MLflow
    assert "0 run now" in again and f"{sum(steps) / 2:.4g} ±" in again


def test_the_target_is_part_of_the_spec_only_when_given():
    registry = get_registry()
    plain = resolve_spec(registry, batch_size=32, epochs=1)
    aimed = resolve_spec(registry, batch_size=32, epochs=1, target=0.5)
    assert "target" not in plain.to_dict() and "target" not in plain.flat_params()
    assert aimed.to_dict()["target"] == 0.5 and aimed.hash != plain.hash


def test_a_benchmark_file_takes_a_target(cli, workdir, mlflow_client):
    (workdir / "b.yaml").write_text(
        "name: aimed\nexperiments:\n  sweep:\n    problem: nqm\n    batch_size: 16\n    steps: 200\n"
        "    target: 0.2\n    params: {optimizer.lr: [0.5]}\n")
    cli("run", str(workdir / "b.yaml"))
    (run,) = [r for r in runs_of(mlflow_client, "aimed") if r.data.tags.get("suite.kind") == "run"]
    assert run.data.params["target"] == "0.2"
    assert run.data.metrics["steps_to_target"] == first_at(mlflow_client, run.info.run_id, "theory_risk", 0.2)
