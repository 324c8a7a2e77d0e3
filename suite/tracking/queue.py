"""How and when a tracker's writes reach its store: batching, the writer process, recovery.

:class:`~suite.tracking.tracker.Tracker` decides what a run records and hands each call's writes
here as one :class:`~suite.tracking.records.PendingRun` (:meth:`WriteQueue.put`); evaluations go
through :meth:`WriteQueue.metrics`, its buffered path, where ``lr`` and ``epoch`` keep only the
points where their line bends (:mod:`suite.tracking.thin`; a run's last ones once it ends). The
queue chooses the write path:

- **MLflow's client** (a tracking server; an SQL store outside :meth:`WriteQueue.batched`): the
  record's writes are MLflow calls, in its order (create, params, artifacts, metrics with tags,
  status); evaluations are buffered and written at least every :data:`FLUSH_EVERY_S`, or when
  :data:`MAX_METRICS_PER_BATCH` are buffered, or with the run's next write. Inside
  :meth:`WriteQueue.batched` on a tracking server across a network (or any server with
  ``SUITE_TRACKING_ASYNC=1``), params, metrics, tags and artifacts are submitted without
  waiting and a status is set only once the run's batches are written, at :meth:`WriteQueue.commit`
  (:mod:`suite.tracking.server_writes`).
- **One transaction** (a local sqlite store :mod:`suite.tracking.direct` serves): each call's
  record is one transaction; inside :meth:`WriteQueue.writes`, all of one call's writes are.
- **Queued** (inside :meth:`WriteQueue.batched`, on an MLflow SQL store): every write is queued
  and :meth:`WriteQueue.commit` writes all the queued runs in one transaction
  (:mod:`suite.tracking.bulk`, or the direct store).
- **A writer process** (inside ``batched`` on a direct store, once one write has taken
  :data:`WRITER_AFTER_S` or more, or queued :data:`WRITER_MIN_ROWS` rows, on a machine with a core
  to spare): the writes go to :mod:`suite.tracking.writer` and training goes on while they are
  made. Queued writes are handed over whenever it is idle (at most every :data:`STREAM_EVERY_S`:
  a writer that is behind gets bigger batches, which it writes faster per row); reads, the end
  of ``batched`` and ``commit(wait=True)`` wait for them; :meth:`WriteQueue.after_write` runs a
  callback once what was committed so far is in the store. ``SUITE_TRACKING_WRITER=always|never``
  overrides the rule.

**Completed means written**: a failed write raises where the caller can see it, with the runs
that can be written written one by one (:meth:`WriteQueue.batched`); what a writer process did
not confirm is written again here (:meth:`WriteQueue._await_writer`), a run it did create not
created twice.

Imports: :mod:`suite.tracking` modules below it (records, bulk, direct, writer), the phase clock
and core reservation of :mod:`suite.exec`; MLflow only where its client is called.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from suite.exec import cores
from suite.exec.phases import CLOCK
from suite.tracking.bulk import SqlBulk
from suite.tracking.direct import DirectStore
from suite.tracking.records import RUNNING, Deferred, MetricRow, PendingRun, RunTag, to_mlflow
from suite.tracking.server_writes import ServerWrites, wanted
from suite.tracking.thin import THINNED, Straight
from suite.tracking.writer import WriterProcess, absorb, merge_runs

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit on one log_batch (metrics + params + tags <= 1000, tags <= 100)
FLUSH_EVERY_S = 10.0  # a run's buffered metrics are written at least this often (live curves in the UI)
STREAM_EVERY_S = 0.05  # with a writer process, queued writes are handed to it when it is idle, this often at most
WRITER_AFTER_S = 0.02  # a write inside batched() this slow moves the rest to a writer process
WRITER_MIN_ROWS = 2000  # and so does one of this many rows (sqlite here: 5-10 us a row, so 10-20 ms)
WRITER_ENV = "SUITE_TRACKING_WRITER"  # auto (the default), always, never

F = TypeVar("F", bound=Callable[..., Any])


def tracking(method: F) -> F:
    """Count the method's time to the ``tracking`` phase (:mod:`suite.exec.phases`)."""

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        CLOCK.enter("tracking")  # not CLOCK.phase: a generator's context costs 2 us, per metric logged
        try:
            return method(*args, **kwargs)
        finally:
            CLOCK.leave()

    return timed  # type: ignore[return-value]


