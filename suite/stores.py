"""Where studies and runs live: open an Optuna storage and check an MLflow tracking URI, each
failing fast with a one-line :class:`StoreError` (exit code 2) instead of hanging.

Used by ``suite run``, ``suite tune`` and ``suite worker``:

- An Optuna storage is either a database URL that SQLAlchemy understands (``postgresql://user:
  password@host:5432/db`` for several machines, ``sqlite:///file.db``) or the path of a journal
  file (``*.journal``; Optuna's backend that is safe for several processes on one host).
  Database connections time out after :data:`CONNECT_TIMEOUT` seconds. With a database, trials
  send heartbeats (Optuna's ``heartbeat_interval``); a trial whose worker stopped beating for
  ``grace`` seconds is failed by the next worker that looks, and retried once more as a WAITING
  copy (``RetryHeartbeatStaleTrialCallback``) with the same params and user attributes.
- An MLflow tracking URI that points at a server (``http(s)://``) is probed at ``/health`` and
  one that points at a database is connected to, both with the same short timeout, so an
  unreachable server is reported within seconds rather than after MLflow's minutes of retries.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.errors import StoreError

CONNECT_TIMEOUT = 5  # seconds, for every connection attempt made here
DEFAULT_STORAGE = ".suite/optuna.journal"
JOURNAL_SUFFIXES = (".journal", ".log")
DEFAULT_HEARTBEAT = 10  # seconds between heartbeats of a running trial (database storages)
JOURNAL_LOCK_GRACE = 30  # seconds: a journal lock older than this was left by a killed process
MAX_RETRY = 3  # how often a trial of a dead worker is retried before it stays failed


@dataclass(frozen=True)
class HeartbeatPolicy:
    """Optuna heartbeat settings of a database storage: beat every ``interval`` seconds; a
    trial silent for ``grace`` seconds (default 3 × interval) is failed and retried up to
    ``max_retry`` times."""

    interval: int = DEFAULT_HEARTBEAT
    grace: int | None = None
    max_retry: int | None = MAX_RETRY

    @property
    def grace_period(self) -> int:
        return self.grace if self.grace is not None else 3 * self.interval


def describe(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}" if "@" in rest else url


MAX_DETAIL = 300  # characters of a store's own message kept in a line


def one_line(exc: BaseException) -> str:
    """A store error's own message on one line (the driver's, under SQLAlchemy's wrapper), without
    SQLAlchemy's statement and background link, cut at a word after :data:`MAX_DETAIL` characters."""
    text = str(getattr(exc, "orig", None) or getattr(exc, "message", None) or exc)
    text = " ".join(text.split()).split(" [SQL: ")[0].split(" (Background on this error")[0]
    return cut(text or type(exc).__name__)


def cut(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut at a word boundary after ``limit`` characters (an ellipsis marks the cut)."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"



@contextmanager
def refused(errors: type[BaseException] | tuple[type[BaseException], ...],
            message: Callable[[Any], str]) -> Iterator[None]:
    """Turn ``errors`` raised in the block into one :class:`StoreError` line, ``message(exc)``,
    without the library's chain (the user sees what to fix, not a traceback)."""
    try:
        yield
    except errors as exc:
        raise StoreError(message(exc)) from None


def normalize_storage(url: str | None) -> str:
    """Check the form of an Optuna storage ``url`` (None: :data:`DEFAULT_STORAGE`) and return it
    canonical (``postgres://`` becomes ``postgresql://``). Raises :class:`StoreError`."""
    if url is not None and not url.strip():
        raise StoreError("--storage is empty: give a database URL or a journal file path (or leave it out)")
    url = (url or DEFAULT_STORAGE).strip()
    if "://" not in url:
        if not url.endswith(JOURNAL_SUFFIXES):
            raise StoreError(
                f"--storage {url!r} is malformed: give a database URL such as "
                "postgresql://user:password@host:5432/db or sqlite:///optuna.db, "
                f"or a journal file path ending in {' or '.join(JOURNAL_SUFFIXES)}"
            )
        return url
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    with refused(ImportError, lambda exc: f"--storage {describe(url)!r} needs a database driver that is not "
                 f"installed ({exc.name}); for PostgreSQL: pip install 'sgd-suite[postgres]'"), \
            refused((ArgumentError, NoSuchModuleError, ValueError), lambda exc: f"--storage {describe(url)!r} is "
                    f"malformed ({one_line(exc)}): give a database URL such as postgresql://user:password@host:5432/db "
                    "or sqlite:///optuna.db, or a journal file path"):
        parsed = make_url(url)
        parsed.get_dialect()
    if parsed.get_backend_name() != "sqlite" and not parsed.host:
        raise StoreError(f"--storage {describe(url)!r} is malformed: it names no host")
    return url


def check_name(value: str | None, option: str) -> None:
    """Refuse a blank name (``--experiment``, ``--study``) or one with control characters."""
    if value is None:
        return
    if option == "--experiment":
        check_experiment_name(value, option)
    if not value.strip() or value != value.strip() or any(ord(ch) < 32 for ch in value):
        raise StoreError(f"{option} {value!r} is blank or holds blanks or control characters: give a plain name")


def is_database(url: str) -> bool:
    """Whether a (normalized) storage URL is a database rather than a journal file."""
    return "://" in url


def _engine_kwargs(url: str) -> dict:
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 30}}
    # psycopg2 and the MySQL drivers all accept ``connect_timeout`` in seconds.
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}, "pool_pre_ping": True}


