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

Bursts: every record Optuna appends takes the journal's lock (a symlink made and removed) and
opens the file, and those were about 40% of a tuning's Optuna phase (``suite tune --problem
logistic``: 0.4 s of 1.1 s, some 4,000 records). Inside :func:`burst` the lock, the open file and
the fsync are taken once for all the records a run of calls writes with no training and no
tracking between them: a trial's proposal and attributes, one evaluation's reports to the
pruners of a whole stack, a trial's conclusion, a population's claims and its tells, the slots
enqueued. Readers never take the lock (Optuna reads whole lines only), so other processes see
each record at once as before; other writers wait for the burst, as they wait for one record
(Optuna breaks a lock whose journal has not changed for its grace period, 30 s: a burst must
stay short). A burst takes the lock only once it writes, and fsyncs once at its end if a durable
record was in it: a trial told finished is on disk when the burst returns.

Off switches: ``SUITE_JOURNAL_FSYNC=every`` (or an Optuna without the private lock helper this
module uses) gives Optuna's own backend, which fsyncs every record: :func:`backend`.
``SUITE_JOURNAL_BURST=0`` takes the lock for each record again.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import IO, Any

from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

try:  # Optuna 5's private helpers; without them Optuna's own backend serves (see backend())
    from optuna.storages.journal._file import get_lock_file
    from optuna.storages.journal._storage import JournalOperation
except ImportError:  # pragma: no cover - an Optuna that moved them
    get_lock_file = JournalOperation = None  # type: ignore[assignment,misc]

FSYNC_ENV = "SUITE_JOURNAL_FSYNC"  # "every": Optuna's backend, an fsync per record
BURST_ENV = "SUITE_JOURNAL_BURST"  # "0": the lock taken for each record, bursts or not

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


class _Burst:
    """A journal file's burst in this process, shared by every backend on that file (two would
    otherwise each wait for the lock the other holds) and by every thread: while the burst holds
    the lock, any thread's records go to its open file; ``mutex`` guards each write only, so no
    thread waits for a burst to end (one that did could hold Optuna's storage lock the burst needs)."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.depth = 0  # the bursts open, in all threads
        self.mine = threading.local()  # .depth: the bursts open in the calling thread
        self.held: contextlib.ExitStack | None = None  # once the burst wrote: the lock and the file
        self.file: IO[bytes] | None = None
        self.unsynced = False  # a durable record written in this burst, not yet fsynced

    def end(self, quiet: bool) -> None:
        """One burst ends (under ``mutex``); the last lets go of the lock, after one fsync if a
        durable record was written. ``quiet``: an exception is on its way out, which an fsync or
        a release that fails must not replace."""
        self.depth -= 1
        self.mine.depth -= 1
        held = self.held
        if self.depth or held is None:
            return
        try:
            with held:  # releases the lock and closes the file, whatever happens inside
                f, unsynced = self.file, self.unsynced
                self.held, self.file, self.unsynced = None, None, False
                if unsynced and f is not None:
                    os.fsync(f.fileno())
        except Exception:
            if not quiet:
                raise


_BURSTS: dict[str, _Burst] = {}  # journal file (real path) -> its burst in this process
_BURSTS_LOCK = threading.Lock()


class JournalBackend(JournalFileBackend):
    """A journal file backend that fsyncs only :data:`DURABLE_OPS` records, and writes a
    :meth:`burst`'s records under one lock (see the module)."""

    def __init__(self, file_path: str, lock_obj: Any = None) -> None:
        super().__init__(file_path, lock_obj=lock_obj)
        with _BURSTS_LOCK:
            self._burst = _BURSTS.setdefault(os.path.realpath(file_path), _Burst())

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        sync = any(durable(log) for log in logs)
        b = self._burst
        with b.mutex:
            if b.depth:
                if b.held is None:
                    with contextlib.ExitStack() as held:
                        held.enter_context(get_lock_file(self._lock))
                        b.file = held.enter_context(open(self._file_path, "ab"))
                        b.held = held.pop_all()
                assert b.file is not None
                b.file.write(data)
                b.file.flush()  # other processes read it at once
                if sync and not getattr(b.mine, "depth", 0):  # a thread outside the burst: durable now
                    os.fsync(b.file.fileno())
                else:
                    b.unsynced = b.unsynced or sync
                return
            with get_lock_file(self._lock), open(self._file_path, "ab") as f:
                f.write(data)
                f.flush()
                if sync:
                    os.fsync(f.fileno())

    @contextlib.contextmanager
    def burst(self) -> Iterator[None]:
        """Write the records appended inside (through any backend on this file, from any thread)
        under one lock, taken at the first of them, with one fsync at the end if one of them is
        durable; bursts that overlap join (the lock is let go when the last ends)."""
        b = self._burst
        with b.mutex:
            b.depth += 1
            b.mine.depth = getattr(b.mine, "depth", 0) + 1
        try:
            yield
        except BaseException:
            with b.mutex:
                b.end(quiet=True)
            raise
        with b.mutex:
            b.end(quiet=False)


@contextlib.contextmanager
def burst(*stores: Any) -> Iterator[None]:
    """Inside: the records that the given Optuna storages (or the storages of the given
    studies) append to journal files of this module's backend are written as one burst per file
    (see the module). A storage of another kind (a database), and the off switch
    ``SUITE_JOURNAL_BURST=0``: nothing changes."""
    if os.environ.get(BURST_ENV, "").strip() == "0":
        yield
        return
    storages = [getattr(s, "_storage", s) for s in stores]  # a study's storage (Optuna keeps it private)
    backends = {id(b._burst): b for s in storages if isinstance(b := getattr(s, "_backend", None), JournalBackend)}
    with contextlib.ExitStack() as stack:
        for b in backends.values():
            stack.enter_context(b.burst())
        yield


def backend(path: str, lock: Any) -> JournalFileBackend:
    """The journal backend for ``path``: :class:`JournalBackend`, or Optuna's own where
    ``SUITE_JOURNAL_FSYNC=every`` asks for it or this Optuna lacks the helpers it needs."""
    if os.environ.get(FSYNC_ENV, "").strip().lower() == "every" or get_lock_file is None:
        return JournalFileBackend(path, lock_obj=lock)
    return JournalBackend(path, lock_obj=lock)
