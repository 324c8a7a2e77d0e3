"""Every run says where it came from: the user (MLflow's User column), the command, the suite's
git commit, and the versions of torch, MLflow and Optuna, on grids' runs and tuning's alike."""

from __future__ import annotations

import getpass
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from mlflow import MlflowClient

import suite
from tests.conftest import suite_cmd

ROOT = Path(suite.__file__).resolve().parents[1]


def head_commit() -> str | None:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


@pytest.mark.slow
def test_grid_and_tuning_runs_carry_user_command_commit_and_versions(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["--problem", "linreg", "--device", "cpu", "--tracking-uri", uri, "--quiet"]
    grid = suite_cmd("run", *common, "--lr", "0.01,0.02", "--epochs", "1", "--experiment", "g", cwd=tmp_path)
    assert grid.returncode == 0, grid.stderr
    tune = suite_cmd("tune", *common, "--optimizer", "sgd", "--batch-size", "8", "--trials", "2", "--budget",
                     "epochs:1", "--experiment", "t", "--storage", str(tmp_path / "o.journal"), cwd=tmp_path)
    assert tune.returncode == 0, tune.stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(n).experiment_id for n in ("g", "t")],
                              max_results=1000)
    kinds = {r.data.tags.get("suite.kind") for r in runs}
    assert {"run", "grid", "study", "trial", "tune"} <= kinds, kinds
    commit = head_commit()
    for r in runs:
        tags = r.data.tags
        assert r.info.user_id == tags["mlflow.user"] == getpass.getuser()
        assert tags["mlflow.source.name"] in ("suite run", "suite tune")
        assert tags.get("mlflow.source.git.commit") == commit
        assert tags["suite.version"] == suite.__version__
        for dist in ("torch", "mlflow", "optuna"):
            assert tags[f"suite.{dist}_version"] == metadata.version(dist)