def repair_journal(path: Path, lock) -> bool:
    """Drop a cut last line of the Optuna journal file ``path`` (a process killed while it
    appended), under the journal's own ``lock``; True if one was dropped. Optuna appends each
    batch of log lines whole, under that lock, so a file that does not end with a newline once
    the lock is held holds an incomplete last write; Optuna would refuse every later line."""
    if not _cut(path):
        return False
    from optuna.storages.journal._file import get_lock_file

    with get_lock_file(lock):
        if not _cut(path):
            return False
        data = path.read_bytes()
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())
    return True


def _cut(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def open_storage(url: str | None, heartbeat: HeartbeatPolicy | None = None):
    """Open the Optuna storage at ``url`` (None: :data:`DEFAULT_STORAGE`).

    A database gets a connect timeout and, with ``heartbeat``, Optuna's heartbeat and retry of
    stale trials. A journal file gets its directory created. Raises :class:`StoreError` within
    about :data:`CONNECT_TIMEOUT` seconds when the database is unreachable or refuses us.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = normalize_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" chatter
    if not is_database(url):
        from optuna.storages.journal import JournalFileSymlinkLock

        from suite import journal

        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise StoreError(f"the journal file {url!r} is a directory: give a file path")
            # an absolute path: the lock is a symlink to the journal, and Optuna's release of a lock
            # left by a killed process stats it; a relative target (.suite/optuna.journal) resolves
            # from the symlink's own folder, the stat fails, and every waiter spins forever
            path = path.resolve()
            lock = JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE)
            repair_journal(path, lock)
            return optuna.storages.JournalStorage(journal.backend(str(path), lock))  # fsyncs what counts
        except OSError as exc:
            raise StoreError(f"cannot open the journal file {url!r}: {exc.strerror or exc}") from None
    kwargs: dict = {}
    last: Exception | None = None
    for _attempt in range(3):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat is not None:
                    kwargs = dict(
                        heartbeat_interval=heartbeat.interval,
                        grace_period=heartbeat.grace_period,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=heartbeat.max_retry
                        ),
                    )
                with store_lock(url):  # a fresh sqlite file: one process creates the tables
                    return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
        except SQLAlchemyError as exc:
            from sqlalchemy.exc import IntegrityError, ProgrammingError

            # Several workers creating the tables of a fresh database at once may collide
            # (a duplicate key in PostgreSQL's catalog); the tables exist on the next try.
            if not isinstance(exc, (IntegrityError, ProgrammingError)):
                raise StoreError(
                    f"cannot reach the Optuna storage {describe(url)!r}: {one_line(exc)}; "
                    "check the URL, that the database server runs and accepts this user"
                ) from None
            last = exc
        except optuna.exceptions.StorageInternalError as exc:
            raise StoreError(f"cannot use the Optuna storage {describe(url)!r}: {one_line(exc)}") from None
    raise StoreError(f"cannot set up the Optuna storage {describe(url)!r}: {one_line(last)}")


TRACKING_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "http", "https", "databricks")
SQLITE_MAGIC = b"SQLite format 3\x00"
STORE_LOCK_TIMEOUT = 120  # seconds to wait for another process creating or migrating the same store


def _sqlite_fix(path: str) -> str:
    target = Path(path).expanduser().resolve()
    if target.suffix != ".db":
        target = target / "mlflow.db"
    return f"sqlite:///{target}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (also ``sqlite:///file:PATH?...&uri=true``,
    SQLAlchemy's form for sqlite's own URI parameters); None for any other URI."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() != "sqlite":
        return None
    path = rest[1:] if rest.startswith("/") else rest
    path, _, query = path.partition("?")
    if path.startswith("file:") and "uri=true" in query.lower().split("&"):
        path = path.removeprefix("file:")
    return Path(path) if path else None


def read_only_uri(uri: str) -> bool:
    """Whether a ``sqlite:`` URI asks for the store read-only (``mode=ro`` or ``immutable=1``)."""
    if not uri.lower().startswith("sqlite:"):
        return False
    query = uri.partition("?")[2].lower().split("&")
    return "mode=ro" in query or "immutable=1" in query


MAX_EXPERIMENT_NAME = 500  # MLflow's limit (mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH)


def check_experiment_name(name: str, option: str = "the experiment name") -> None:
    """Refuse an experiment name MLflow would refuse: longer than :data:`MAX_EXPERIMENT_NAME`."""
    if len(name) > MAX_EXPERIMENT_NAME:
        raise StoreError(f"{option} {name[:40]!r}… is {len(name)} characters long; MLflow allows at most "
                         f"{MAX_EXPERIMENT_NAME}: give a shorter name")


def check_tracking_shape(uri: str) -> None:
    """Raise :class:`StoreError` (a one-line fix-it message) unless ``uri`` has the shape of a
    usable MLflow tracking URI: ``sqlite:///FILE`` in an existing directory, a database URL, or a
    server (``http(s)://HOST``). Plain paths and ``file:`` stores are refused: MLflow 3's
    filesystem backend is in maintenance mode. Touches nothing."""
    if not uri or not uri.strip():
        raise StoreError("--tracking-uri is empty: give sqlite:///PATH/mlflow.db, a database URL or http://HOST:PORT")
    if uri != uri.strip() or any(ch in uri for ch in "\n\r\t\x00"):
        raise StoreError(f"--tracking-uri {uri!r} holds blanks or control characters")
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme == "file":
        path = rest if sep else uri.removeprefix("file:")
        raise StoreError(
            f"--tracking-uri {uri!r} is a filesystem store, and MLflow 3's filesystem backend is in maintenance "
            f"mode: use a database file instead, e.g. --tracking-uri {_sqlite_fix(path or '.')}"
        )
    if scheme.split("+")[0] not in TRACKING_SCHEMES:
        raise StoreError(
            f"--tracking-uri {describe(uri)!r} has an unknown scheme {scheme!r}: give sqlite:///PATH, "
            "postgresql://USER@HOST/DB or http(s)://HOST:PORT"
        )
    if scheme in ("http", "https") and not rest.split("/")[0]:
        raise StoreError(f"--tracking-uri {uri!r} names no host: give http(s)://HOST:PORT")
    if scheme != "sqlite":
        return
    if rest and not rest.startswith("/"):  # SQLAlchemy (so MLflow) refuses it: sqlite://HOST is no file
        raise StoreError(f"--tracking-uri {uri!r} is not a valid SQLite URL: give sqlite:///RELATIVE/PATH.db "
                         "(three slashes) or sqlite:////ABSOLUTE/PATH.db (four)")
    path = sqlite_path(uri)
    if path is None or str(path) in (":memory:", ""):
        raise StoreError(f"--tracking-uri {uri!r} names no database file: give sqlite:///PATH/mlflow.db")
    if path.is_dir():
        raise StoreError(f"--tracking-uri {uri!r} is a directory: give a file in it, e.g. {_sqlite_fix(str(path))}")
    if not path.parent.is_dir():
        raise StoreError(f"--tracking-uri {uri!r}: the directory {str(path.parent)!r} does not exist; create it first")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"--tracking-uri {uri!r}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
        if head and head != SQLITE_MAGIC:
            raise StoreError(f"--tracking-uri {uri!r}: {str(path)!r} is not an SQLite database")
    elif not os.access(path.parent, os.W_OK):
        raise StoreError(f"--tracking-uri {uri!r}: cannot create a database in {str(path.parent)!r} (not writable)")


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a local store while it is created or migrated, so that several
    processes starting at once on a fresh ``sqlite:///FILE`` (MLflow's schema migration, Optuna's
    tables) take turns instead of colliding. The lock is ``FILE.lock`` next to the database
    (``fcntl.flock``, released by the kernel if the holder dies); other stores need none here."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield  # a read-only directory: nothing can be created there, so nothing to race on
        return
    busy = f"the tracking store {uri!r} stayed locked by another process for {STORE_LOCK_TIMEOUT} s ({lock_path})"
    with exclusive_flock(fd, STORE_LOCK_TIMEOUT, busy):
        yield


@contextmanager
def exclusive_flock(fd: int, timeout: float, busy: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on the open file ``fd`` (closed on leaving, which releases
    it; the kernel releases it if the holder dies), waiting at most ``timeout`` seconds for
    another holder; past that a :class:`StoreError` with the message ``busy``."""
    import fcntl
    import time

    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(busy) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def quiet_store_logs() -> None:
    """MLflow's store logs its schema migration (INFO) and every database error with a traceback
    (ERROR) before raising it; the suite reports a failing store in one line of its own. Call it
    before MLflow opens or makes a store, and again after importing MLflow (its import sets the
    ``alembic`` logger's level).

    It also keeps MLflow from printing "View run … at: URL" on stdout for every run it ends on a
    tracking server (which breaks ``--format json``, and costs a request per run): the suite
    prints where its runs are itself."""
    import logging

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def check_tracking_uri(uri: str, *, write: bool = True) -> None:
    """Raise :class:`StoreError` within seconds if the MLflow tracking ``uri`` is malformed (see
    :func:`check_tracking_shape`), or is a server or a database that cannot be reached; with
    ``write`` (a command that logs runs), also if it asks for the store read-only."""
    check_tracking_shape(uri)
    if write and read_only_uri(uri):
        raise StoreError(f"--tracking-uri {uri!r} opens the store read-only (mode=ro or immutable=1), and this "
                         "command writes runs to it: drop that parameter, or give a writable store")
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=CONNECT_TIMEOUT) as resp:
                if resp.status != 200:
                    raise StoreError(f"the MLflow server at {uri} answered {resp.status} at /health")
        except urllib.error.HTTPError as exc:
            raise StoreError(
                f"the MLflow server at {uri} answered {exc.code} at /health: is it an MLflow tracking server?"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(
                f"cannot reach the MLflow tracking server {uri}: {reason}; start it (make server) "
                "or fix --tracking-uri / MLFLOW_TRACKING_URI"
            ) from None
        return
    if scheme and scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError

        with refused((SQLAlchemyError, ImportError, ValueError), lambda exc: "cannot reach the MLflow tracking "
                     f"database {describe(uri)!r}: {one_line(exc)}; fix --tracking-uri / MLFLOW_TRACKING_URI"):
            engine = create_engine(uri, connect_args={"connect_timeout": CONNECT_TIMEOUT})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()


def worker_label() -> str:
    """The label of this process (:func:`suite.owners.label`), as recorded on the trials and runs it works on."""
    from suite.owners import label

    return label()


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri`` if given, else ``MLFLOW_TRACKING_URI``, else MLflow's default."""
    if uri is not None:
        return uri  # as given, even empty: check_tracking_uri refuses a malformed one
    return os.environ.get("MLFLOW_TRACKING_URI") or _mlflow_default_uri()


def default_tracking_uri() -> str | None:
    """MLflow's default tracking URI, without importing MLflow: ``sqlite:///<cwd>/mlflow.db``,
    unless ``./mlruns`` holds a file store's experiments (then None: ask MLflow)."""
    try:
        with os.scandir("mlruns") as entries:
            for entry in entries:
                if entry.is_dir() and entry.name.isdigit() and os.path.lexists(os.path.join(entry.path, "meta.yaml")):
                    return None
    except OSError:
        pass
    path = os.path.abspath("mlflow.db")
    if any(ch in path for ch in "%?#") or not path.isascii():
        return None  # MLflow quotes such paths (pathname2url): let it name the store
    return "sqlite:///" + path


def _mlflow_default_uri() -> str:
    uri = default_tracking_uri()  # MLflow's own rule, without importing MLflow
    if uri is not None:
        return uri
    import mlflow

    return mlflow.get_tracking_uri()
