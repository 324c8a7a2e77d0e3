"""The direct sqlite store (:mod:`suite.tracking.direct`): a grid on a local store writes the
rows MLflow's own calls write, row for row, without importing MLflow; MLflow reads them back; and
every case it does not serve goes through MLflow."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from suite.engine.loop import RunResult
from suite.registry import get_registry
from suite.stores import default_tracking_uri
from suite.tracking import direct, records
from suite.tracking.tracker import Tracker
from suite.vocab import EXPERIMENT_KIND_TRAINING, MLFLOW_EXPERIMENT_KIND
from tests.test_tracking_bulk import _history, _read, _result, _specs

ROOT = Path(__file__).resolve().parents[1]


def test_the_values_it_writes_are_mlflows():
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.utils import mlflow_tags, validation

    assert records.MAX_PARAM_VAL_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert records.MAX_TAG_VAL_LENGTH == validation.MAX_TAG_VAL_LENGTH
    assert records.MAX_EXPERIMENT_TAG_VAL_LENGTH == validation.MAX_EXPERIMENT_TAG_VAL_LENGTH
    assert [records.RUNNING, records.FINISHED, records.FAILED, records.KILLED] == [
        RunStatus.to_string(s) for s in (RunStatus.RUNNING, RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)]
    assert (records.ACTIVE, records.DELETED) == (LifecycleStage.ACTIVE, LifecycleStage.DELETED)
    assert records.SOURCE_UNKNOWN == SourceType.to_string(SourceType.UNKNOWN)
    assert (records.RUN_NAME_TAG, records.PARENT_RUN_TAG, records.USER_TAG) == (
        mlflow_tags.MLFLOW_RUN_NAME, mlflow_tags.MLFLOW_PARENT_RUN_ID, mlflow_tags.MLFLOW_USER)


def test_it_serves_the_schema_revision_of_the_installed_mlflow(tmp_path):
    """A store made by this MLflow is at a revision the direct store was checked against (else
    every store would silently go through MLflow after an upgrade: re-check, then add it)."""
    MlflowClient(f"sqlite:///{tmp_path}/made.db").search_experiments()
    with sqlite3.connect(tmp_path / "made.db") as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision in direct.VERIFIED_REVISIONS


def _dump(db: Path, root: Path, ids: list[str]) -> dict[str, list]:
    """Every row of MLflow's run tables, with what differs between two stores by nature (run
    ids, clocks, the working directory, pids) replaced by stable names."""
    name = {run_id: f"run{i}" for i, run_id in enumerate(ids)}

    def clean(value):
        if isinstance(value, str):
            for run_id, n in name.items():
                value = value.replace(run_id, n)
            return value.replace(str(root), "ROOT")
        return value

    out = {}
    with sqlite3.connect(db) as conn:
        out["experiments"] = sorted(tuple(map(clean, r)) for r in conn.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage, workspace, "
            "creation_time = last_update_time FROM experiments"))
        out["experiment_tags"] = sorted(conn.execute("SELECT key, value, experiment_id FROM experiment_tags"))
        cols = ("run_uuid, name, source_type, source_name, entry_point_name, user_id, status, end_time IS NULL, "
                "end_time >= start_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time")
        out["runs"] = sorted(tuple(map(clean, r)) for r in conn.execute(f"SELECT {cols} FROM runs"))
        out["tags"] = sorted(tuple(map(clean, r)) for r in conn.execute(
            "SELECT key, value, run_uuid FROM tags WHERE key NOT LIKE 'suite.seconds%'"))
        out["params"] = sorted(tuple(map(clean, r)) for r in conn.execute("SELECT key, value, run_uuid FROM params"))
        out["metrics"] = sorted(tuple(map(clean, r)) for r in conn.execute(
            "SELECT key, value, run_uuid, step, is_nan FROM metrics"))
        out["latest_metrics"] = sorted(tuple(map(clean, r)) for r in conn.execute(
            "SELECT key, value, run_uuid, step, is_nan FROM latest_metrics"))
    return out


def _files(root: Path, ids: list[str]) -> dict[str, bytes]:
    name = {run_id: f"run{i}" for i, run_id in enumerate(ids)}
    out = {}
    for path in sorted((root / "mlruns").rglob("*")):
        if path.is_file():
            rel = str(path.relative_to(root))
            for run_id, n in name.items():
                rel = rel.replace(run_id, n)
            out[rel] = path.read_bytes()
    return out


def _session(tracker: Tracker) -> list[str]:
    """What a grid does to a store: a parent run, its view, child runs with histories (one
    diverged, one interrupted), artifacts, tags, a summary and the time breakdown."""
    registry = get_registry()
    parent = tracker.start_parent("grid of 3 runs", {"suite.n_specs": 3}, {"optimizer.lr": "[0.1, 0.2, 0.3]"})
    tracker.set_experiment_tag("mlflow.sharedViewState.suite-x", json.dumps({"groupBy": "tag.average.suite.config"}))
    specs = _specs(3)
    ids = [tracker.start_run(spec, registry, parent_run_id=parent, tags={"suite.section": "sec"},
                             varying=["optimizer.lr", "seed"]) for spec in specs]
    for seed, (spec, run_id) in enumerate(zip(specs, ids, strict=True)):
        for step, m in _history(seed):
            tracker.log_metrics(run_id, step, m)
        if seed == 2:
            tracker.mark(run_id, "interrupted", "stopped by the test")
        else:
            tracker.finish(run_id, _result(spec, seed, "completed" if seed else "diverged"))
    tracker.log_text(parent, "| a | b |\n", "summary.md")
    tracker.set_tags(parent, {"mlflow.note.content": "the note", "suite.n_failed": "0"})
    tracker.log_phases(parent, {"startup": 1.0, "training": 2.0})
    tracker.mark(parent, "completed")
    tracker.set_status(parent, "RUNNING")  # reopened, as a resumed study's parent: its end time stays
    tracker.log_batch(parent, [records.Metric("n_complete", 3, 1, 3), records.Metric("best_value", 0.5, 1, 3)],
                      [records.RunTag("suite.trials", "3")])
    assert tracker.run_status(parent) == "RUNNING"
    tracker.set_status(parent, "FINISHED")
    return [parent, *ids]


@pytest.mark.parametrize("batched", [False, True, "writer"], ids=["call-by-call", "batched", "writer-process"])
def test_a_grid_written_directly_is_row_for_row_what_mlflows_calls_write(tmp_path, monkeypatch, batched):
    """``writer-process``: the direct tracker's writes inside batched() are made by a writer
    process (suite.tracking.writer), the same rows."""
    stores = {}
    for via in ("mlflow", "direct"):
        root = tmp_path / via
        root.mkdir()
        monkeypatch.chdir(root)  # MLflow puts artifacts under ./mlruns of the working directory
        monkeypatch.setenv("SUITE_TRACKING_WRITER", "always" if batched == "writer" else "never")
        tracker = Tracker("grid", f"sqlite:///{root}/mlflow.db", direct=via == "direct")
        assert tracker.direct == (via == "direct")
        if batched:
            with tracker.batched():
                ids = _session(tracker)
                writer = tracker.writer_pid
            assert (writer is not None and writer != os.getpid()) == (batched == "writer" and via == "direct")
        else:
            ids = _session(tracker)
        stores[via] = (_dump(root / "mlflow.db", root, ids), _files(root, ids), root, ids)
    (want, want_files, *_), (got, got_files, root, ids) = stores["mlflow"], stores["direct"]
    for table in want:
        assert got[table] == want[table], table
    assert got_files == want_files
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")  # and MLflow reads it as its own
    assert [run["status"] for run in map(lambda i: _read(client, i), ids)] == ["FINISHED", "FAILED", "FINISHED",
                                                                                "KILLED"]
    assert client.get_experiment_by_name("grid").tags[MLFLOW_EXPERIMENT_KIND] == EXPERIMENT_KIND_TRAINING


def test_reads_find_the_runs_mlflow_finds(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    tracker = Tracker("reads", uri)
    assert tracker.direct
    ids = _session(tracker)
    spec = _specs(3)[1]
    done = tracker.done_runs()
    assert {r.info.run_id for r in done.values()} == {ids[1], ids[2]}  # the interrupted one is not done
    assert tracker.done_run(spec.hash).info.run_id == ids[2]
    client = MlflowClient(uri)
    want = client.get_run(ids[2])
    got = done[spec.hash]
    assert got.data.tags == want.data.tags and got.data.params == want.data.params
    assert got.data.metrics == want.data.metrics
    assert (got.info.status, got.info.start_time, got.info.end_time, got.info.run_name) == (
        want.info.status, want.info.start_time, want.info.end_time, want.info.run_name)
    history = [(m.step, m.value) for m in tracker.metric_history(ids[2], "val_loss")]
    assert history == [(m.step, m.value) for m in client.get_metric_history(ids[2], "val_loss")]


def test_a_run_left_running_by_a_dead_process_is_reaped_directly(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    tracker = Tracker("reap", uri)
    run_id = tracker.start_run(_specs(1)[0], get_registry())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with sqlite3.connect(workdir / "mlflow.db") as db:  # as if that (now dead) process had logged it
        db.execute("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'suite.owner'",
                   (f"{os.uname().nodename}:{dead.stdout.strip()}", run_id))
    assert Tracker("reap", uri).reap_orphans() == [run_id]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["suite.status"] == "interrupted"


PROBE = """
import json, sys
from suite.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps({"mlflow": "mlflow" in sys.modules, "sqlalchemy": "sqlalchemy" in sys.modules}),
          file=sys.stderr)
