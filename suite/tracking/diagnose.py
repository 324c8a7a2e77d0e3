"""Why a tracking store failed, told in one line that names the cause and says what to do.

Used where a store open or write fails (:class:`suite.tracking.tracker.Tracker`, the grid's fault
handling in :mod:`suite.grids.local`, the tuning session, ``suite report``). The causes it tells
apart, first match wins:

- **another schema revision**: MLflow refuses a store whose ``alembic_version`` is not its own
  head. The revision is looked up among the installed MLflow's migration scripts (read as text,
  without importing MLflow): one of them is *older* (``mlflow db upgrade URI`` migrates it);
  one that is not is *newer* than the installed MLflow (upgrade MLflow, or use the version that
  wrote it);
- **a store file deleted or moved** while it was open (sqlite's ``SQLITE_READONLY_DBMOVED``, or
  the path now names another file or none): the runs written before are in the moved file;
- **corruption**: sqlite says so (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``), or ``PRAGMA
  quick_check``, run on every failure of a local store, finds it. ``quick_check`` reads every
  table and index page, but only ``PRAGMA integrity_check`` also checks that each index agrees
  with its table; damage the suite never reads can stay unnoticed until one of them runs;
- **read-only** (the file, its directory, or the file system) and **a full disk**.

Anything else is the store's own message, whole words only.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from suite.errors import StoreError, StoreFailed, SuiteError
from suite.stores import cut, describe, resolve_tracking_uri, sqlite_path
from suite.stores import one_line as detail
from suite.tracking import schema

_FOUND = re.compile(r"found version (\S+?),")
_opened: dict[Path, tuple[int, int]] = {}  # a local store's file -> (device, inode) when it was opened


@dataclass(frozen=True)
class Diagnosis:
    """Why a store failed (``what``) and what to do about it (``todo``)."""

    what: str
    todo: str

    @property
    def line(self) -> str:
        return f"{self.what}: {self.todo}"


def schema_problem(uri: str, found: str) -> Diagnosis | None:
    """Why the installed MLflow refuses a store at schema revision ``found``, or None if ``found``
    is its own head (:func:`suite.tracking.schema.revision_problem`)."""
    problem = schema.revision_problem(describe(uri), found)
    return None if problem is None else Diagnosis(*problem)


def note_opened(uri: str) -> None:
    """Remember which file a local store's path names now, so that a later failure can tell that
    it was deleted or moved meanwhile."""
    path = sqlite_path(uri)
    if path is not None:
        with contextlib.suppress(OSError):
            st = path.stat()
            _opened[path.resolve()] = (st.st_dev, st.st_ino)


def moved(path: Path) -> bool:
    """Whether the store file at ``path`` is gone or another file since :func:`note_opened`."""
    key = path.resolve()
    if key not in _opened:
        return False
    try:
        st = path.stat()
    except OSError:
        return True
    return (st.st_dev, st.st_ino) != _opened[key]


def quick_check(path: Path) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong in the sqlite file ``path`` (None: nothing, or it
    could not be run, e.g. the file is locked or gone)."""
    try:
        with _read_only(path) as db:
            rows = [r[0] for r in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        if _name(exc) in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc) or "not a database" in str(exc):
            return str(exc)
        return None
    return None if rows == ["ok"] else "; ".join(" ".join(str(r).split()) for r in rows)  # one line


def cause(exc: BaseException, uri: str) -> Diagnosis:
    """Why the store at ``uri`` failed with ``exc`` (see the module docstring), and what to do
    about it. Never raises."""
    try:
        return _cause(exc, uri)
    except Exception:  # noqa: BLE001 - a diagnosis must not hide the failure it diagnoses
        return Diagnosis(f"the tracking store {describe(uri)} failed ({detail(exc)})", CHECK)


CHECK = "check the store and --tracking-uri / MLFLOW_TRACKING_URI"


