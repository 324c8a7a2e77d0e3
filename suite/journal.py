"""The Optuna journal file as ``suite tune`` writes it: every record at once, fsync only where it counts.

Optuna's :class:`~optuna.storages.journal.JournalFileBackend` fsyncs every record it appends. A
trial writes some twenty records (its parameters, user attributes, every intermediate value the
pruner sees), so at about 5 ms per fsync on this machine the journal's fsyncs, not the sampler,
were most of a tuning population's time in Optuna. :class:`JournalBackend` writes each record to
the file at once, under the same lock (other processes read it at once: the page cache is
shared), and fsyncs only records that change what a study holds for good: studies created or
deleted, study attributes, and a trial told finished. fsync flushes the whole file, so when a
trial is told finished everything it wrote before is durable too; what a power cut can take is
the tail of a trial still running (or its claim), which is run again anyway, and slots
enqueued since, which the next `suite tune` tops up.

Off switch: ``SUITE_JOURNAL_FSYNC=every`` (or an Optuna without the private lock helper this
module uses) gives Optuna's own backend, which fsyncs every record: :func:`backend`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

try:  # Optuna 5's private helpers; without them Optuna's own backend serves (see backend())
    from optuna.storages.journal._file import get_lock_file
    from optuna.storages.journal._storage import JournalOperation
except ImportError:  # pragma: no cover - an Optuna that moved them
    get_lock_file = JournalOperation = None  # type: ignore[assignment,misc]

FSYNC_ENV = "SUITE_JOURNAL_FSYNC"  # "every": Optuna's backend, an fsync per record

DURABLE_OPS = frozenset() if JournalOperation is None else frozenset({
    JournalOperation.CREATE_STUDY, JournalOperation.DELETE_STUDY, JournalOperation.SET_STUDY_USER_ATTR,
    JournalOperation.SET_STUDY_SYSTEM_ATTR, JournalOperation.DISCARD_TRIALS})


def durable(log: dict[str, Any]) -> bool:
    """Whether ``log`` must survive a power cut: :data:`DURABLE_OPS`, and a trial told finished
    (a claim needs no fsync: a claim lost with the power leaves the trial waiting, to be claimed again)."""
    op = log.get("op_code")
    if op == JournalOperation.SET_TRIAL_STATE_VALUES:
        return TrialState(log["state"]).is_finished()
    return op in DURABLE_OPS


class JournalBackend(JournalFileBackend):
    """A journal file backend that fsyncs only :data:`DURABLE_OPS` records (see the module)."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        with get_lock_file(self._lock), open(self._file_path, "ab") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            if any(durable(log) for log in logs):
                os.fsync(f.fileno())


def backend(path: str, lock: Any) -> JournalFileBackend:
    """The journal backend for ``path``: :class:`JournalBackend`, or Optuna's own where
    ``SUITE_JOURNAL_FSYNC=every`` asks for it or this Optuna lacks the helpers it needs."""
    if os.environ.get(FSYNC_ENV, "").strip().lower() == "every" or get_lock_file is None:
        return JournalFileBackend(path, lock_obj=lock)
    return JournalBackend(path, lock_obj=lock)
