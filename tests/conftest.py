"""Shared fixtures: a real MLflow store in a temp dir, a CLI runner, pip-installed plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from suite.cli import main

BIN = Path(sys.executable).parent


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh directory with MLflow's store there (as a newcomer's working dir)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path


@pytest.fixture
def tracking_uri(workdir):
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture
def mlflow_client(tracking_uri):
    return MlflowClient(tracking_uri=tracking_uri)


@pytest.fixture
def cli(workdir):
    """Invoke the ``suite`` command in-process; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str, ok: bool | None = True):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(f"suite {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}")
        return result

    return invoke


def suite_cmd(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run the installed ``suite`` console script in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(BIN / "suite"), *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd,
        timeout=timeout,
    )


def runs_of(client: MlflowClient, experiment: str, filter_string: str = ""):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=5000)
