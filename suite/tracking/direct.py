"""MLflow's sqlite store, read and written through the standard library's ``sqlite3``.

Why: importing MLflow and its SQL store costs 2.4 s on a quiet 2-core machine (``python -X
importtime``: ``mlflow`` 1.4 s, ``mlflow.store.tracking.sqlalchemy_store`` 0.9 s, more under
load), which was a third of a 16-configuration grid's wall time and more than its training.
What a grid needs from the store is small: its experiment, the runs done or left running, and
its runs' rows. :class:`DirectStore` does exactly that on a local sqlite store, with the rows
MLflow writes (:mod:`suite.tracking.records`, shared with :mod:`suite.tracking.bulk`), the
connection settings MLflow's engine uses (foreign keys on, a 20 s busy timeout), and artifacts
written where MLflow's local artifact repository puts them.

It is used only where it is known to be right, and MLflow serves every other case:

- the store is ``sqlite:///FILE`` and FILE exists (a new store is a copy of MLflow's own empty
  one, :mod:`suite.tracking.template`);
- the tables it writes have the columns it was checked against (:mod:`suite.tracking.schema`),
  at any schema revision the installed MLflow accepts (its own head, or
  :data:`VERIFIED_REVISIONS`). A store whose tables differ is left to MLflow (said once on the
  ``time:`` line); one at a revision MLflow refuses too (older: ``mlflow db upgrade``; newer:
  another MLflow) is refused here with the line :func:`suite.tracking.schema.revision_problem` gives;
- MLflow's workspaces are off and no server artifact root is set;
- ``SUITE_TRACKING_VIA_MLFLOW`` is not set (it makes every write go through MLflow's client).

A URI that asks for the store read-only (``?mode=ro``, ``?immutable=1``) opens it read-only: a
report reads it; a command that writes runs refuses it (:func:`suite.stores.check_tracking_uri`).

``tests/test_tracking_direct.py`` writes the same runs through MLflow's client and through this
module and compares every table row, and reads the direct store back through ``MlflowClient``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.exec.phases import CLOCK
from suite.stores import describe, read_only_uri, sqlite_path
from suite.tracking import schema
from suite.tracking.records import (
    ACTIVE,
    MAX_EXPERIMENT_TAG_VAL_LENGTH,
    METRIC_COLUMNS,
    TAG_COLUMNS,
    Deferred,
    Metric,
    PendingRun,
    artifact_uri,
    run_rows,
)

VERIFIED_REVISIONS = frozenset({"dc11669786a5"})  # MLflow 3.17's schema head
DISABLE_ENV = "SUITE_TRACKING_VIA_MLFLOW"
BUSY_TIMEOUT_S = 20.0  # MLflow's sqlite engine: PRAGMA busy_timeout = 20000
DEFAULT_WORKSPACE = "default"
DEFAULT_EXPERIMENT = "Default"
CHUNK = 400  # runs per IN (...) list (sqlite's bound-parameter limit)


@dataclass
class RunInfo:
    """The run attributes the suite reads (named as ``mlflow.entities.RunInfo``'s)."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str


@dataclass
class RunData:
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value per key


@dataclass
class StoredRun:
    """A run as read from the store, shaped as ``mlflow.entities.Run`` (``.info``, ``.data``)."""

    info: RunInfo
    data: RunData


class DirectStore:
    """One local MLflow sqlite store, opened with ``sqlite3`` (see the module docstring)."""

    def __init__(self, path: Path, artifact_root: str, *, read_only: bool = False) -> None:
        self.path = path
        self.artifact_root = artifact_root  # MLflow's default: ./mlruns of the working directory, absolute
        self.read_only = read_only  # opened with sqlite's mode=ro: every write fails
        self._locations: dict[str, str] = {}  # experiment id -> artifact location
        # mode=rw: never create the file. A store moved away before a connection is made (a writer
        # process starting) must not be replaced by an empty file, which the next run would take as a new store
        target = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rw'}"
        self.db = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False,
                                  uri=True)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("PRAGMA case_sensitive_like = true")
        self.db.execute("PRAGMA cache_size = -65536")  # 64 MiB for this connection: a stack's 91,000 metric
        # rows touch three B-trees, and the default 2 MiB spilled pages mid-transaction (0.65 -> 0.52 s)

    @classmethod
    def open(cls, uri: str) -> DirectStore | None:
        """The store at ``uri`` if this module serves it, else None (MLflow does). Raises
        :class:`~suite.errors.StoreError` for a store at a schema revision the installed MLflow
        refuses too (:func:`suite.tracking.schema.revision_problem`)."""
        path = sqlite_path(uri)
        if path is None or not path.is_file() or os.environ.get(DISABLE_ENV):
            return None
        if _truthy(os.environ.get("MLFLOW_ENABLE_WORKSPACES")) or os.environ.get("_MLFLOW_SERVER_ARTIFACT_ROOT"):
            return None
        try:
            store = cls(path, str(Path.cwd() / "mlruns"), read_only=read_only_uri(uri))
            revision = store.db.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error:
            return None
        if len(revision) != 1:
            store.close()
            return None
        if revision[0][0] not in VERIFIED_REVISIONS:
            problem = schema.revision_problem(describe(uri), revision[0][0])
            if problem is not None:  # MLflow would refuse it too: say why, without importing MLflow
                store.close()
                from suite.errors import StoreError

                raise StoreError(": ".join(problem))  # as suite.tracking.diagnose.Diagnosis.line
        why = schema.mismatch(schema.sqlite_columns(store.db))
        if why is not None:  # MLflow's own calls serve it (they know its tables)
            store.close()
            CLOCK.note(f"tracking through MLflow, not the fast path: the store's {why}")
            return None
        if not store.read_only:
            store._ensure_default_experiment()
        return store

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock is taken first, so two
        writers queue on the busy timeout instead of failing to upgrade a read lock)."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # not when sqlite rolled back itself (a full disk, an I/O error)
                self.db.execute("ROLLBACK")
            raise

    # -- experiments -------------------------------------------------------------------------
    def _ensure_default_experiment(self) -> None:
        """MLflow's store adds experiment 0, ``Default``, when it opens a store without one."""
        if self.db.execute("SELECT 1 FROM experiments WHERE experiment_id = 0").fetchone():
            return
        now = _now_ms()
        with contextlib.suppress(sqlite3.IntegrityError), self.transaction() as cur:
            cur.execute("INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
                        "creation_time, last_update_time, workspace) VALUES (0, ?, ?, ?, ?, ?, ?)",
                        (DEFAULT_EXPERIMENT, f"{self.artifact_root}/0", ACTIVE, now, now, DEFAULT_WORKSPACE))

    def experiment(self, name: str) -> tuple[str, str, dict[str, str]] | None:
        """``(id, lifecycle stage, tags)`` of experiment ``name``, or None."""
        row = self.db.execute("SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ? AND "
                              "workspace = ?", (name, DEFAULT_WORKSPACE)).fetchone()
        if row is None:
            return None
        tags = dict(self.db.execute("SELECT key, value FROM experiment_tags WHERE experiment_id = ?", (row[0],)))
        return str(row[0]), row[1], tags

    def experiment_location(self, experiment_id: str) -> str:
        """The experiment's artifact location (read once: MLflow never changes it)."""
        if experiment_id not in self._locations:
            (self._locations[experiment_id],) = self.db.execute(
                "SELECT artifact_location FROM experiments WHERE experiment_id = ?", (int(experiment_id),)).fetchone()
        return self._locations[experiment_id]

    def create_experiment(self, name: str, tags: Mapping[str, str]) -> str:
        """Create experiment ``name`` with ``tags`` as ``SqlAlchemyStore.create_experiment`` does
        (its artifact location: the artifact root / its id); raises ``sqlite3.IntegrityError`` if
        it exists."""
        now = _now_ms()
        with self.transaction() as cur:
            cur.execute("INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, "
                        "last_update_time, workspace) VALUES (?, NULL, ?, ?, ?, ?)",
                        (name, ACTIVE, now, now, DEFAULT_WORKSPACE))
            experiment_id = cur.lastrowid
            cur.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                        (f"{self.artifact_root}/{experiment_id}", experiment_id))
            cur.executemany("INSERT INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, ?)",
                            [(k, v, experiment_id) for k, v in tags.items()])
        return str(experiment_id)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """Set (or replace) one experiment tag, as ``SqlAlchemyStore.set_experiment_tag``."""
        if len(value) > MAX_EXPERIMENT_TAG_VAL_LENGTH:
            raise ValueError(f"experiment tag {key!r} is longer than {MAX_EXPERIMENT_TAG_VAL_LENGTH} characters")
        with self.transaction() as cur:
            cur.execute("INSERT INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, ?) "
                        "ON CONFLICT (key, experiment_id) DO UPDATE SET value = excluded.value",
                        (key, value, int(experiment_id)))

    # -- runs: writes ----------------------------------------------------------------------------
    def write(self, experiment_id: str, runs: Sequence[PendingRun]) -> None:
        """Write ``runs``: artifacts first, then every row in one transaction."""
        runs = [r for r in runs if not r.empty]
        if not runs:
            return
        location = self.experiment_location(experiment_id)

        def uri_of(run_id: str) -> str:
            return artifact_uri(location, run_id)

        write_artifacts(runs, uri_of)
        rows = run_rows(runs, experiment_id, uri_of)
        with self.transaction() as cur:
            _insert(cur, "runs", rows.runs)
            _insert(cur, "tags", rows.tags)
            _insert(cur, "params", rows.params)
            cur.executemany("DELETE FROM tags WHERE run_uuid = ? AND key = ?", [(i, k) for i, k, _ in rows.retag])
            _insert_tuples(cur, "tags", TAG_COLUMNS, rows.retag)
            cur.executemany("UPDATE runs SET name = ? WHERE run_uuid = ?", rows.renamed)
            if rows.ended:
                cur.executemany("UPDATE runs SET status = ?, end_time = COALESCE(?, end_time) WHERE run_uuid = ?",
                                [(e["status"], e.get("end_time"), e["run_uuid"]) for e in rows.ended])
                if cur.rowcount != len(rows.ended):
                    raise sqlite3.IntegrityError(f"{len(rows.ended) - cur.rowcount} run(s) to terminate are not "
                                                 f"in the store {self.path}")
            _insert_tuples(cur, "metrics", METRIC_COLUMNS, rows.metrics, ignore_duplicates=True)
            # the latest value per (run, key): a stored one is replaced only by a later one, by MLflow's
            # rule (largest step, then timestamp, then value), in one statement per row
            cur.executemany(f"INSERT INTO latest_metrics ({', '.join(METRIC_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value, "
                            "timestamp = excluded.timestamp, step = excluded.step, is_nan = excluded.is_nan "
                            "WHERE (excluded.step, excluded.timestamp, excluded.value) > "
                            "(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
                            list(rows.latest.values()))

    # -- runs: reads -----------------------------------------------------------------------------
    def runs(self, experiment_id: str, *, tags: Mapping[str, str] | None = None,
             status: str | None = None) -> list[StoredRun]:
        """The experiment's active runs with these tag values (and status), with their tags,
        params and latest metric values (as ``MlflowClient.search_runs`` returns them)."""
        where = ["r.experiment_id = ?", "r.lifecycle_stage = ?"]
        args: list[Any] = [int(experiment_id), ACTIVE]
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        for key, value in (tags or {}).items():
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)")
            args += [key, value]
        found = self.db.execute(
            "SELECT run_uuid, name, experiment_id, status, start_time, end_time, artifact_uri, lifecycle_stage "
            f"FROM runs r WHERE {' AND '.join(where)} ORDER BY start_time DESC, run_uuid", args).fetchall()
        runs = {row[0]: StoredRun(RunInfo(row[0], row[1], str(row[2]), *row[3:]), RunData()) for row in found}
        for chunk in _chunks(list(runs)):
            marks = ", ".join("?" for _ in chunk)
            for run_id, key, value in self.db.execute(
                    f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", chunk):
                runs[run_id].data.tags[key] = value
            for run_id, key, value in self.db.execute(
                    f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", chunk):
                runs[run_id].data.params[key] = value
            for run_id, key, value, is_nan in self.db.execute(
                    f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", chunk):
                runs[run_id].data.metrics[key] = float("nan") if is_nan else value
        return list(runs.values())

    def artifact_uri(self, run_id: str) -> str:
        """Where run ``run_id``'s artifacts are (its ``artifact_uri``)."""
        row = self.db.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"run {run_id} is not in the store {self.path}")
        return row[0]

    def existing_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Those of ``run_ids`` the store has."""
        found: set[str] = set()
        for chunk in _chunks(list(run_ids)):
            found.update(r for (r,) in self.db.execute(
                f"SELECT run_uuid FROM runs WHERE run_uuid IN ({', '.join('?' for _ in chunk)})", chunk))
        return found

    def run_experiment(self, run_id: str) -> str:
        """The id of the experiment run ``run_id`` belongs to."""
        row = self.db.execute("SELECT experiment_id FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"run {run_id} is not in the store {self.path}")
        return str(row[0])

    def run_status(self, run_id: str) -> str:
        row = self.db.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"run {run_id} is not in the store {self.path}")
        return row[0]

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every logged value of one metric (as ``MlflowClient.get_metric_history``, in its order)."""
        # "+key": sqlite's planner would otherwise walk the primary key's index (key, timestamp,
        # step, ...) through every run's values of the key to save a sort, 14 against 0.3 ms a
        # read in a store of 680,000 values; this way it finds the run's rows by its run index
        rows = self.db.execute("SELECT value, is_nan, timestamp, step FROM metrics WHERE run_uuid = ? AND +key = ? "
                               "ORDER BY timestamp, step, value", (run_id, key))
        return [Metric(key, float("nan") if is_nan else value, ts, step) for value, is_nan, ts, step in rows]


def write_artifacts(runs: Iterable[PendingRun], uri_of: Any) -> None:
    """Write each run's queued artifacts under its artifact URI: straight into the folder for a
    local one (where MLflow's local artifact repository copies them), else through MLflow's
    artifact repository for that URI."""
    remote, made = [], set()
    for run in runs:
        if not run.artifacts:
            continue
        uri = uri_of(run.run_id)
        folder = local_artifact_path(uri)
        if folder is None:
            remote.append((uri, run))
            continue
        for name, content in run.artifacts.items():
            path = folder / name
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content.text() if isinstance(content, Deferred) else content, encoding="utf-8")
    if remote:
        _remote_artifacts(remote)


def _remote_artifacts(remote: list[tuple[str, PendingRun]]) -> None:
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory(prefix="suite-artifacts-") as tmp:
        for uri, run in remote:
            folder = Path(tmp) / run.run_id
            write_artifacts([PendingRun(run.run_id, artifacts=run.artifacts)], lambda _id, f=folder: str(f))
            get_artifact_repository(uri).log_artifacts(str(folder))


def local_artifact_path(uri: str) -> Path | None:
    """The folder of a local artifact URI (a path or ``file://``); ``None`` for a remote one."""
    if uri.startswith("/"):
        return Path(uri)
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(uri)
        if parsed.netloc in ("", "localhost") and not parsed.query:
            return Path(unquote(parsed.path))
    return None


def _insert(cur: sqlite3.Cursor, table: str, rows: list[dict]) -> None:
    if rows:
        columns = list(rows[0])
        _insert_tuples(cur, table, columns, [tuple(row[c] for c in columns) for row in rows])


def _insert_tuples(cur: sqlite3.Cursor, table: str, columns: Sequence[str], rows: list[tuple], *,
                   ignore_duplicates: bool = False) -> None:
    """``ignore_duplicates``: a row equal to a stored one is skipped, as MLflow skips a metric value
    logged twice (same key, timestamp, step and value)."""
    if rows:
        verb = "INSERT OR IGNORE" if ignore_duplicates else "INSERT"
        cur.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                        rows)


def _chunks(items: list) -> Iterator[list]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "y", "on")

