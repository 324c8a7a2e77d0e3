"""The catalog through the CLI: a smoke run per problem, one-line errors, `suite list`."""

from __future__ import annotations

import pytest

from tests.conftest import runs_of

BUDGET = {"nqm": ["--steps", "50"]}


@pytest.mark.parametrize("problem", ["linreg", "mean", "nqm", "logistic", "mlp"])
def test_every_problem_runs_with_its_default_components(cli, mlflow_client, problem):
    out = cli("run", "--problem", problem, *BUDGET.get(problem, ["--epochs", "2"]), "--quiet").output
    assert "completed" in out, out
    (run,) = runs_of(mlflow_client, problem)
    assert run.info.status == "FINISHED"
    assert "val_loss" in run.data.metrics
    assert ("dist_to_opt" in run.data.metrics) == (problem != "mlp")