def _cause(exc: BaseException, uri: str) -> Diagnosis:
    store = describe(uri)
    text = " ".join(" ".join(str(e) for e in _chain(exc)).split())
    found = _FOUND.search(text)
    if found and "schema" in text:
        problem = schema_problem(uri, found.group(1))
        if problem is not None:
            return problem
    path = sqlite_path(uri)
    sql = next((e for e in _chain(exc) if isinstance(e, sqlite3.Error)), None)
    name = _name(sql) if sql is not None else ""
    if path is not None:
        if name == "SQLITE_READONLY_DBMOVED" or moved(path):
            return Diagnosis(f"the store file {path} was deleted or moved while the run was writing to it; what "
                             f"was written before is in the moved file, not at {path}",
                             "put the file back there (with no file there, the next run starts a new, empty store)")
        damage = quick_check(path) if path.is_file() else None
        if damage is not None or name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            return Diagnosis(f"the store file {path} is corrupt (PRAGMA quick_check: {cut(damage or str(sql))})",
                             f"restore it from a backup, or recover what is left: sqlite3 {path} .recover | "
                             "sqlite3 NEW.db")
    errno = next((e.errno for e in _chain(exc) if isinstance(e, OSError) and e.errno), None)
    if name.startswith("SQLITE_READONLY") or errno in (13, 30) or "readonly database" in text:
        return Diagnosis(f"the tracking store {path or store} is read-only ({detail(exc)})",
                         "make the file and its directory writable, or give a writable store with --tracking-uri")
    if name == "SQLITE_FULL" or errno == 28 or "disk is full" in text:
        room = ""
        if path is not None:
            with contextlib.suppress(OSError):
                room = f"; {shutil.disk_usage(path.parent).free // 2**20} MiB free"
        return Diagnosis(f"the disk holding the tracking store {path or store} is full ({detail(exc)}{room})",
                         "free space there, or give a store on another disk with --tracking-uri")
    return Diagnosis(f"the tracking store {store} failed ({detail(exc)})", CHECK)


