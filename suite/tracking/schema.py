"""The fast paths' schema check: the columns of the tables they write, not a revision number.

:mod:`suite.tracking.direct` and :mod:`suite.tracking.bulk` write MLflow's rows themselves, into
seven tables. They are right for a store whose tables have the columns they were checked against
(:data:`VERIFIED`, MLflow 3.17.2's schema head ``dc11669786a5``; ``tests/test_tracking_schema.py``
keeps it equal to what the installed MLflow makes), whatever its alembic revision says:

- a verified column dropped, or changed (declared type, ``NOT NULL``, primary-key position):
  refused, and MLflow's own calls serve the store;
- a column added that an insert naming only the verified columns fills (nullable, or with a
  default): served, since every row the suite writes is still a valid row;
- a column added ``NOT NULL`` without a default: refused.

A refusal is said once, on the ``time:`` line (:meth:`suite.exec.phases.Phases.note`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

_REVISION = re.compile(r"^(down_)?revision\s*=\s*(.+)$", re.M)  # down_revision may be a tuple (a merge)


class Column(NamedTuple):
    """What an insert that names some of a table's columns depends on, of one column."""

    type: str  # as declared (sqlite); "" where the dialect's type is not compared
    not_null: bool
    has_default: bool
    pk: int  # position in the primary key, 0 if not in it


def _cols(*spec: tuple[str, str, int, int]) -> dict[str, Column]:
    return {name: Column(type_, bool(not_null), False, pk) for name, type_, not_null, pk in spec}


V32, V250, BIG, INT = "VARCHAR(32)", "VARCHAR(250)", "BIGINT", "INTEGER"
VERIFIED: dict[str, dict[str, Column]] = {  # table -> column -> declared shape (has_default not compared)
    "experiments": _cols(("experiment_id", INT, 1, 1), ("name", "VARCHAR(256)", 1, 0),
                         ("artifact_location", "VARCHAR(256)", 0, 0), ("lifecycle_stage", "VARCHAR(32)", 0, 0),
                         ("creation_time", BIG, 0, 0), ("last_update_time", BIG, 0, 0),
                         ("workspace", "VARCHAR(63)", 1, 0)),
    "experiment_tags": _cols(("key", V250, 1, 1), ("value", "TEXT", 0, 0), ("experiment_id", INT, 1, 2)),
    "runs": _cols(("run_uuid", V32, 1, 1), ("name", V250, 0, 0), ("source_type", "VARCHAR(20)", 0, 0),
                  ("source_name", "VARCHAR(500)", 0, 0), ("entry_point_name", "VARCHAR(50)", 0, 0),
                  ("user_id", "VARCHAR(256)", 0, 0), ("status", "VARCHAR(9)", 0, 0), ("start_time", BIG, 0, 0),
                  ("end_time", BIG, 0, 0), ("source_version", "VARCHAR(50)", 0, 0),
                  ("lifecycle_stage", "VARCHAR(20)", 0, 0), ("artifact_uri", "VARCHAR(200)", 0, 0),
                  ("experiment_id", INT, 0, 0), ("deleted_time", BIG, 0, 0)),
    "tags": _cols(("key", V250, 1, 1), ("value", "VARCHAR(8000)", 0, 0), ("run_uuid", V32, 1, 2)),
    "params": _cols(("key", V250, 1, 1), ("value", "VARCHAR(8000)", 1, 0), ("run_uuid", V32, 1, 2)),
    "metrics": _cols(("key", V250, 1, 1), ("value", "FLOAT", 1, 5), ("timestamp", BIG, 1, 2), ("run_uuid", V32, 1, 4),
                     ("step", BIG, 1, 3), ("is_nan", "BOOLEAN", 1, 6)),
    "latest_metrics": _cols(("key", V250, 1, 1), ("value", "FLOAT", 1, 0), ("timestamp", BIG, 0, 0),
                            ("step", BIG, 1, 0), ("is_nan", "BOOLEAN", 1, 0), ("run_uuid", V32, 1, 2)),
}


