"""A tracking server's writes overlapped (suite/tracking/server_writes.py; forced on here with
``SUITE_TRACKING_ASYNC=1``), against a real local ``mlflow server`` (sqlite backend): every run and
metric lands, a run's status is set only once its writes are done, a failed batch is raised as
MLflow's own error; the default on a server of this machine, synchronous; which stores overlap."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from suite.tracking.server_writes import ASYNC_ENV, wanted
from suite.tracking.tracker import Tracker
from tests import browser
from tests.conftest import runs_of

pytestmark = pytest.mark.slow  # an mlflow server starts (10-30 s here)

GRID = ["run", "--problem", "linreg", "--optimizer", "sgd", "--lr", "0.01,0.1", "--momentum", "0,0.9",
        "--seeds", "2", "--epochs", "2", "--engine", "stacked", "--quiet"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with browser.mlflow_server(f"sqlite:///{root}/server.db", root / "server.log") as url:
        yield url


@pytest.fixture
def overlapped(monkeypatch):
    monkeypatch.setenv(ASYNC_ENV, "1")


def _landed(client: MlflowClient, experiment: str) -> dict[str, tuple[str, str, dict, dict]]:
    """Run name -> (MLflow status, suite.status, params, metric key -> the steps of its history)."""
    out = {}
    for run in runs_of(client, experiment, "tags.`suite.kind` = 'run'"):
        steps = {k: [m.step for m in client.get_metric_history(run.info.run_id, k)] for k in run.data.metrics}
        out[run.data.tags["mlflow.runName"]] = (run.info.status, run.data.tags["suite.status"], run.data.params,
                                                steps)
    return out


def test_a_grid_on_a_server_lands_every_run_and_metric(server, cli, tracking_uri, overlapped):
    cli(*GRID, "--experiment", "grid-server", "--tracking-uri", server)
    cli(*GRID, "--experiment", "grid-local", "--tracking-uri", tracking_uri)  # the same grid, written directly
    on_server = _landed(MlflowClient(server), "grid-server")
    local = _landed(MlflowClient(tracking_uri), "grid-local")
    assert len(on_server) == 8
    assert {n: (s, t, p, sorted(m)) for n, (s, t, p, m) in on_server.items()} == \
        {n: (s, t, p, sorted(m)) for n, (s, t, p, m) in local.items()}
    for name, (status, _, _, steps) in on_server.items():
        assert status == "FINISHED"
        assert steps == local[name][3], name  # every FINISHED run has its whole history


def _one_run(tracker: Tracker, name: str) -> str:
    run_id = tracker.create_run({"mlflow.runName": name}, {"lr": "0.1"})
    for step in range(5):
        tracker.log_metrics(run_id, step, {"val_loss": 1.0 / (step + 1), "train_loss": 2.0 / (step + 1)})
    return run_id


def test_a_status_is_set_only_once_the_runs_batches_are_written(server, overlapped):
    tracker, reader = Tracker("status-after-data", server), MlflowClient(server)
    with tracker.batched():
        ids = [_one_run(tracker, f"r{i}") for i in range(3)]
        for run_id in ids:
            tracker.set_status(run_id, "FINISHED")
        assert {reader.get_run(r).info.status for r in ids} == {"RUNNING"}  # kept back until the commit
        tracker.commit()
        for run_id in ids:
            assert reader.get_run(run_id).info.status == "FINISHED"
            assert [m.step for m in reader.get_metric_history(run_id, "val_loss")] == [0, 1, 2, 3, 4]
            assert reader.get_run(run_id).data.params == {"lr": "0.1"}


def test_a_failed_batch_is_raised_and_its_run_not_finished(server, overlapped):
    tracker, reader = Tracker("failed-batch", server), MlflowClient(server)
    with pytest.raises(MlflowException, match="active"), tracker.batched():
        good, gone = _one_run(tracker, "good"), _one_run(tracker, "gone")
        tracker.commit()  # both runs' params are written
        reader.delete_run(gone)  # the server now refuses the run's writes
        for run_id in (good, gone):
            tracker.set_status(run_id, "FINISHED")
    assert reader.get_run(good).info.status == "FINISHED"
    assert len(reader.get_metric_history(good, "val_loss")) == 5
    assert reader.get_run(gone).info.status == "RUNNING"  # its data did not land: not shown finished


@pytest.mark.parametrize(("uri", "setting", "overlaps"), [
    ("http://mlflow.example.org:5000", None, True),  # across a network: round trips bound the writes
    ("https://10.1.2.3", None, True),
    ("http://127.0.0.1:5000", None, False),  # this machine: the server's CPU bounds them
    ("http://localhost:5000", None, False),
    ("http://[::1]:5000", None, False),
    ("http://127.0.1.1:5000", None, False),
    ("http://127.0.0.1:5000", "1", True),
    ("http://mlflow.example.org:5000", "0", False),
    ("sqlite:///mlflow.db", "1", False),  # not a server: the local store's own paths
    ("postgresql://u:p@db.example.org/mlflow", None, False),
])
def test_which_stores_overlap_their_writes(uri, setting, overlaps, monkeypatch):
    if setting is None:
        monkeypatch.delenv(ASYNC_ENV, raising=False)
    else:
        monkeypatch.setenv(ASYNC_ENV, setting)
    assert wanted(uri) is overlaps


def test_by_default_a_local_servers_writes_are_synchronous(server, monkeypatch):
    monkeypatch.delenv(ASYNC_ENV, raising=False)
    tracker, reader = Tracker("synchronous", server), MlflowClient(server)
    with tracker.batched():
        run_id = _one_run(tracker, "sync")
        tracker.set_status(run_id, "FINISHED")
        assert reader.get_run(run_id).info.status == "FINISHED"  # written as it came
        assert len(reader.get_metric_history(run_id, "val_loss")) == 5