class WriteQueue:
    """The writes of one tracker to one experiment (see the module docstring).

    ``client``: returns the tracker's ``MlflowClient`` (made on first use); ``direct``: the
    store :mod:`suite.tracking.direct` writes, or None where MLflow writes; ``tracking_uri``: the
    store's URI (a tracking server's writes inside :meth:`batched` may overlap,
    :func:`suite.tracking.server_writes.wanted`)."""

    def __init__(self, experiment_id: str, client: Callable[[], Any], direct: DirectStore | None, *,
                 tracking_uri: str = "") -> None:
        self.experiment_id = experiment_id
        self._client = client
        self._direct = direct
        self._pending: dict[str, list[MetricRow]] = {}  # run id -> metrics not written yet (plain tuples)
        self._straight = Straight()  # lr and epoch: their straight stretches as their ends (suite.tracking.thin)
        self._flushed: dict[str, float] = {}  # run id -> when its buffer was last written
        self._queue: dict[str, PendingRun] | None = None  # inside batched() or writes(): run id -> its queued writes
        self._bulk: SqlBulk | None = None
        self._committed = time.monotonic()
        self._writer: WriterProcess | None = None
        self._writer_done: Callable[[], Any] = lambda: None  # ends the writer process (once)
        self._writer_off = False  # a writer failed once: this queue writes itself from then on
        self._batched = False  # inside batched() (not a single call's writes())
        self._last_write_s = 0.0  # how long the last write in this process took
        self._server = wanted(tracking_uri)
        self._overlap: ServerWrites | None = None  # inside batched() on a tracking server

    @property
    def writer_pid(self) -> int | None:
        """The pid of the writer process writes are handed to now, or None while they are made here."""
        return self._writer.proc.pid if self._writer is not None else None

    # -- the entries -----------------------------------------------------------------------
    def put(self, record: PendingRun) -> str:
        """Write one call's ``record`` for its run, after the run's buffered evaluations; return the
        run's id (MLflow's, for a run its client creates)."""
        buffered = self._pending.pop(record.run_id, None) or []
        if record.status is not None and record.status != RUNNING:
            self._flushed.pop(record.run_id, None)  # ended: no more evaluations to time
            buffered += self._straight.release(record.run_id)  # its last lr and epoch (suite.tracking.thin)
        elif not record.create:
            self._flushed[record.run_id] = time.monotonic()
        if buffered:
            record.metrics = buffered + record.metrics
        if self._queue is not None:
            have = self._queue.get(record.run_id)
            if have is None:
                self._queue[record.run_id] = record
            else:
                absorb(have, record)
            return record.run_id
        if self._direct is not None:
            self._write([record])
            return record.run_id
        return self._client_write(record)

    @tracking
    def metrics(self, rows: Sequence[tuple[str, int, Mapping[str, float]]]) -> None:
        """Buffer evaluations, ``(run_id, step, metrics)`` each (values that are not numbers are
        no metrics), and write them when they are due (see the module docstring)."""
        ts = int(time.time() * 1000)
        straight = self._straight
        for run_id, step, metrics in rows:
            pending = self._pending.setdefault(run_id, [])
            for k, v in metrics.items():
                try:
                    point = (k, float(v), ts, step)  # a plain tuple: see records.MetricRow
                except (TypeError, ValueError):  # not a number: not a metric
                    continue
                if k in THINNED:
                    straight.add(run_id, point, pending)
                else:
                    pending.append(point)
        if not rows:
            return
        if self._queue is not None or self._direct is not None:
            if self._writer is not None:
                # the clock first: asking the writer takes its lock, once per metric logged otherwise
                due = time.monotonic() - self._committed >= STREAM_EVERY_S and self._writer.idle
            else:
                due = time.monotonic() - self._committed >= FLUSH_EVERY_S
            if due:
                with self.writes():
                    self.commit()
            return
        for run_id in dict.fromkeys(r[0] for r in rows):
            last = self._flushed.setdefault(run_id, time.monotonic())
            if len(self._pending.get(run_id, ())) >= MAX_METRICS_PER_BATCH or time.monotonic() - last >= FLUSH_EVERY_S:
                self.put(PendingRun(run_id))

    # -- MLflow's client -------------------------------------------------------------------
    def _client_write(self, record: PendingRun) -> str:
        """``record`` as MLflow's calls: create (with params, 100 a call), artifacts, metrics with
        tags in as few ``log_batch`` calls as MLflow's limits allow, status."""
        client, run_id = self._client(), record.run_id
        log_batch = client.log_batch if self._overlap is None else functools.partial(self._overlap.log_batch, client)
        if record.create:
            run_id = client.create_run(self.experiment_id, tags=record.create_tags).info.run_id
            for i in range(0, len(record.params), 100):
                log_batch(run_id, **to_mlflow(params=record.params[i : i + 100]))
        for name, content in record.artifacts.items():
            if self._overlap is not None:
                self._overlap.call(run_id, _log_artifact, client, run_id, content, name)
            else:
                _log_artifact(client, run_id, content, name)
        metrics, tags = record.metrics, [RunTag(k, v) for k, v in record.tags.items()]
        while metrics or tags:
            room = MAX_METRICS_PER_BATCH - len(tags)
            log_batch(run_id, **to_mlflow(metrics=metrics[:room], tags=tags))
            metrics, tags = metrics[room:], []
        if self._overlap is not None and record.status is not None:
            self._overlap.set_status(run_id, record.status, record.end_time)  # once its batches are written
        elif record.status == RUNNING:
            client.update_run(run_id, status=RUNNING)  # reopened: its end time kept
        elif record.status is not None:
            client.set_terminated(run_id, record.status, end_time=record.end_time)
        return run_id

    # -- one transaction, queued, batched ------------------------------------------------------
    @contextmanager
    def writes(self) -> Iterator[None]:
        """Around one call's writes: on a direct store outside :meth:`batched`, they are queued
        and written together (one transaction) when the call returns. Elsewhere a no-op."""
        if self._queue is not None or self._direct is None:
            yield
            return
        self._queue = {}
        try:
            yield
            queued = list(self._queue.values())
        finally:
            self._queue = None
        self._write(queued)

    def _queued(self, run_id: str) -> PendingRun:
        assert self._queue is not None
        return self._queue.setdefault(run_id, PendingRun(run_id))

    def _write(self, records: Sequence[PendingRun]) -> None:
        if self._writer is not None:  # after what the writer process has (batched(settle=False))
            self.settle()
        if self._direct is not None:
            t0 = time.perf_counter()
            self._direct.write(self.experiment_id, records)
            self._last_write_s = time.perf_counter() - t0
        else:
            assert self._bulk is not None
            self._bulk.write(self._client(), records)

    @contextmanager
    def batched(self, *, settle: bool = True) -> Iterator[None]:
        """Queue every run write made inside, to be written by :meth:`commit` (by the caller at
        safe points, here when :data:`FLUSH_EVERY_S` has passed, before any read of the store, and
        on the way out, an exception included). Only on an MLflow SQL store; elsewhere (a
        tracking server) the writes are made as they come.

        ``settle=False``: a writer process may still be writing on the way out (not after an
        exception); the next read or write, or :meth:`settle`, waits for it."""
        if self._queue is not None or self._overlap is not None:
            yield
            return
        if self._server:
            yield from self._overlapped()
            return
        if self._direct is None and self._bulk is None:
            self._bulk = SqlBulk.for_client(self._client(), self.experiment_id)
        if self._direct is None and self._bulk is None:
            yield
            return
        self._queue, self._committed, self._batched = {}, time.monotonic(), True
        try:
            if self._writer_mode() == "always":
                self._start_writer()
            yield
        except BaseException:
            try:
                self.commit(wait=True)  # what finished before the failure stays recorded
            except Exception:  # noqa: BLE001 - the original failure is the one to report
                self._commit_each()
            self._stop_writer()
            raise
        else:
            try:
                self.commit(wait=settle)
            except BaseException:
                self._commit_each()  # the runs that can be written are, and the failure is reported
                self._stop_writer()
                raise
            if settle:
                self._stop_writer()
        finally:
            self._queue, self._batched = None, False

    @tracking
    def commit(self, *, wait: bool = False) -> None:
        """Write everything queued inside :meth:`batched` in one transaction.

        With a writer process the transaction is its to make: ``wait`` returns only once it is
        made (and raises if it failed); without ``wait`` a failure is raised by a later call.
        With overlapped server writes it waits for the writes submitted, then sets the statuses kept back."""
        if self._overlap is not None and self._overlap.pending:
            self._overlap.drain(self._client())
        if self._queue is not None:
            for run_id, metrics in self._pending.items():
                self._queued(run_id).metrics += metrics
            self._pending.clear()
            queued, self._queue = list(self._queue.values()), {}
            try:
                if self._writer is None and self._writer_mode() == "auto" and _rows(queued) >= WRITER_MIN_ROWS:
                    self._start_writer()
                if self._writer is not None:
                    if any(not r.empty for r in queued):
                        self._submit(queued)
                else:
                    self._write(queued)
                    if self._last_write_s >= WRITER_AFTER_S and self._writer_mode() == "auto":
                        self._start_writer()  # later writes go to a writer process (see the module docstring)
            except BaseException:
                if self._queue is not None:  # not written: still queued (see batched()), after what the
                    # writer gave back meanwhile (older)
                    self._queue = {r.run_id: r for r in merge_runs([*self._queue.values(), *queued])}
                raise
            self._committed = time.monotonic()
        if self._writer is not None:
            self._writer.poll()
            if wait or self._writer.failed:
                self._await_writer()

    @tracking
    def settle(self) -> None:
        """Wait until every write is in the store (see ``batched(settle=False)``), and raise if
        one failed (the runs that can be written are, one by one)."""
        self.commit(wait=True)
        if self._queue is None:
            self._stop_writer()

    def poll(self) -> None:
        """Run the :meth:`after_write` callbacks of what the writer process has written since
        (never waits; nothing to do without one)."""
        if self._writer is not None:
            self._writer.poll()

    def after_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every write committed so far is in the store (now, without a
        writer process; else from a later call)."""
        if self._writer is None:
            callback()
        else:
            self._writer.when_written(callback)

    def _overlapped(self) -> Iterator[None]:
        """The body of :meth:`batched` on a tracking server: writes overlap until each
        :meth:`commit`, and the last are waited for on the way out (an exception included,
        which stays the one raised)."""
        self._overlap = ServerWrites()
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the original failure is the one to report
                self.commit()
            raise
        else:
            self.commit()
        finally:
            self._overlap.close()
            self._overlap = None

    # -- the writer process ----------------------------------------------------------------
    def _submit(self, queued: list[PendingRun]) -> None:
        """Hand ``queued`` to the writer process; if that cannot be done (a record that does not
        pickle), stop using one: what it has is waited for, and ``queued`` written here."""
        assert self._writer is not None
        try:
            self._writer.submit(self.experiment_id, queued)
            return
        except Exception:  # noqa: BLE001 - written here instead, where a real failure is raised
            self._await_writer()
            self._stop_writer()
            self._writer_off = True
        self._write(queued)

    def _writer_mode(self) -> str:
        """``auto``, ``always`` or ``never`` (a writer process; :data:`WRITER_ENV`): never outside
        :meth:`batched`, on a store MLflow writes, after a writer failed, or on one core."""
        if not self._batched or self._direct is None or self._writer_off or (os.cpu_count() or 1) < 2:
            return "never"
        mode = os.environ.get(WRITER_ENV, "auto").strip().lower()
        return mode if mode in ("always", "never") else "auto"

    def _start_writer(self) -> None:
        assert self._direct is not None
        if self._writer is None:
            try:
                self._writer = WriterProcess(self._direct.path, self._direct.artifact_root)
            except OSError:  # no process to be had (a limit on processes or files): write here
                self._writer_off = True
                return
            cores.reserve()  # training gives the writer a core (suite.exec.cores)
            self._writer_done = weakref.finalize(self, _end_writer, self._writer)

    def _direct_rewrite(self, records: list[PendingRun]) -> list[PendingRun]:
        """Records the writer did not confirm, to be written here: it may have written some and
        died before it said so. Every row a record writes again is the same, except a new run's
        row, tags and params (written in one transaction): a run the store has is not created again."""
        assert self._direct is not None
        there = self._direct.existing_runs([r.run_id for r in records if r.create])
        for r in records:
            if r.run_id in there:
                r.create, r.tags, r.create_tags, r.params = False, {**r.create_tags, **r.tags}, {}, []
        return records

    def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer = None
            self._writer_done()

    def _await_writer(self) -> None:
        """Wait for the writer process. If it failed, write what it did not here, where the
        failure is raised as before (inside :meth:`batched` with the records queued again, else
        after writing them run by run), and stop using one."""
        writer = self._writer
        assert writer is not None
        unwritten, callbacks = writer.wait()
        if not unwritten:
            return
        self._stop_writer()
        self._writer_off = True
        records = self._direct_rewrite(merge_runs(unwritten))
        try:
            self._write(records)
        except BaseException:
            if self._queue is not None:  # still queued (see batched())
                self._queue = {r.run_id: r for r in merge_runs([*records, *self._queue.values()])}
            else:
                self._write_each(records)
            raise
        for callback in callbacks:
            callback()

    # -- recovery --------------------------------------------------------------------------
    def _commit_each(self) -> None:
        """After a failed :meth:`commit`: write each queued run in its own transaction."""
        assert self._queue is not None
        self._write_each(list(self._queue.values()))

    def _write_each(self, records: Sequence[PendingRun]) -> None:
        """Write each record in its own transaction, skipping those that fail (a run the store
        does not have, or the store itself failing)."""
        for record in records:
            try:
                self._write([record])
            except Exception:  # noqa: BLE001 - best effort, run by run
                continue


def _log_artifact(client: Any, run_id: str, content: str | bytes | Deferred, name: str) -> None:
    """Write ``content`` as the run's artifact ``name`` through MLflow's client."""
    if isinstance(content, bytes):
        _log_bytes(client, run_id, content, name)
    else:
        client.log_text(run_id, content.text() if isinstance(content, Deferred) else content, name)


def _log_bytes(client: Any, run_id: str, content: bytes, name: str) -> None:
    """Write ``content`` as the run's artifact ``name`` through MLflow's client (as its
    ``log_figure`` does: a file in a temporary folder, logged)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="suite-artifact-") as tmp:
        path = Path(tmp, PurePosixPath(name).name)
        path.write_bytes(content)
        folder = str(PurePosixPath(name).parent)
        client.log_artifact(run_id, str(path), artifact_path=None if folder == "." else folder)


def _rows(records: Sequence[PendingRun]) -> int:
    """About how many table rows writing ``records`` adds or changes."""
    return sum(1 + len(r.create_tags) + len(r.params) + len(r.metrics) + len(r.tags) for r in records)


def _end_writer(writer: WriterProcess) -> None:
    """End a writer process (its input; it exits once it has answered) and give back its core."""
    writer.close()
    cores.release()

