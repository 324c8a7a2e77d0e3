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
Artifacts are written first, before the transaction that makes the run visible
(:func:`suite.tracking.direct.write_artifacts`). On a local sqlite store at a schema revision it
was checked against, :mod:`suite.tracking.direct` writes the same rows without MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from suite.exec.phases import CLOCK
from suite.tracking import schema
from suite.tracking.direct import write_artifacts
from suite.tracking.records import (
    METRIC_COLUMNS,
    TAG_COLUMNS,
    PendingRun,
    dict_text,
    merge_latest,
    run_rows,
    stale_latest,
)

__all__ = ["CHUNK", "PendingRun", "SqlBulk", "dict_text", "sql_store"]

CHUNK = 400  # rows per statement where a statement binds several values per row (database parameter limits)


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
        store = sql_store(client)
        if store is None:
            return None
        why = _schema_mismatch(store)
        if why is not None:
            CLOCK.note(f"tracking through MLflow's own calls, not in bulk: the store's {why}")
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
        write_artifacts(runs, self.artifact_uri)
        with store.ManagedSessionMaker(read_only=False) as session:
            self._rows(session, runs)

    # -- rows ------------------------------------------------------------------------------
    def _rows(self, session: Any, runs: Sequence[PendingRun]) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
        from sqlalchemy import delete, insert, select, tuple_, update

        rows = run_rows(runs, self.experiment_id, self.artifact_uri)
        if rows.runs:
            session.execute(insert(SqlRun.__table__), rows.runs)
        _insert(session, SqlTag.__table__, rows.tags)
        _insert(session, SqlParam.__table__, rows.params)
        for chunk in _chunks(rows.retag):
            pairs = [(i, k) for i, k, _ in chunk]
            session.execute(delete(SqlTag).where(tuple_(SqlTag.run_uuid, SqlTag.key).in_(pairs)))
        _insert_tuples(session, SqlTag.__table__, TAG_COLUMNS, rows.retag)
        if rows.ended:
            session.execute(update(SqlRun), rows.ended)
        for name, run_uuid in rows.renamed:
            session.execute(update(SqlRun).where(SqlRun.run_uuid == run_uuid).values(name=name))
        _insert_tuples(session, SqlMetric.__table__, METRIC_COLUMNS, rows.metrics, ignore_duplicates=True)
        for chunk in _chunks(stale_latest(rows)):  # runs created earlier: keep what is already more recent
            stored = session.execute(select(SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.step,
                                            SqlLatestMetric.timestamp, SqlLatestMetric.value)
                                     .where(tuple_(SqlLatestMetric.run_uuid, SqlLatestMetric.key).in_(chunk))).all()
            replace = merge_latest(rows, stored)
            if replace:
                session.execute(delete(SqlLatestMetric)
                                .where(tuple_(SqlLatestMetric.run_uuid, SqlLatestMetric.key).in_(replace)))
        _insert_tuples(session, SqlLatestMetric.__table__, METRIC_COLUMNS, list(rows.latest.values()))


DIALECTS = ("sqlite", "postgresql", "mysql")  # those with row-value IN, which the writer's updates use


def sql_store(client: Any) -> Any | None:
    """``client``'s tracking store if it is MLflow's SQL store on sqlite, PostgreSQL or MySQL,
    else None (SQL Server, a tracking server, a file store)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not isinstance(store, SqlAlchemyStore) or getattr(store, "db_type", None) not in DIALECTS:
        return None
    return store


def _schema_mismatch(store: Any) -> str | None:
    """Why the rows :class:`SqlBulk` writes would not be right in ``store`` (its tables' columns,
    :mod:`suite.tracking.schema`), or None; checked once per database."""
    url = str(getattr(store, "db_uri", id(store)))
    if url not in _CHECKED:
        engine = getattr(store, "engine", None)
        _CHECKED[url] = ("MLflow's store has no engine to inspect" if engine is None
                         else schema.mismatch(schema.sqlalchemy_columns(engine), types=False))
    return _CHECKED[url]


_CHECKED: dict[str, str | None] = {}


PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}
IGNORE = {"sqlite": ("INSERT OR IGNORE", ""), "postgresql": ("INSERT", " ON CONFLICT DO NOTHING"),
          "mysql": ("INSERT IGNORE", "")}  # of each dialect in DIALECTS: insert, skipping duplicates of stored rows


def _insert(session: Any, table: Any, rows: list[dict]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` (see :func:`_insert_tuples`)."""
    if rows:
        columns = list(rows[0])
        _insert_tuples(session, table, columns, [tuple(row[c] for c in columns) for row in rows])


def _insert_tuples(session: Any, table: Any, columns: Sequence[str], rows: list[tuple], *,
                   ignore_duplicates: bool = False) -> None:
    """Insert ``rows``, tuples of values in the order of ``columns``: straight through the
    database driver's ``executemany`` where its parameter style is known (SQLAlchemy's per-row
    parameter processing was most of the write: 1.9 of 3.2 s for 91,000 metric rows), else
    with named parameters through SQLAlchemy. ``ignore_duplicates``: a row equal to a stored one
    is skipped, as MLflow skips a metric value logged twice (same key, timestamp, step, value)."""
    if not rows:
        return
    conn = session.connection()
    verb, suffix = IGNORE[conn.dialect.name] if ignore_duplicates else ("INSERT", "")
    mark = PLACEHOLDER.get(conn.dialect.paramstyle)
    names = [f"p{i}" for i in range(len(columns))]
    quote = conn.dialect.identifier_preparer
    sql = (f"{verb} INTO {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) "
           f"VALUES ({', '.join(mark or f':{n}' for n in names)}){suffix}")
    for i in range(0, len(rows), 5000):
        if mark is not None:
            conn.exec_driver_sql(sql, rows[i : i + 5000])
        else:
            from sqlalchemy import text

            session.execute(text(sql), [dict(zip(names, row, strict=True)) for row in rows[i : i + 5000]])


def _chunks(items: list) -> Iterable[list]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]
