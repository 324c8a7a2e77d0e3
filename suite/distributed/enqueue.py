"""Enqueueing a study's trials once, however many processes and machines do it at once.

A study's work is a set of keys (a tuning slot ``slot-k``, a grid's spec hash), each to be held by
one trial (:func:`suite.distributed.worker.holds_key`). Whoever submits the study enqueues the
keys that no trial holds yet: the first submission all of them, a rerun the ones lost or added
(``--trials`` raised). Reading what is held and enqueueing what is missing is a check-then-act,
so it runs under an exclusive lock that the storage itself offers, released by the storage or the
kernel when its holder dies (a process killed mid-enqueue leaves a study that the next
submission, waiting on the lock or started later, fills up):

- PostgreSQL: a session advisory lock (``pg_advisory_lock``) on a key derived from the study's
  name, held on a connection of its own. The server drops it when that connection closes, and,
  with the session's TCP keepalives set here, within about a minute when the holder's machine
  vanishes.
- SQLite database file: ``fcntl.flock`` on ``FILE.enqueue.lock`` beside it.
- Journal file: ``fcntl.flock`` on the journal file itself. (Optuna's own journal lock, a
  symlink, cannot be held across its appends, and one left by a killed process is broken only
  after its grace period.)
- Other databases (MySQL, …): no lock. The guard at claim time
  (:func:`suite.distributed.worker.duplicate_of`) still runs every key once, but two submissions
  racing may leave the later copies in the study as failed trials (``suite.duplicate_of``).

Waiting for the lock is bounded by :data:`LOCK_TIMEOUT`; past it a :class:`StoreError` says who
holds it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

from suite import journal
from suite.distributed.worker import holds_key
from suite.errors import StoreError
from suite.stores import CONNECT_TIMEOUT, describe, exclusive_flock, is_database, normalize_storage, sqlite_path
from suite.vocab import STUDY_READY, TRIAL_KEY

LOCK_TIMEOUT = 120  # seconds to wait for another process enqueueing the same study
KEEPALIVE = {"tcp_keepalives_idle": 20, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 4}


def lock_key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key for ``study_name`` (the same in every process)."""
    digest = hashlib.sha256(f"sgd-suite enqueue {study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def enqueue_lock(storage_url: str | None, study_name: str) -> Iterator[None]:
    """Hold the storage's exclusive lock for enqueueing ``study_name``'s trials (see the module
    docstring for what it is on each storage)."""
    url = normalize_storage(storage_url)
    if not is_database(url):
        with _flock(Path(url).resolve(), f"the journal file {url!r}"):
            yield
        return
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        with _advisory_lock(url, study_name):
            yield
    elif backend == "sqlite" and (path := sqlite_path(url)) is not None and str(path) not in ("", ":memory:"):
        with _flock(path.with_name(path.name + ".enqueue.lock"), f"the storage {url!r}"):
            yield
    else:
        yield


@contextmanager
def _flock(path: Path, what: str) -> Iterator[None]:
    try:  # a journal file exists (its storage is open); an SQLite file's lock file may not yet
        fd = os.open(path, os.O_RDONLY) if path.exists() else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StoreError(f"cannot lock {what} to enqueue trials ({path}: {exc.strerror or exc}); "
                         "check that its folder is writable") from None
    busy = (f"{what} stayed locked by another process enqueueing trials for {LOCK_TIMEOUT} s ({path}); "
            "check that no suite process hangs")
    with exclusive_flock(fd, LOCK_TIMEOUT, busy):
        yield


@contextmanager
def _advisory_lock(url: str, study_name: str) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": CONNECT_TIMEOUT})
    key = lock_key(study_name)
    try:
        with engine.connect() as conn:
            try:
                for name, value in {**KEEPALIVE, "lock_timeout": f"{LOCK_TIMEOUT}s"}.items():
                    conn.execute(text(f"SET {name} = '{value}'"))
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            except SQLAlchemyError as exc:
                reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
                raise StoreError(f"cannot lock study {study_name!r} in {describe(url)} to enqueue its trials "
                                 f"({reason}); check that no suite process hangs holding it") from None
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def enqueue_missing(study: optuna.Study, wanted: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
    """Enqueue a trial (no params; user attributes ``attrs`` and ``suite.key``) for each
    ``(key, attrs)`` of ``wanted`` whose key no trial of ``study`` holds, and mark the study
    ready; returns how many were enqueued. Call it holding :func:`enqueue_lock` for the study."""
    held = {t.user_attrs.get(TRIAL_KEY) for t in study.get_trials(deepcopy=False) if holds_key(t)}
    missing = [(key, attrs) for key, attrs in wanted if key not in held]
    with journal.burst(study):  # on a journal file: one lock for all of them
        for key, attrs in missing:
            study.enqueue_trial({}, user_attrs={**attrs, TRIAL_KEY: key})
    if not study.user_attrs.get(STUDY_READY):
        study.set_user_attr(STUDY_READY, True)
    return len(missing)
