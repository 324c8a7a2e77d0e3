"""Batched tracking (``Tracker.batched``, :mod:`suite.tracking.bulk`): runs written in one
transaction read back through ``MlflowClient`` exactly as runs written by MLflow's own calls."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from suite.engine.loop import RunResult
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.tracking.tracker import Tracker
from tests.test_scale import needs_pg, pg_database  # noqa: F401 - pg_database is a fixture

VOLATILE_TAGS = {"suite.seconds"}  # the rest must match key for key


def _specs(n=3):
    return [resolve_spec(get_registry(), components={"problem": "linreg", "averager": "ema"}, batch_size=32,
                         epochs=2, seed=seed, overrides={"optimizer.lr": 0.1 * (seed + 1)}) for seed in range(n)]


def _history(seed):
    h = []
    for step in range(0, 60, 5):
        m = {"train_loss": 1.0 / (step + 1 + seed), "val_loss": 2.0 / (step + 1), "lr": 0.1, "epoch": step / 30}
        if step == 20:
            m["avg_val_loss"] = float("nan")  # MLflow stores NaN as 0 with is_nan
        elif step == 25:
            m["avg_val_loss"] = float("inf")
        else:
            m["avg_val_loss"] = 1.5 / (step + 1)
        h.append((step, m))
    return h


def _result(spec, seed, status="completed"):
    return RunResult(spec=spec, status=status, history=_history(seed), seconds=0.5, engine="stacked", stack="s1",
                     final_params={"learned": {"w": [1.0, 2.0]}, "true": {"w": [1.0, 2.5]}},
                     reason="" if status == "completed" else "it diverged at step 55",
                     traceback=None if status == "completed" else "Traceback: boom")


def _write(tracker, specs, parent=None):
    registry = get_registry()
    ids = []
    for spec in specs:
        ids.append(tracker.start_run(spec, registry, parent_run_id=parent, tags={"suite.section": "sec"},
                                     varying=["optimizer.lr", "seed"]))
    for seed, (spec, run_id) in enumerate(zip(specs, ids, strict=True)):
        for step, m in _history(seed):
            tracker.log_metrics(run_id, step, m)
        tracker.finish(run_id, _result(spec, seed, "completed" if seed else "diverged"))
    return ids


def _read(client, run_id):
    run = client.get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS}
    histories = {}
    for key in run.data.metrics:
        hist = client.get_metric_history(run_id, key)
        histories[key] = sorted((m.step, "nan" if math.isnan(m.value) else m.value) for m in hist)
    latest = {k: ("nan" if math.isnan(v) else v) for k, v in run.data.metrics.items()}
    arts = {}
    for f in client.list_artifacts(run_id):
        path = client.download_artifacts(run_id, f.path)
        with open(path) as fh:
            arts[f.path] = fh.read()
    return {
        "name": run.info.run_name, "status": run.info.status, "stage": run.info.lifecycle_stage,
        "ended": run.info.end_time is not None and run.info.end_time >= run.info.start_time,
        "artifact_uri_tail": run.info.artifact_uri.split(run_id)[-1],
        "params": run.data.params, "tags": tags, "latest": latest, "histories": histories, "artifacts": arts,
    }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[needs_pg, pytest.mark.slow])])
def store_uri(request, workdir):
    """An empty MLflow SQL store: sqlite here, and PostgreSQL where the tests have one (CI)."""
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/mlflow.db"
    return request.getfixturevalue("pg_database")()


def test_a_batched_grid_reads_back_exactly_as_mlflows_own_calls_write_it(store_uri):
    uri = store_uri
    specs = _specs()
    plain = Tracker("plain", uri, direct=False)  # MLflow's own calls
    plain_ids = _write(plain, specs)
    batched = Tracker("batched", uri)
    with batched.batched():
        batched_ids = _write(batched, specs)
        assert MlflowClient(uri).search_runs([batched.experiment_id]) == []  # queued, not written yet
    client = MlflowClient(uri)
    for a, b in zip(plain_ids, batched_ids, strict=True):
        got, want = _read(client, b), _read(client, a)
        assert got == want
    # what the runs table shows: the same statuses, names and metric columns, found by the same filters
    found = client.search_runs([batched.experiment_id], "tags.`suite.status` = 'completed' and metrics.val_loss < 1")
    assert sorted(r.info.run_id for r in found) == sorted(batched_ids[1:])
    assert json.loads(_read(client, batched_ids[0])["artifacts"]["final_params.json"])["true"]["w"] == [1.0, 2.5]


def test_a_run_queued_across_commits_keeps_its_latest_values_and_final_tags(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    spec = _specs(1)[0]
    tracker = Tracker("across", uri)
    client = MlflowClient(uri)
    with tracker.batched():
        run_id = tracker.start_run(spec, get_registry())
        for step in (0, 10, 20):
            tracker.log_metrics(run_id, step, {"val_loss": 1.0 / (step + 1)})
        tracker.commit()  # the run exists, RUNNING, with its history so far (a live curve in the UI)
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING" and run.data.tags["suite.status"] == "running"
        assert run.data.metrics["val_loss"] == pytest.approx(1 / 21)
        tracker.log_metrics(run_id, 5, {"val_loss": 9.0})  # an older step does not become the latest value
        tracker.log_metrics(run_id, 30, {"train_loss": 0.25})
        tracker.mark(run_id, "interrupted", "stopped by the test")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["suite.status"] == "interrupted"
    assert run.data.tags["suite.reason"] == "stopped by the test"
    assert run.data.metrics == {"val_loss": pytest.approx(1 / 21), "train_loss": 0.25}
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == [0, 5, 10, 20]


def test_runs_finished_before_a_failure_inside_a_batch_stay_recorded(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    specs = _specs(2)
    tracker = Tracker("failing", uri)
    with pytest.raises(KeyboardInterrupt), tracker.batched():
        done = tracker.start_run(specs[0], get_registry())
        tracker.finish(done, _result(specs[0], 1))
        tracker.start_run(specs[1], get_registry())
        raise KeyboardInterrupt
    runs = {r.info.run_id: r for r in MlflowClient(uri).search_runs([tracker.experiment_id])}
    assert runs[done].info.status == "FINISHED" and runs[done].data.tags["suite.status"] == "completed"


def test_a_read_inside_a_batch_sees_what_was_queued(workdir):
    tracker = Tracker("reads", f"sqlite:///{workdir}/mlflow.db")
    spec = _specs(1)[0]
    with tracker.batched():
        run_id = tracker.start_run(spec, get_registry())
        tracker.finish(run_id, _result(spec, 1))
        assert tracker.done_run(spec.hash).info.run_id == run_id


def test_a_failed_write_keeps_its_runs_queued_and_the_good_ones_are_written_one_by_one(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    spec = _specs(1)[0]
    tracker = Tracker("failed-write", uri)
    store_errors = (SQLAlchemyError, MlflowException, sqlite3.Error)  # sqlite3's: the direct store's
    with pytest.raises(store_errors), tracker.batched():
        good = tracker.start_run(spec, get_registry())
        tracker.finish(good, _result(spec, 1))
        tracker.mark("0" * 32, "interrupted", "a run the store does not have")  # its write must fail
        with pytest.raises(store_errors):
            tracker.commit()  # one transaction: nothing written, everything still queued
        assert MlflowClient(uri).search_runs([tracker.experiment_id]) == []
    (run,) = MlflowClient(uri).search_runs([tracker.experiment_id])
    assert run.info.run_id == good and run.data.tags["suite.status"] == "completed"