def mismatch(found: Mapping[str, Mapping[str, Column]], *, types: bool = True) -> str | None:
    """Why rows written for :data:`VERIFIED` would not be right in a store whose tables have the
    columns ``found`` (table -> column -> shape), or None when they are. ``types=False``: declared
    types are not compared (another dialect spells them its own way)."""
    for table, verified in VERIFIED.items():
        columns = found.get(table)
        if not columns:
            return f"its table {table} is missing"
        for name, want in verified.items():
            have = columns.get(name)
            if have is None:
                return f"its column {table}.{name} was dropped"
            if (have.not_null, have.pk) != (want.not_null, want.pk) or (types and have.type.upper() != want.type):
                return f"its column {table}.{name} changed"
        for name, have in columns.items():
            if name not in verified and have.not_null and not have.has_default and not have.pk:
                return f"its column {table}.{name} was added NOT NULL without a default"
    return None


def sqlite_columns(db: object) -> dict[str, dict[str, Column]]:
    """The columns of :data:`VERIFIED`'s tables in an open ``sqlite3`` connection."""
    out: dict[str, dict[str, Column]] = {}
    for table in VERIFIED:
        rows = db.execute(f"PRAGMA table_info({table})").fetchall()  # type: ignore[attr-defined]
        out[table] = {name: Column(type_, bool(not_null), default is not None, pk)
                      for _, name, type_, not_null, default, pk in rows}
    return out


def sqlalchemy_columns(engine: object) -> dict[str, dict[str, Column]]:
    """The columns of :data:`VERIFIED`'s tables through SQLAlchemy's inspector (any dialect;
    declared types left out)."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    out: dict[str, dict[str, Column]] = {}
    for table in VERIFIED:
        if not inspector.has_table(table):
            continue
        pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
        out[table] = {c["name"]: Column("", not c["nullable"], c.get("default") is not None,
                                        pk.index(c["name"]) + 1 if c["name"] in pk else 0)
                      for c in inspector.get_columns(table)}
    return out


@lru_cache(maxsize=1)
def mlflow_revisions() -> tuple[str | None, frozenset[str]]:
    """The installed MLflow's schema head and every revision its migrations know, read from its
    migration scripts (``mlflow/store/db_migrations/versions``) without importing MLflow."""
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None, frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "store" / "db_migrations" / "versions"
    known: set[str] = set()
    parents: set[str] = set()
    for script in folder.glob("*.py"):
        for down, value in _REVISION.findall(script.read_text(encoding="utf-8", errors="replace")):
            ids = set(re.findall(r"['\"]([0-9A-Za-z_]+)['\"]", value))
            (parents if down else known).update(ids)
    heads = known - parents
    return (next(iter(heads)) if len(heads) == 1 else None), frozenset(known)


def mlflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow")
    except PackageNotFoundError:
        return "(not installed)"


def revision_problem(store: str, found: str) -> tuple[str, str] | None:
    """Why the installed MLflow refuses the store ``store`` (as :func:`suite.stores.describe` names
    it) at schema revision ``found``, and what to do, or None if ``found`` is its own head. (The
    fast paths would serve it, but the user's MLflow could not read it.)"""
    head, known = mlflow_revisions()
    if found == head:
        return None
    ver = mlflow_version()
    if found in known:
        return (f"the tracking store {store} is at MLflow schema revision {found}, older than the installed "
                f"MLflow {ver} supports ({head})", f"back it up, then migrate it with: mlflow db upgrade {store}")
    return (f"the tracking store {store} is at MLflow schema revision {found}, which the installed MLflow "
            f"{ver} does not know (its newest is {head}), so a newer MLflow wrote it",
            "upgrade MLflow (pip install -U mlflow) or use the MLflow version that wrote the store")
