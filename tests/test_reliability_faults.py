"""Faults lose nothing: a tracking store that fails in the middle of a grid (read-only, disk
full, database gone) ends the command with one clear line, the runs finished before stay
finished, and the same command again runs the rest; the same for an Optuna journal whose last
line was cut (a process killed while it wrote)."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from suite.cli import main
from suite.tracking.tracker import Tracker
from tests.conftest import runs_of

GRID = ["run", "--problem", "linreg", "--lr", "0.01,0.02,0.05,0.1", "--seeds", "3", "--epochs", "1",
        "--engine", "loop", "--device", "cpu", "--workers", "1", "--quiet", "--experiment", "faulty"]
FINISHED_BEFORE_FAULT = 4


def read_only(db: Path, direct: bool) -> Any:
    """A store whose connections open it read-only: every write fails as on a read-only file."""
    if direct:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    return MlflowClient(tracking_uri=f"sqlite:///file:{db}?mode=ro&uri=true")


def disk_full(db: Path, direct: bool) -> Any:
    """A store that may not grow by one more page: SQLite's 'database or disk is full'."""
    if direct:
        conn = sqlite3.connect(db, isolation_level=None, timeout=29)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn
    from sqlalchemy import event

    client = MlflowClient(tracking_uri=f"sqlite:///{db}?timeout=29")
    engine = client._tracking_client.store.engine
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    @event.listens_for(engine, "connect")
    def _full(dbapi_conn, _record):
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    engine.dispose()
    return client


def gone(db: Path, direct: bool) -> Any:
    """A store whose database file disappears (moved away, as an unmounted share): its next
    connection finds an empty file without MLflow's tables."""
    if direct:
        db.rename(db.with_name("away.db"))
        return sqlite3.connect(db, isolation_level=None, timeout=28)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}?timeout=28")
    db.rename(db.with_name("away.db"))
    client._tracking_client.store.engine.dispose()
    return client


def break_store(tracker: Tracker, db: Path, fault: Any) -> None:
    """Break ``tracker``'s store with ``fault``, whichever way it writes: its sqlite3 connection
    (:mod:`suite.tracking.direct`) or its MLflow client."""
    if tracker.direct:
        tracker._direct.db = fault(db, True)
    else:
        tracker._client = fault(db, False)


def come_back(db: Path, tracking_uri: str) -> None:
    """The store is back (as a fresh process would find it: no connection of the faulty run kept)."""
    if db.with_name("away.db").exists():
        db.unlink(missing_ok=True)
        db.with_name("away.db").rename(db)
    MlflowClient(tracking_uri=tracking_uri)._tracking_client.store.engine.dispose()


CAUSE = {read_only: "is read-only", disk_full: "is full", gone: "was deleted or moved while the run was writing"}


@pytest.mark.parametrize("via", ["direct", "mlflow"])
@pytest.mark.parametrize("fault", [read_only, disk_full, gone], ids=["read-only", "disk-full", "database-gone"])
def test_a_store_failing_mid_grid_loses_nothing(workdir, tracking_uri, monkeypatch, fault, via):
    if via == "mlflow":
        monkeypatch.setenv("SUITE_TRACKING_VIA_MLFLOW", "1")  # every write through MLflow's client
    # the fault breaks this process's connection, so this process must be the one that writes: a
    # writer process (suite.tracking.writer) would start, or not, on how long a write took
    monkeypatch.setenv("SUITE_TRACKING_WRITER", "never")
    db = workdir / "mlflow.db"
    real_finish = Tracker.finish
    finished, broken = [], []

    def finish_then_fail(self, run_id, result, **kw):
        if len(finished) == FINISHED_BEFORE_FAULT and not broken:
            break_store(self, db, fault)  # the store breaks once, for the rest of this invocation
            assert self.direct == (via == "direct")
            broken.append(fault)
        real_finish(self, run_id, result, **kw)
        finished.append(run_id)

    monkeypatch.setattr(Tracker, "finish", finish_then_fail)
    result = CliRunner().invoke(main, GRID)
    monkeypatch.setattr(Tracker, "finish", real_finish)
    come_back(db, tracking_uri)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("Error: the tracking store"), result.stderr
    assert "run the same command again" in lines[0]
    assert CAUSE[fault] in lines[0], lines[0]  # the cause, named as such

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = runs_of(client, "faulty", "tags.`suite.kind` = 'run'")
    done = [r for r in runs if r.data.tags.get("suite.status") == "completed"]
    n = len(done)  # a full disk fails the first write that needs a new page: at the fault or a little later
    assert FINISHED_BEFORE_FAULT <= n < 12  # what finished before the fault stayed finished
    if fault is not gone:  # the line says how many are recorded, and it is true
        assert re.search(rf"; {n} of the \d+ runs this command started are recorded as finished:", lines[0]), lines[0]

    rerun = CliRunner().invoke(main, GRID)
    assert rerun.exit_code == 0, rerun.output
    assert f"12 runs: {12 - n} run now ({12 - n} completed), {n} done before (skipped)" in rerun.stdout
    runs = runs_of(client, "faulty", "tags.`suite.kind` = 'run'")
    hashes = [r.data.tags["suite.spec_hash"] for r in runs if r.data.tags.get("suite.status") == "completed"]
    assert len(hashes) == 12 and len(set(hashes)) == 12
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the run cut by the fault was reaped


TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "16", "--trials", "4",
        "--budget", "epochs:1", "--pruner", "none", "--device", "cpu", "--workers", "1", "--quiet", "--study-seed", "1"]


@pytest.mark.slow
def test_a_journal_whose_last_line_is_cut_is_repaired_and_the_tuning_completes(workdir, tracking_uri):
    first = CliRunner().invoke(main, [*TUNE[:8], "2", *TUNE[9:]])  # 2 of the 4 trials
    assert first.exit_code == 0, first.output
    journal = workdir / ".suite" / "optuna.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[:-25])  # the last write was cut: a process killed while appending
    os.symlink(str(journal), str(journal) + ".lock")  # ... holding the journal's lock
    rerun = CliRunner().invoke(main, TUNE)
    assert rerun.exit_code == 0, rerun.output
    assert "Traceback" not in rerun.output
    import optuna

    from suite.stores import open_storage

    (summary,) = optuna.get_all_study_summaries(open_storage(str(journal)))
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(str(journal)))
    from suite.distributed.worker import holds_key

    assert not [t for t in study.trials if not t.state.is_finished()]
    held = sorted(t.user_attrs["suite.key"] for t in study.trials if holds_key(t))
    assert held == ["slot-0", "slot-1", "slot-2", "slot-3"]  # exactly --trials results, each slot once
    assert all("suite.status" in t.user_attrs for t in study.trials if holds_key(t))
    assert journal.read_bytes().endswith(b"\n")


STALE_LOCK = r"""
import time
import optuna
from suite import stores
stores.JOURNAL_LOCK_GRACE = 3  # seconds (30 in use): the test waits for it
storage = stores.open_storage(".suite/optuna.journal")  # relative, like the default storage
study = optuna.create_study(storage=storage, study_name="s")
# a suite process killed while it held the journal's lock leaves it behind: take the lock as the
# suite's own storage takes it (another open of the same journal), and never release it
stores.open_storage(".suite/optuna.journal")._backend._lock.acquire()
t0 = time.monotonic()
study.enqueue_trial({})  # a write: waits out the grace period, then breaks the stale lock
print(round(time.monotonic() - t0, 1), len(study.trials))
"""


def test_a_journal_lock_left_by_a_killed_process_is_broken_after_its_grace_period(tmp_path):
    """Optuna breaks a lock older than its grace period by looking at the lock symlink's target:
    with the default relative journal path that target did not resolve and every waiter spun
    forever (a `suite tune` whose worker was killed mid-write hung)."""
    import subprocess
    import sys

    # the timeout is the hang guard (a waiter that spins forever fails here), not a speed claim
    out = subprocess.run([sys.executable, "-c", STALE_LOCK], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300).stdout.split()
    waited, trials = float(out[0]), int(out[1])
    assert waited >= 3 and trials == 1  # the lock was honoured for its grace period, then broken


def test_a_store_file_moved_away_mid_grid_is_named_as_such_and_no_empty_store_takes_its_place(
        workdir, tracking_uri, monkeypatch):
    """The move reaches every connection: the writer process's (forced on here) and this one's."""
    monkeypatch.setenv("SUITE_TRACKING_WRITER", "always")
    db, away = workdir / "mlflow.db", workdir / "away.db"
    real_finish = Tracker.finish
    finished = []

    def finish_then_move(self, run_id, result, **kw):
        if len(finished) == FINISHED_BEFORE_FAULT and not away.exists():
            db.rename(away)  # as `mv`, or an unmounted share: the open connections keep the old file
        real_finish(self, run_id, result, **kw)
        finished.append(run_id)

    monkeypatch.setattr(Tracker, "finish", finish_then_move)
    result = CliRunner().invoke(main, GRID)
    monkeypatch.setattr(Tracker, "finish", real_finish)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, (result.output, result.exception)
    assert len(lines) == 1 and f"the store file {db} was deleted or moved while the run was writing" in lines[0]
    assert "put the file back" in lines[0] and "run the same command again" in lines[0]
    assert "readonly" not in lines[0] and "stay recorded" not in lines[0]
    assert not db.exists()  # no empty store was made where the old one was

    away.rename(db)
    runs = runs_of(MlflowClient(tracking_uri=tracking_uri), "faulty", "tags.`suite.kind` = 'run'")
    n = len([r for r in runs if r.data.tags.get("suite.status") == "completed"])
    assert n <= FINISHED_BEFORE_FAULT  # what the writer had committed before the move, no more
    rerun = CliRunner().invoke(main, GRID)
    assert rerun.exit_code == 0, rerun.output
    assert f"12 runs: {12 - n} run now ({12 - n} completed), {n} done before (skipped)" in rerun.stdout


