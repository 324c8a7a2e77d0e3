"""Many runs' MLflow records written in one database transaction.

MLflow's SQL store (sqlite, PostgreSQL, MySQL) opens a session and commits for every client call,
and builds one ORM object per metric: on sqlite here about 25 ms a call and 60–160 ms for the
five or six calls of one run (create, params, two artifacts, metrics with tags, terminate), which
made MLflow most of a stacked grid's wall time. :class:`SqlBulk` writes the same rows, through
MLflow's own table models (``mlflow.store.tracking.dbmodels.models``) and its store's session
maker, for any number of runs at once: one transaction, one multi-row insert per table.

The rows are those MLflow's own calls write (``tests/test_tracking_bulk.py`` reads runs written
both ways back through ``MlflowClient`` and compares them): the run row (``RUNNING`` until it is
terminated), its tags (``mlflow.runName`` included), params, the metric history with MLflow's
sanitising (NaN stored as 0 with ``is_nan``; ±inf as ±max float) and de-duplication, and the
latest value per metric by MLflow's rule (largest ``(step, timestamp, value)``).
Artifacts go through MLflow's artifact repository for the run's artifact URI, before the
transaction that makes the run visible.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH  # what MLflow's own calls allow

MAX_FLOAT = 1.7976931348623157e308
CHUNK = 400  # rows per statement where a statement binds several values per row (database parameter limits)


@dataclass
class PendingRun:
    """What is queued for one run until the next write.

    ``create``: the run is not in the store yet (its start time, tags and params are here).
    ``tags``: tags set after creation (they replace those of the same key). ``status`` and
    ``end_time``: the run is terminated. ``artifacts``: file name -> text or bytes."""

    run_id: str
    create: bool = False
    name: str = ""
    start_time: int = 0
    create_tags: dict[str, str] = field(default_factory=dict)
    params: list[Param] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    end_time: int | None = None
    artifacts: dict[str, str | bytes] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.create or self.metrics or self.tags or self.status or self.artifacts)


class SqlBulk:
    """Writes :class:`PendingRun` records to one experiment of an MLflow SQL store, through the
    store of the client it is given at each write."""

    def __init__(self, experiment_id: str, artifact_location: str) -> None:
        self.experiment_id = experiment_id
        self.artifact_location = artifact_location

    @classmethod
    def for_client(cls, client: Any, experiment_id: str) -> SqlBulk | None:
        """A writer if ``client``'s store is MLflow's SQL store, else None (a tracking server or
        a file store: the tracker then makes MLflow's own calls)."""
        if sql_store(client) is None:
            return None
        return cls(experiment_id, client.get_experiment(experiment_id).artifact_location)

    def artifact_uri(self, run_id: str) -> str:
        """Where MLflow puts a new run's artifacts (as ``SqlAlchemyStore.create_run`` does)."""
        from mlflow.utils.uri import append_to_uri_path

        return append_to_uri_path(self.artifact_location, run_id, "artifacts")

    def write(self, client: Any, runs: Sequence[PendingRun]) -> None:
        """Write every record through ``client``'s store: artifacts first, then every row in one
        transaction."""
        runs = [r for r in runs if not r.empty]
        if not runs:
            return
        store = sql_store(client)
        if store is None:
            raise TypeError(f"not an MLflow SQL store: {type(client._tracking_client.store).__name__}")
        self._artifacts(runs)
        with store.ManagedSessionMaker(read_only=False) as session:
            self._rows(session, runs)

    # -- artifacts -------------------------------------------------------------------------
    def _artifacts(self, runs: Iterable[PendingRun]) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with tempfile.TemporaryDirectory(prefix="suite-artifacts-") as tmp:
            for run in runs:
                if not run.artifacts:
                    continue
                folder = os.path.join(tmp, run.run_id)
                os.makedirs(folder)
                for name, content in run.artifacts.items():
                    path = os.path.join(folder, name)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    mode = "wb" if isinstance(content, bytes) else "w"
                    with open(path, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
                        f.write(content)
                get_artifact_repository(self.artifact_uri(run.run_id)).log_artifacts(folder)

    # -- rows ------------------------------------------------------------------------------
    def _rows(self, session: Any, runs: Sequence[PendingRun]) -> None:
        from mlflow.entities import LifecycleStage, RunStatus, SourceType
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
        from sqlalchemy import delete, insert, select, tuple_, update

        new = [r for r in runs if r.create]
        if new:
            session.execute(insert(SqlRun.__table__), [{
                "run_uuid": r.run_id, "name": r.name, "artifact_uri": self.artifact_uri(r.run_id),
                "experiment_id": int(self.experiment_id), "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "", "entry_point_name": "", "user_id": r.create_tags.get("mlflow.user", "unknown"),
                "status": r.status or RunStatus.to_string(RunStatus.RUNNING), "start_time": r.start_time,
                "end_time": r.end_time, "deleted_time": None, "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
            } for r in new])
            tags = [{"run_uuid": r.run_id, "key": k, "value": v[:MAX_TAG_VAL_LENGTH]}
                    for r in new for k, v in {**r.create_tags, **r.tags}.items()]
            params = [{"run_uuid": r.run_id, "key": p.key, "value": p.value[:MAX_PARAM_VAL_LENGTH]}
                      for r in new for p in r.params]
            _insert(session, insert(SqlTag.__table__), tags)
            _insert(session, insert(SqlParam.__table__), params)

        old = [r for r in runs if not r.create]
        retag = [(r.run_id, k, v) for r in old for k, v in r.tags.items()]
        for chunk in _chunks(retag):
            pairs = [(i, k) for i, k, _ in chunk]
            session.execute(delete(SqlTag).where(tuple_(SqlTag.run_uuid, SqlTag.key).in_(pairs)))
        _insert(session, insert(SqlTag.__table__),
                [{"run_uuid": i, "key": k, "value": v[:MAX_TAG_VAL_LENGTH]} for i, k, v in retag])
        ended = [{"run_uuid": r.run_id, "status": r.status, "end_time": r.end_time} for r in old if r.status]
        if ended:
            session.execute(update(SqlRun), ended)

        metrics, latest = [], {}
        for r in runs:
            seen = set()
            for m in r.metrics:
                is_nan, value = _sanitize(m.value)
                row = (m.key, m.timestamp, m.step, value, is_nan)
                if row in seen:
                    continue
                seen.add(row)
                metrics.append({"run_uuid": r.run_id, "key": m.key, "value": value, "timestamp": m.timestamp,
                                "step": m.step, "is_nan": is_nan})
                have = latest.get((r.run_id, m.key))
                if have is None or (m.step, m.timestamp, value) > (have["step"], have["timestamp"], have["value"]):
                    latest[(r.run_id, m.key)] = metrics[-1]
        _insert(session, insert(SqlMetric.__table__), metrics)
        new_ids = {r.run_id for r in new}
        stale = [key for key in latest if key[0] not in new_ids]
        for chunk in _chunks(stale):  # runs created earlier: keep what is already more recent
            rows = session.execute(select(SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.step,
                                          SqlLatestMetric.timestamp, SqlLatestMetric.value)
                                   .where(tuple_(SqlLatestMetric.run_uuid, SqlLatestMetric.key).in_(chunk))).all()
            replace = []
            for run_uuid, key, step, ts, value in rows:
                mine = latest[(run_uuid, key)]
                if (mine["step"], mine["timestamp"], mine["value"]) > (step, ts, value):
                    replace.append((run_uuid, key))
                else:
                    del latest[(run_uuid, key)]
            if replace:
                session.execute(delete(SqlLatestMetric)
                                .where(tuple_(SqlLatestMetric.run_uuid, SqlLatestMetric.key).in_(replace)))
        _insert(session, insert(SqlLatestMetric.__table__), list(latest.values()))


DIALECTS = ("sqlite", "postgresql", "mysql")  # those with row-value IN, which the writer's updates use


def sql_store(client: Any) -> Any | None:
    """``client``'s tracking store if it is MLflow's SQL store on sqlite, PostgreSQL or MySQL,
    else None (SQL Server, a tracking server, a file store)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not isinstance(store, SqlAlchemyStore) or getattr(store, "db_type", None) not in DIALECTS:
        return None
    return store


PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _insert(session: Any, statement: Any, rows: list[dict]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``statement``'s table: straight through the
    database driver's ``executemany`` where its parameter style is known (SQLAlchemy's per-row
    parameter processing was most of the write: 1.9 of 3.2 s for 91,000 metric rows), else
    through SQLAlchemy's own executemany."""
    if not rows:
        return
    table = statement.table
    conn = session.connection()
    mark = PLACEHOLDER.get(conn.dialect.paramstyle)
    if mark is None:
        for i in range(0, len(rows), 5000):
            session.execute(statement, rows[i : i + 5000])
        return
    columns = list(rows[0])
    quote = conn.dialect.identifier_preparer
    sql = (f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) "
           f"VALUES ({', '.join(mark for _ in columns)})")
    for i in range(0, len(rows), 5000):
        conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows[i : i + 5000]])


def _chunks(items: list) -> Iterable[list]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _sanitize(value: float) -> tuple[bool, float]:
    """MLflow's ``SqlAlchemyStore.sanitize_metric_value``: NaN -> (True, 0); ±inf -> ±max float."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, MAX_FLOAT if value > 0 else -MAX_FLOAT
    return False, float(value)


def dict_text(value: Any) -> str:
    """A dictionary as ``MlflowClient.log_dict`` writes a ``.json`` artifact."""
    return json.dumps(value, indent=2, default=str)
