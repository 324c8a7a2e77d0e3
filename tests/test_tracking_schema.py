"""The fast paths key on the columns of the tables they write, not on a revision number: stores
made by the installed MLflow, then changed the way a newer migration changes them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from suite.exec.phases import CLOCK
from suite.tracking import schema
from suite.tracking.bulk import SqlBulk
from suite.tracking.direct import DirectStore
from suite.tracking.tracker import Tracker
from tests.conftest import suite_cmd

NEWER = "ffffffffffff"  # a revision the installed MLflow does not know


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """An empty store made by the installed MLflow itself."""
    path = tmp_path_factory.mktemp("made") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(made, tmp_path) -> Path:
    path = tmp_path / "mlflow.db"
    path.write_bytes(made.read_bytes())
    return path


def alter(path: Path, *sql: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA foreign_keys = OFF")
        for statement in sql:
            db.execute(statement)
        db.commit()
    finally:
        db.close()


@pytest.fixture
def newer_mlflow(monkeypatch):
    """As if the installed MLflow's head were :data:`NEWER` (a newer MLflow, whose migration made
    the store's revision)."""
    head, known = schema.mlflow_revisions()
    monkeypatch.setattr(schema, "mlflow_revisions", lambda: (NEWER, known | {NEWER}))


def shape(columns):
    return {t: {n: (c.type, c.not_null, c.pk) for n, c in cols.items()} for t, cols in columns.items()}


def test_the_verified_columns_are_those_the_installed_mlflow_makes(made):
    db = sqlite3.connect(made)
    try:
        assert shape(schema.sqlite_columns(db)) == shape(schema.VERIFIED)
        assert schema.mismatch(schema.sqlite_columns(db)) is None
    finally:
        db.close()


def write_one_run(path: Path) -> Tracker:
    tracker = Tracker("schema", f"sqlite:///{path}")
    with tracker.batched():
        run = tracker.create_run({"mlflow.runName": "r"}, {"optimizer.lr": "0.1"})
        tracker.log_metrics(run, 0, {"val_loss": 1.0})
        tracker.flush(run)
    return tracker


def test_an_unknown_revision_with_the_same_tables_takes_the_fast_path(store, newer_mlflow):
    alter(store, f"UPDATE alembic_version SET version_num = '{NEWER}'")
    assert DirectStore.open(f"sqlite:///{store}") is not None
    tracker = write_one_run(store)
    assert tracker.direct
    db = sqlite3.connect(store)
    assert db.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM metrics").fetchone() == (1,)


def test_a_column_added_with_a_default_takes_the_fast_path_and_gets_its_default(store, newer_mlflow):
    alter(store, f"UPDATE alembic_version SET version_num = '{NEWER}'",
          "ALTER TABLE runs ADD COLUMN origin VARCHAR(20) NOT NULL DEFAULT 'local'",
          "ALTER TABLE metrics ADD COLUMN dataset_uuid VARCHAR(36)")
    assert DirectStore.open(f"sqlite:///{store}") is not None
    assert write_one_run(store).direct
    db = sqlite3.connect(store)
    assert db.execute("SELECT origin FROM runs").fetchall() == [("local",)]


@pytest.mark.parametrize("change", [
    pytest.param(["ALTER TABLE runs DROP COLUMN source_version"], id="dropped"),
    pytest.param(["ALTER TABLE experiment_tags RENAME TO old_tags",
                  "CREATE TABLE experiment_tags (key VARCHAR(250) NOT NULL, value VARCHAR(5000), "
                  "experiment_id INTEGER NOT NULL, PRIMARY KEY (key, experiment_id), "
                  "FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id))",
                  "INSERT INTO experiment_tags SELECT * FROM old_tags", "DROP TABLE old_tags"], id="changed"),
])
def test_a_dropped_or_changed_column_is_left_to_mlflow_and_said_once(store, newer_mlflow, change):
    alter(store, f"UPDATE alembic_version SET version_num = '{NEWER}'", *change)
    CLOCK.notes.clear()
    try:
        assert DirectStore.open(f"sqlite:///{store}") is None
        assert DirectStore.open(f"sqlite:///{store}") is None
        assert len(CLOCK.notes) == 1 and "not the fast path" in CLOCK.notes[0]
        assert ("source_version was dropped" if "DROP" in change[0] else "experiment_tags.value changed") \
            in CLOCK.line()
    finally:
        CLOCK.notes.clear()


def test_mismatch_names_a_column_added_not_null_without_a_default():
    found = {t: dict(cols) for t, cols in schema.VERIFIED.items()}
    found["params"]["scope"] = schema.Column("VARCHAR(10)", True, False, 0)
    assert schema.mismatch(found) == "its column params.scope was added NOT NULL without a default"
    found["params"]["scope"] = schema.Column("VARCHAR(10)", True, True, 0)
    assert schema.mismatch(found) is None
    del found["latest_metrics"]
    assert schema.mismatch(found) == "its table latest_metrics is missing"


def test_bulk_writes_keep_to_the_same_check(store):
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.create_experiment("bulk")
    assert SqlBulk.for_client(client, experiment) is not None
    changed = store.with_name("changed.db")
    changed.write_bytes(store.read_bytes())
    alter(changed, "ALTER TABLE tags RENAME COLUMN value TO val")
    client = MlflowClient(tracking_uri=f"sqlite:///{changed}")
    CLOCK.notes.clear()
    try:
        assert SqlBulk.for_client(client, experiment) is None
        assert "tags.value was dropped" in CLOCK.line()
    finally:
        CLOCK.notes.clear()


@pytest.mark.slow
def test_a_grid_on_a_store_mlflow_serves_itself_says_so_on_the_time_line(store, tmp_path):
    """Declared types MLflow's ORM does not care about: MLflow writes the runs, the line says why."""
    alter(store, "ALTER TABLE experiment_tags RENAME TO old_tags",
          "CREATE TABLE experiment_tags (key VARCHAR(250) NOT NULL, value VARCHAR(5000), "
          "experiment_id INTEGER NOT NULL, PRIMARY KEY (key, experiment_id), "
          "FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id))",
          "INSERT INTO experiment_tags SELECT * FROM old_tags", "DROP TABLE old_tags")
    out = suite_cmd("run", "--problem", "linreg", "--lr", "0.01,0.02", "--epochs", "1", "--device", "cpu",
                    "--tracking-uri", f"sqlite:///{store}", "--experiment", "e", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    time_lines = [line for line in out.stdout.splitlines() if line.startswith("time:")]
    assert len(time_lines) == 1 and "experiment_tags.value changed" in time_lines[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id], "tags.`suite.kind` = 'run'")
    assert len(runs) == 2 and all(r.data.metrics.get("val_loss") is not None for r in runs)
