"""Store errors tell the truth, in one line: the direct path's limits are MLflow's (what MLflow refuses is
refused on the direct path too: rows of ``tests/test_bad_input.py``); a store at another schema revision is
named as older or newer than the installed MLflow, with what to do; a corrupt store is named as corrupt; a
store fault before any run started exits 2, and `suite report` never prints a traceback for a store.

Every store here is real: made by the installed MLflow, then altered the way the world alters
them (its ``alembic_version`` row, a page overwritten, a read-only mount, a full file system)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from suite.cli import main
from suite.tracking.schema import mlflow_revisions
from tests.conftest import BIN

GRID = ["run", "--problem", "linreg", "--lr", "0.01,0.02", "--epochs", "1", "--engine", "loop", "--device", "cpu",
        "--workers", "1", "--quiet", "--experiment", "kept"]
TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "8", "--trials", "1",
        "--budget", "epochs:1", "--device", "cpu"]


def invoke(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result, lines


# -- the direct path's limits are MLflow's (the refusals themselves are rows of tests/test_bad_input.py)
def test_the_direct_paths_limits_are_mlflows(tmp_path):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH

    from suite.stores import MAX_EXPERIMENT_NAME

    assert MAX_EXPERIMENT_NAME == MAX_EXPERIMENT_NAME_LENGTH
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(MlflowException, match="maximum length"):
        client.create_experiment("x" * (MAX_EXPERIMENT_NAME + 1))
    with pytest.raises(Exception, match="Invalid SQLite URL"):
        MlflowClient(tracking_uri="sqlite://mlflow.db").search_experiments()


def test_a_read_only_uri_leaves_an_existing_store_as_it_was_and_still_reports(workdir, tracking_uri):
    assert invoke(*GRID)[0].exit_code == 0
    db = workdir / "mlflow.db"
    before = db.read_bytes()
    line = refused_in_place(workdir, *GRID, "--tracking-uri", f"sqlite:///{db}?mode=ro", says="read-only")
    assert "mode=ro" in line
    assert db.read_bytes() == before
    result, lines = invoke("report", "kept", "--tracking-uri", f"sqlite:///{db}?mode=ro", "--no-log")
    assert result.exit_code == 0, result.output  # reading a read-only store is what read-only is for
    assert db.read_bytes() == before


def refused_in_place(root: Path, *args: str, says: str) -> str:
    result, lines = invoke(*args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1 and says in lines[0], result.stderr
    return lines[0]


# -- a store at another schema revision ---------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A real store with an experiment of two runs, made once for the module by the installed
    MLflow itself (not a copy of the suite's template)."""
    root = tmp_path_factory.mktemp("made")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUITE_NO_STORE_TEMPLATE", "1")
        result = CliRunner().invoke(main, [*GRID, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    return root / "mlflow.db"


def older_revision() -> str:
    """A real revision of the installed MLflow's migrations, older than its head."""
    head, known = mlflow_revisions()
    assert head is not None and len(known) > 50
    folder = next(Path(p) for p in __import__("mlflow").__path__) / "store" / "db_migrations" / "versions"
    script = next(folder.glob(f"{head}_*.py")).read_text()
    down = script.split("down_revision = ")[1].split()[0].strip("\"'")
    assert down in known and down != head
    return down


def at_revision(made: Path, root: Path, revision: str) -> Path:
    db = root / "mlflow.db"
    shutil.copy(made, db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    return db


@pytest.mark.parametrize("via", ["direct", "mlflow"])
@pytest.mark.parametrize("which", ["older", "newer"])
def test_a_store_at_another_schema_revision_is_told_older_or_newer_with_what_to_do(
        workdir, tracking_uri, made, monkeypatch, which, via):
    if via == "mlflow":
        monkeypatch.setenv("SUITE_TRACKING_VIA_MLFLOW", "1")
    revision = older_revision() if which == "older" else "0123456789ab"
    db = at_revision(made, workdir, revision)
    before = db.read_bytes()
    for argv in (GRID, ["report", "kept"]):
        result, lines = invoke(*argv)
        assert result.exit_code == 2, (argv, result.output, result.exception)
        assert len(lines) == 1, result.stderr  # one line, no traceback
        line = lines[0]
        assert f"schema revision {revision}" in line and "3.17" in line and "Traceback" not in result.output
        if which == "older":
            assert "older than the installed MLflow" in line
            assert line.endswith(f"mlflow db upgrade {tracking_uri}")
        else:
            assert "newer MLflow" in line and "upgrade MLflow" in line and "db upgrade" not in line
        assert "cannot reach" not in line and "…" not in line  # not cut
    assert db.read_bytes() == before  # nothing written
    assert not (workdir / "reports").exists()


# -- a corrupt store --------------------------------------------------------------------------------
def corrupt(made: Path, root: Path, table: str) -> Path:
    """A copy of ``made`` with the root page of ``table`` overwritten (a torn or bad-sector write)."""
    db = root / "mlflow.db"
    shutil.copy(made, db)
    with sqlite3.connect(db) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xff" * size)
    return db


@pytest.mark.parametrize("via", ["direct", "mlflow"])
def test_a_corrupt_store_is_named_as_corrupt_in_one_line(workdir, tracking_uri, made, monkeypatch, via):
    if via == "mlflow":
        monkeypatch.setenv("SUITE_TRACKING_VIA_MLFLOW", "1")
    db = corrupt(made, workdir, "tags")
    for argv in (GRID, ["report", "kept"]):
        result, lines = invoke(*argv)
        assert result.exit_code == 2, (argv, result.output, result.exception)
        assert len(lines) == 1, result.stderr
        assert f"the store file {db} is corrupt (PRAGMA quick_check:" in lines[0]
        assert ".recover" in lines[0]


def test_corruption_in_a_table_the_suite_never_reads_is_found_only_by_integrity_check(workdir, tracking_uri, made):
    """As docs/stores.md says: nothing fails, so nothing looks; `PRAGMA integrity_check` finds it."""
    db = corrupt(made, workdir, "webhooks")  # MLflow's webhooks: the suite never reads or writes them
    result, lines = invoke(*GRID)
    assert result.exit_code == 0, result.output  # its runs are read and skipped as done before
    assert "2 done before (skipped)" in result.stdout
    with sqlite3.connect(db) as conn:
        try:
            found = conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:  # a root page this broken: the check itself stops there
            found = str(exc)
    assert found != [("ok",)], found


# -- faults of the file system before any run starts: exit code 2 -------------------------------------
def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_unshare = pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm (user and mount namespaces)")


def in_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) as root of a user and mount namespace of its own: it may mount."""
    return subprocess.run(["unshare", "-rm", "sh", "-ec", script], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


SUITE_GRID = " ".join([str(BIN / "suite"), *GRID])
SUITE_TUNE = " ".join([str(BIN / "suite"), *TUNE, "--quiet"])


@pytest.mark.slow
@needs_unshare
def test_a_read_only_store_and_a_full_disk_exit_2_before_any_run_or_trial(workdir, made):
    ro, full = workdir / "ro", workdir / "full"
    ro.mkdir()
    full.mkdir()
    shutil.copy(made, ro / "mlflow.db")
    # a read-only mount (not file modes: root, which runs CI here, writes through those)
    read_only = in_namespace(
        f"mount --bind {ro} {ro}; mount -o remount,bind,ro {ro}; "
        f"exec {SUITE_GRID} --tracking-uri sqlite:///{ro}/mlflow.db", workdir)
    tune_read_only = in_namespace(
        f"mount --bind {ro} {ro}; mount -o remount,bind,ro {ro}; exec {SUITE_TUNE} --experiment kept "
        f"--tracking-uri sqlite:///{ro}/mlflow.db --storage {workdir}/optuna.journal", workdir)
    # a file system with no space left: a small tmpfs holding the store, filled up
    size = (made.stat().st_size // 4096 + 64) * 4096
    disk_full = in_namespace(
        f"mount -t tmpfs -o size={size} tmpfs {full}; cp {made} {full}/mlflow.db; "
        f"dd if=/dev/zero of={full}/filler bs=4096 2>/dev/null || true; "
        f"exec {SUITE_GRID} --tracking-uri sqlite:///{full}/mlflow.db", workdir)
    for proc, says in ((read_only, "is read-only"), (tune_read_only, "is read-only"), (disk_full, "is full")):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
        assert len(lines) == 1 and says in lines[0] and "no run was started" in lines[0], proc.stderr
        assert "--tracking-uri" in lines[0]  # what to do