def store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a store failing rather than a bug: an error of
    ``sqlite3``, the operating system, MLflow or SQLAlchemy (the last two only if loaded)."""
    kinds = _store_errors(mlflow=True)
    return any(isinstance(e, kinds) for e in _chain(exc))


def _store_errors(mlflow: bool) -> tuple[type, ...]:
    """The exception types a failing store raises: ``sqlite3``'s, the operating system's,
    SQLAlchemy's and (``mlflow``) MLflow's, the last two only if loaded (a store error can only
    be theirs if they are)."""
    import sys

    kinds: list[type] = [sqlite3.Error, OSError]
    if mlflow and "mlflow" in sys.modules:
        from mlflow.exceptions import MlflowException

        kinds.append(MlflowException)
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import SQLAlchemyError

        kinds.append(SQLAlchemyError)
    return tuple(kinds)


def grid_fault(exc: BaseException, uri: str, started: list[str]) -> SuiteError:
    """The error that ends a grid whose store failed with ``exc``. ``started``: the ids of the
    runs the grid had started. Before any (the store refused the grid's first writes): a
    :class:`StoreError`, exit code 2. After: a :class:`StoreFailed`, exit code 1, that says how
    many of them the store holds as finished, read back from it where it is a local file."""
    if not started:
        return refused(exc, uri)
    path = sqlite_path(uri)
    kept = None if path is None or moved(path) else recorded(path, started)
    said = None if kept is None else f"{kept} of the {len(started)} runs this command started are recorded as finished"
    return failed(exc, uri, "the grid", said)


def refused(exc: BaseException, uri: str) -> StoreError:
    """The error for a store that failed before any run started (exit code 2)."""
    why = cause(exc, uri)
    return StoreError(f"{why.what}; no run was started: {why.todo}, then run the command again")


def failed(exc: BaseException, uri: str, during: str, said: str | None = None) -> StoreFailed:
    """The error for a store that failed while ``during`` ran (exit code 1). ``said``: what the
    store is known to hold (default: that what was committed before stays recorded, unless the
    store file was moved away, where the cause says where it is)."""
    why = cause(exc, uri)
    path = sqlite_path(uri)
    if said is None and not (path is not None and moved(path)):
        said = "what was committed before it stays recorded"
    return StoreFailed(f"the tracking store {describe(uri)} failed while {during} ran: {why.what}"
                       f"{'; ' + said if said else ''}: {why.todo}, then run the same command again to run the rest")


def optuna_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is Optuna's storage failing (its database or journal), not the tracking
    store and not a bug: Optuna's ``StorageInternalError``, or a store error (``sqlite3``, the
    operating system's, SQLAlchemy's) raised in a frame of ``optuna/storages``; followed through
    what raised it (``__cause__``, SQLAlchemy's ``orig``), not through what it was raised while
    handling. Anything else (a ``TypeError``, a ``KeyError`` from a missing study, Optuna's
    ``UpdateFinishedTrialError``) is not."""
    kinds = _store_errors(mlflow=False)
    e: BaseException | None = exc
    for _ in range(10):
        if e is None:
            return False
        if type(e).__name__ == "StorageInternalError" and type(e).__module__.startswith("optuna"):
            return True
        if isinstance(e, kinds) and _raised_in_optuna_storages(e):
            return True
        orig = getattr(e, "orig", None)
        e = orig if isinstance(orig, BaseException) else e.__cause__
    return False


def _raised_in_optuna_storages(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if _OPTUNA_STORAGES in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


_OPTUNA_STORAGES = "/optuna/storages/"


def storage_failed(exc: BaseException, storage: str | None, during: str | None = None) -> str:
    """"the Optuna storage WHERE failed [while DURING ran] (REASON)": the driver's reason, as
    Optuna's ``StorageInternalError`` says only that a commit failed."""
    from suite.stores import normalize_storage

    root = next((e for e in _chain(exc) if getattr(e, "orig", None) is not None or isinstance(e, OSError)), exc)
    when = f" while {during} ran" if during else ""
    return f"the Optuna storage {describe(normalize_storage(storage))} failed{when} ({detail(root)})"


STORAGE_TODO = "check the storage and --storage"


def storage_fault(exc: BaseException, storage: str | None, during: str | None) -> SuiteError:
    """The error for an Optuna storage that failed with ``exc``: before the first run (``during``
    None) a :class:`StoreError`, exit code 2; while ``during`` ran a :class:`StoreFailed`, exit
    code 1 (Optuna commits each trial as it ends, so what was committed before stays)."""
    if during is None:
        return StoreError(f"{storage_failed(exc, storage)}; no trial was started: {STORAGE_TODO}, then run the "
                          "command again")
    return StoreFailed(f"{storage_failed(exc, storage, during)}; the trials committed before stay recorded: "
                       f"{STORAGE_TODO}, then run the same command again to run the rest")


@contextlib.contextmanager
def storage_named(storage: str | None) -> Iterator[None]:
    """Around a worker's job: an Optuna storage that fails there becomes a :class:`StoreFailed`
    whose line names it and the driver's reason (the pool reports that line as the job's
    trouble); any other error passes through."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, SuiteError) or not optuna_storage_failure(exc):
            raise
        raise StoreFailed(f"{storage_failed(exc, storage)}: {STORAGE_TODO}") from None


@contextlib.contextmanager
def told(uri: str | None, during: str | None = None, *, storage: str | None | bool = False) -> Iterator[None]:
    """Around part of a command: a store failure there becomes one line. ``during`` None (what
    comes before the first run): :func:`refused`, exit code 2; else (``during`` names what runs,
    e.g. ``"the tuning"``): :func:`failed`, exit code 1. ``storage``: the Optuna storage the part
    uses (None: the default one; False: none), so that its failures are told as the storage's
    (:func:`storage_fault`), not the tracking store's."""
    try:
        yield
    except (KeyboardInterrupt, SuiteError):
        raise
    except Exception as exc:
        if storage is not False and optuna_storage_failure(exc):
            raise storage_fault(exc, storage or None, during) from None
        if not store_failure(exc):
            raise
        uri = resolve_tracking_uri(uri)
        raise (refused(exc, uri) if during is None else failed(exc, uri, during)) from None


def recorded(path: Path, run_ids: list[str]) -> int | None:
    """How many of ``run_ids`` the sqlite store at ``path`` holds as finished (a ``suite.status``
    that counts as done, and no longer RUNNING); None if it cannot be read."""
    from suite.vocab import DONE_STATUSES, TAG_STATUS

    n = 0
    done = ", ".join("?" for _ in DONE_STATUSES)
    try:
        with _read_only(path) as db:
            for i in range(0, len(run_ids), 400):
                chunk = run_ids[i : i + 400]
                marks = ", ".join("?" for _ in chunk)
                (count,) = db.execute(
                    f"SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE r.run_uuid IN ({marks}) "
                    f"AND r.status != 'RUNNING' AND t.key = ? AND t.value IN ({done})",
                    [*chunk, TAG_STATUS, *DONE_STATUSES]).fetchone()
                n += count
    except sqlite3.Error:
        return None
    return n


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        orig = getattr(exc, "orig", None)
        if isinstance(orig, BaseException):
            yield orig
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def _name(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    try:
        yield db
    finally:
        db.close()