def test_a_store_failing_mid_tuning_ends_it_with_one_line_and_exit_1(workdir, tracking_uri, monkeypatch):
    monkeypatch.setenv("SUITE_TRACKING_WRITER", "never")  # this process's connection is the one broken
    db = workdir / "mlflow.db"
    real_finish = Tracker.finish
    finished = []

    def finish_then_fail(self, run_id, result, **kw):
        if len(finished) == 2 and self.direct:
            break_store(self, db, read_only)
        real_finish(self, run_id, result, **kw)
        finished.append(run_id)

    monkeypatch.setattr(Tracker, "finish", finish_then_fail)
    result = CliRunner().invoke(main, [*TUNE, "--population", "1"])
    monkeypatch.setattr(Tracker, "finish", real_finish)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("Error: the tracking store"), result.stderr
    assert "failed while the tuning ran" in lines[0] and "is read-only" in lines[0]
    assert "run the same command again" in lines[0]
    rerun = CliRunner().invoke(main, TUNE)
    assert rerun.exit_code == 0, rerun.output


def test_an_optuna_storage_failing_mid_tuning_is_named_as_the_optuna_storage_not_the_tracking_store(
        workdir, tracking_uri):
    """A real Optuna database that refuses every trial's value (a trigger that calls a function
    SQLite does not have: an OperationalError, which Optuna raises as its StorageInternalError):
    the one line names the Optuna storage and SQLite's reason, not the tracking store, and the
    same command again, once the storage takes writes, completes the study."""
    import optuna

    path = workdir / "optuna.db"
    url = f"sqlite:///{path}"
    optuna.storages.RDBStorage(url)  # Optuna's own tables
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER broken BEFORE INSERT ON trial_values BEGIN SELECT storage_broken(); END")
    tune = [*TUNE, "--population", "1", "--storage", url, "--heartbeat", "1", "--grace", "2"]  # lost after 2 s
    result = CliRunner().invoke(main, tune)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith(f"the Optuna storage {url} failed"), result.stderr
    assert "no such function: storage_broken" in lines[0] and "check the storage and --storage" in lines[0]
    assert "tracking store" not in lines[0] and "rerun the same command" in lines[0]
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER broken")
    rerun = CliRunner().invoke(main, tune)
    assert rerun.exit_code == 0, rerun.output
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4


def test_an_optuna_storage_failing_in_the_commands_own_process_is_told_as_the_optuna_storage(workdir, tracking_uri):
    """Where the command itself reads or writes the studies (building them, or drawing the report)
    under the tracking store's guard, a failing Optuna database is still named as such: exit code
    2 before the first trial, 1 after, never "the tracking store"."""
    import optuna

    from suite.errors import StoreError, StoreFailed
    from suite.tracking import diagnose

    path = workdir / "optuna.db"
    url = f"sqlite:///{path}"
    study = optuna.create_study(storage=url)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER broken BEFORE INSERT ON trial_values BEGIN SELECT storage_broken(); END")
    for during, kind in ((None, StoreError), ("the tuning", StoreFailed)):
        with pytest.raises(kind) as told, diagnose.told(tracking_uri, during, storage=url):
            study.tell(study.ask(), 1.0)
        line = str(told.value)
        assert line.startswith(f"the Optuna storage {url} failed") and "tracking store" not in line, line
        assert "no such function: storage_broken" in line and "check the storage and --storage" in line, line
    with pytest.raises(TypeError), diagnose.told(tracking_uri, "the tuning", storage=url):
        study.set_user_attr("k", object())  # a bug raised inside Optuna's storage code: not the storage failing
    with pytest.raises(KeyError), diagnose.told(tracking_uri, storage=url):
        optuna.load_study(study_name="no such study", storage=url)
    guard = diagnose.told(tracking_uri, "the tuning", storage=url)
    with pytest.raises(StoreFailed, match="^the tracking store"), guard:  # the tracking store's own failure
        sqlite3.connect(f"file:{workdir / 'mlflow.db'}?mode=ro", uri=True).execute("CREATE TABLE t (x)")


def test_a_suite_worker_whose_optuna_storage_fails_names_it(workdir, tracking_uri):
    """`suite worker` on a real Optuna database that refuses every trial's value: its trouble
    line names the Optuna storage and SQLite's reason, and it exits 1."""
    import optuna

    path = workdir / "optuna.db"
    url = f"sqlite:///{path}"
    submitted = CliRunner().invoke(main, [*TUNE, "--storage", url, "--submit-only"])
    assert submitted.exit_code == 0, submitted.output
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER broken BEFORE INSERT ON trial_values BEGIN SELECT storage_broken(); END")
    result = CliRunner().invoke(main, ["worker", "--storage", url, "--device", "cpu", "--workers", "1", "--quiet"])
    assert result.exit_code == 1, (result.output, result.exception)
    line = next(line for line in result.output.splitlines() if line.startswith("worker on cpu: "))
    assert line.startswith(f"worker on cpu: the Optuna storage {url} failed"), result.output
    assert "no such function: storage_broken" in line and "tracking store" not in line, line
    assert optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url).trials
