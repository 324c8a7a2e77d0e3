"""A new sqlite MLflow store starts as a copy of an empty, fully migrated one.

MLflow makes a new sqlite store by creating its first tables and then running every alembic
migration since (63 for MLflow 3.x): 2–6 s here, paid by every fresh working directory, every
``make bench`` in a new clone and every test's store. For one MLflow version the result is always
the same empty database. So the first new store of an MLflow version is made by MLflow itself in
the user cache (``$XDG_CACHE_HOME/sgd-suite``, else ``~/.cache/sgd-suite``), once, and later new
stores are copies of it (about 1 ms).

The copy holds no experiment: MLflow adds its ``Default`` experiment when it opens the store,
with the artifact location it would give a store made here (it resolves ``./mlruns`` against the
working directory), so a copied store is indistinguishable from one MLflow made. Set
``SUITE_NO_STORE_TEMPLATE=1`` to let MLflow make every store itself.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

from suite.stores import sqlite_path

DISABLE_ENV = "SUITE_NO_STORE_TEMPLATE"


def cache_dir() -> Path:
    """Where the template lives (XDG cache convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgd-suite"


def seed_new_store(uri: str) -> bool:
    """If ``uri`` is ``sqlite:///FILE`` and FILE does not exist yet, create FILE as a copy of the
    empty migrated store (made first if this MLflow version has none). Returns whether it did.
    Never replaces a file: a store another process created meanwhile is kept. Any failure
    (an unwritable cache, a full disk) leaves FILE absent, and MLflow then makes the store."""
    path = sqlite_path(uri)
    if path is None or path.exists() or os.environ.get(DISABLE_ENV):
        return False
    try:
        template = _template()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(template.read_bytes())
            os.link(tmp, path)  # atomic, and fails if the store appeared meanwhile
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, sqlite3.Error):  # the template could not be made or copied: MLflow makes the store
        return False
    return True


def _template() -> Path:
    """The empty migrated store of this MLflow version, made on first use."""
    from importlib.metadata import version

    final = cache_dir() / f"mlflow-{version('mlflow')}-empty.db"  # without importing MLflow (1.5-3 s)
    if final.exists():
        return final
    from mlflow.tracking import MlflowClient

    from suite.stores import quiet_store_logs

    quiet_store_logs()  # MLflow's migrations log at INFO
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        made, empty = Path(tmp) / "made.db", Path(tmp) / "empty.db"
        MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()  # MLflow creates and migrates it
        empty.write_bytes(made.read_bytes())
        with contextlib.closing(sqlite3.connect(empty)) as db, db:  # MLflow adds Default where the copy opens
            db.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
            db.execute("DELETE FROM experiments WHERE experiment_id = 0")
        os.replace(empty, final)  # atomic: a reader sees the whole template or none
    return final