"""
GRID = ["run", "--problem", "linreg", "--lr", "0.01,0.1", "--seeds", "2", "--epochs", "1", "--quiet"]


def _probe(cwd: Path, *args: str, env: dict | None = None) -> dict:
    res = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_grid_on_a_local_store_never_imports_mlflow_and_mlflow_sees_it_all(tmp_path):
    env = {"MLFLOW_TRACKING_URI": ""}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    _probe(tmp_path, *GRID, "--experiment", "warm", env=env)  # the store template exists (made once per MLflow)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert _probe(fresh, *GRID, env=env) == {"mlflow": False, "sqlalchemy": False}
    assert _probe(fresh, *GRID, env=env) == {"mlflow": False, "sqlalchemy": False}  # all skipped: still none
    client = MlflowClient(f"sqlite:///{fresh}/mlflow.db")  # MLflow's default store, where MLflow looks
    (exp,) = [e for e in client.search_experiments() if e.name == "linreg"]
    runs = client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'run'")
    assert len(runs) == 4 and {r.data.tags["suite.status"] for r in runs} == {"completed"}
    assert all(r.data.metrics["val_loss"] > 0 and r.info.artifact_uri.startswith(str(fresh / "mlruns")) for r in runs)
    parents = client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'grid'", order_by=["start_time ASC"])
    assert [p.data.tags["suite.n_skipped"] for p in parents] == ["0", "4"]  # the rerun skipped all 4
    parent = parents[0]
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "summary.csv", "runs.json", "curves"} <= arts
    assert parent.info.status == "FINISHED" and "suite.seconds.training" in parent.data.tags
    assert client.get_experiment("0").name == "Default"


def test_default_tracking_uri_is_mlflows(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    (tmp_path / "mlruns" / "1").mkdir(parents=True)
    (tmp_path / "mlruns" / "1" / "meta.yaml").write_text("name: old\n")  # a file store's experiment
    assert default_tracking_uri() is None  # MLflow keeps using the file store: it names it


def test_every_case_it_does_not_serve_goes_through_mlflow(workdir, monkeypatch):
    uri = f"sqlite:///{workdir}/mlflow.db"
    assert Tracker("a", uri).direct
    for env in ("SUITE_TRACKING_VIA_MLFLOW", "MLFLOW_ENABLE_WORKSPACES", "_MLFLOW_SERVER_ARTIFACT_ROOT"):
        with monkeypatch.context() as m:
            m.setenv(env, "true")
            assert not Tracker("a", uri).direct, env
    assert Tracker("a", uri).direct
    db = sqlite3.connect(f"{workdir}/mlflow.db")  # a table whose columns it was not checked on (MLflow's ORM
    db.executescript("ALTER TABLE experiment_tags RENAME TO old_tags;"  # does not mind the declared type)
                     "CREATE TABLE experiment_tags (key VARCHAR(250) NOT NULL, value VARCHAR(5000), "
                     "experiment_id INTEGER NOT NULL, PRIMARY KEY (key, experiment_id), "
                     "FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id));"
                     "INSERT INTO experiment_tags SELECT * FROM old_tags; DROP TABLE old_tags;")
    db.close()
    tracker = Tracker("b", uri)
    assert not tracker.direct
    run_id = tracker.start_run(_specs(1)[0], get_registry())
    tracker.finish(run_id, RunResult(spec=_specs(1)[0], history=_history(0), seconds=1.0))
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("via", ["direct", "sqlalchemy"])
def test_a_value_logged_twice_is_kept_once_and_a_new_run_name_renames_the_run(workdir, via):
    """As MLflow: a metric value repeated across two writes (same key, timestamp, step and value)
    is skipped, not an error that would lose the write; setting ``mlflow.runName`` renames the run."""
    uri = f"sqlite:///{workdir}/mlflow.db"
    tracker = Tracker("twice", uri, direct=via == "direct")
    assert tracker.direct == (via == "direct")
    with tracker.batched():
        run_id = tracker.start_run(_specs(1)[0], get_registry())
        tracker.log_batch(run_id, [records.Metric("m", 1.0, 123, 5)])
        tracker.commit()
        tracker.log_batch(run_id, [records.Metric("m", 1.0, 123, 5), records.Metric("m", 2.0, 124, 6)])
        tracker.set_tags(run_id, {"mlflow.runName": "renamed"})
        tracker.mark(run_id, "completed")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "renamed"
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "m")) == [(5, 1.0), (6, 2.0)]
