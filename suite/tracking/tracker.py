"""MLflow tracking: one MLflow run per RunSpec, with params, per-evaluation metrics, tags and
artifacts. The tracking URI comes from ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
MLflow's own default (``sqlite:///mlflow.db`` in the working directory)."""

from __future__ import annotations

import functools
import io
import os
import platform
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from suite import owners
from suite.engine.target import steps_to_target
from suite.errors import StoreError, SuiteError
from suite.exec import cores
from suite.exec.phases import CLOCK
from suite.registry import FAMILIES, Registry
from suite.specs import naming
from suite.specs.spec import RunSpec, yaml_text
from suite.stores import (
    check_experiment_name,
    check_tracking_uri,
    quiet_store_logs,
    resolve_tracking_uri,
    store_lock,
)
from suite.tracking import diagnose
from suite.tracking.bulk import SqlBulk
from suite.tracking.context import context_tags
from suite.tracking.direct import DirectStore
from suite.tracking.records import FAILED as MLFLOW_FAILED
from suite.tracking.records import (
    FINISHED,
    KILLED,
    RUNNING,
    Deferred,
    Metric,
    MetricRow,
    PendingRun,
    RunParam,
    RunTag,
    dict_text,
    to_mlflow,
)
from suite.tracking.records import PARENT_RUN_TAG as MLFLOW_PARENT_RUN_ID
from suite.tracking.records import RUN_NAME_TAG as MLFLOW_RUN_NAME
from suite.tracking.template import seed_new_store
from suite.tracking.writer import WriterProcess, merge_runs
from suite.vocab import (
    DONE_STATUSES,
    EXPERIMENT_KIND_TRAINING,
    MLFLOW_EXPERIMENT_KIND,
    TAG_CONFIG,
    TAG_DEVICE,
    TAG_ENGINE,
    TAG_HASH,
    TAG_HOST,
    TAG_KIND,
    TAG_OWNER,
    TAG_PHASE_SECONDS,
    TAG_REASON,
    TAG_SCHEDULER_INTERVAL,
    TAG_SECONDS,
    TAG_STACK,
    TAG_STATUS,
    TRAIN_SECONDS,
)

MLFLOW_STATUS = {
    "completed": FINISHED,
    "stopped": FINISHED,
    "diverged": MLFLOW_FAILED,
    "failed": MLFLOW_FAILED,
    "interrupted": KILLED,
}


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


class Tracker:
    """Logs runs to one MLflow experiment (explicit run ids, so it is safe to use from several
    worker processes at once).

    Few round trips: a run is created with its tags, then its params in one batch; its
    evaluations are buffered and written in batches (at its end, with its final tags, or when
    :data:`FLUSH_EVERY_S` has passed), so the metric history is the same, in fewer calls.

    Fewer still inside :meth:`batched` on an MLflow SQL store: every write is queued and
    :meth:`commit` writes all the queued runs in one transaction (:mod:`suite.tracking.bulk`).

    On a local sqlite store that :mod:`suite.tracking.direct` serves, MLflow is not even
    imported: the experiment, the runs done or left running, and every write go through
    ``sqlite3`` with MLflow's rows; each call's writes are one transaction. :attr:`client`, a
    real ``MlflowClient``, is made on first use for everything else (reports, notebooks, studies).
    ``direct=False`` makes every call go through MLflow's client.

    Inside :meth:`batched` on such a store, once one write has taken :data:`WRITER_AFTER_S` or
    more (on a machine with a core to spare), the writes go to a writer process
    (:mod:`suite.tracking.writer`) and training goes on while they are made: queued writes are
    handed over whenever it is idle (at most every :data:`STREAM_EVERY_S`: a writer that is
    behind gets bigger batches, which it writes faster per row), and reads, the end of :meth:`batched` and
    ``commit(wait=True)`` wait for them. :meth:`after_write` runs a callback once what was
    committed so far is in the store. ``SUITE_TRACKING_WRITER=always|never`` overrides the rule."""

    @tracking
    def __init__(self, experiment: str, tracking_uri: str | None = None, *, create: bool = True,
                 direct: bool | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        quiet_store_logs()  # before MLflow makes a store here (a new store template) or opens one
        # malformed, read-only (mode=ro), or an unreachable server: a one-line error in seconds
        check_tracking_uri(self.tracking_uri, write=create)
        check_experiment_name(experiment)  # what MLflow refuses, refused on the direct path too
        self.experiment_name = experiment
        self._pending: dict[str, list[MetricRow]] = {}  # run id -> metrics not written yet (plain tuples)
        self._flushed: dict[str, float] = {}  # run id -> when its buffer was last written
        self._queue: dict[str, PendingRun] | None = None  # inside batched(): run id -> its queued writes
        self._bulk: SqlBulk | None = None
        self._client: Any = None
        self._direct: DirectStore | None = None
        self._committed = time.monotonic()
        self._writer: WriterProcess | None = None
        self._writer_done: Callable[[], Any] = lambda: None  # ends the writer process (once)
        self._writer_off = False  # a writer failed once: this tracker writes itself from then on
        self._batched = False  # inside batched() (not a single call's writes())
        self._last_write_s = 0.0  # how long the last write in this process took
        try:
            with store_lock(self.tracking_uri):  # several processes' first use of a fresh store take turns
                seed_new_store(self.tracking_uri)  # a new sqlite store: a copy of an empty migrated one
                if direct is not False:
                    self._direct = DirectStore.open(self.tracking_uri)
                if self._direct is not None:
                    self.experiment_id = self._direct_experiment(experiment, create)
                else:
                    self.experiment_id = self._mlflow_experiment(experiment, create)
        except SuiteError:
            raise
        except Exception as exc:  # before any run: a one-line cause and what to do (exit code 2)
            raise StoreError(diagnose.cause(exc, self.tracking_uri).line) from None
        diagnose.note_opened(self.tracking_uri)  # a store file moved away later is then told as such

    @property
    def client(self) -> Any:
        """An ``MlflowClient`` for this store (made, and MLflow imported, on first use)."""
        if self._client is None:
            from mlflow import MlflowClient

            quiet_store_logs()
            self._client = MlflowClient(tracking_uri=self.tracking_uri)  # creates or migrates the schema
        return self._client

    @property
    def writer_pid(self) -> int | None:
        """The pid of the writer process this tracker hands its writes to now (see the class
        docstring), or None while it writes them itself."""
        return self._writer.proc.pid if self._writer is not None else None

    @property
    def direct(self) -> bool:
        """Whether this tracker writes the store without MLflow (:mod:`suite.tracking.direct`)."""
        return self._direct is not None

    def _missing(self, experiment: str) -> SuiteError:
        return SuiteError(f"MLflow experiment {experiment!r} does not exist at {self.tracking_uri}")

    def _mlflow_experiment(self, experiment: str, create: bool) -> str:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            if not create:
                raise self._missing(experiment)
            return self._create_experiment(experiment)
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        if MLFLOW_EXPERIMENT_KIND not in exp.tags:  # made by an earlier version; a user's choice stays
            self.client.set_experiment_tag(exp.experiment_id, MLFLOW_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING)
        return exp.experiment_id

    def _direct_experiment(self, experiment: str, create: bool) -> str:
        import sqlite3

        assert self._direct is not None
        found = self._direct.experiment(experiment)
        if found is None:
            if not create:
                raise self._missing(experiment)
            try:  # a model-training experiment: MLflow's UI opens it on the runs table
                return self._direct.create_experiment(experiment, {MLFLOW_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING})
            except sqlite3.IntegrityError:  # another process created it first: use theirs
                found = self._direct.experiment(experiment)
                if found is None:
                    raise
        experiment_id, stage, tags = found
        if stage == "deleted":
            self.client.restore_experiment(experiment_id)  # MLflow also restores its runs
        if MLFLOW_EXPERIMENT_KIND not in tags:  # made by an earlier version; a user's choice stays
            self._direct.set_experiment_tag(experiment_id, MLFLOW_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING)
        return experiment_id

    def _create_experiment(self, name: str) -> str:
        """Create experiment ``name``; if another process (on a shared server) created it first, use theirs."""
        try:
            # a model-training experiment: MLflow's UI opens it on the runs table
            return self.client.create_experiment(name, tags={MLFLOW_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING})
        except Exception:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    @tracking
    def set_experiment_tag(self, key: str, value: str) -> None:
        """Set one tag of the experiment."""
        if self._direct is not None:
            self._direct.set_experiment_tag(self.experiment_id, key, value)
        else:
            self.client.set_experiment_tag(self.experiment_id, key, value)

    # -- runs -----------------------------------------------------------------------------
    @tracking
    def start_run(
        self,
        spec: RunSpec,
        registry: Registry,
        *,
        device: str = "cpu",
        parent_run_id: str | None = None,
        kind: str = "run",
        tags: Mapping[str, Any] | None = None,
        varying: Sequence[str] = (),
    ) -> str:
        """Create the MLflow run for ``spec`` with its params and tags; return the run id.

        ``varying``: the keys that vary in the run's grid (:func:`suite.specs.axes.varying_keys`);
        they name the run (:func:`suite.specs.naming.run_name`) and its ``suite.config`` tag."""
        all_tags: dict[str, Any] = {
            MLFLOW_RUN_NAME: naming.run_name(spec, varying),
            TAG_CONFIG: naming.config_tag(spec, varying),
            TAG_HASH: spec.hash,
            TAG_STATUS: "running",
            TAG_KIND: kind,
            TAG_DEVICE: device,
            TAG_HOST: platform.node(),
            TAG_OWNER: owner(),
        }
        for family in FAMILIES:
            comp = registry.get(family, spec.component(family))
            all_tags[f"suite.dist.{family}"] = f"{comp.distribution}=={comp.version}"
            if family == "scheduler":
                all_tags[TAG_SCHEDULER_INTERVAL] = comp.interval
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        all_tags.update(tags or {})
        return self.create_run(all_tags, {k: _param_text(v) for k, v in spec.flat_params().items()})

    def create_run(self, tags: Mapping[str, Any], params: Mapping[str, str]) -> str:
        """Create a run with these tags (``mlflow.runName`` among them) and params; return its id."""
        text_tags = {**context_tags(), **{k: str(v) for k, v in tags.items()}}
        text_tags.setdefault(MLFLOW_RUN_NAME, f"run-{uuid.uuid4().hex[:8]}")  # MLflow names an unnamed run too
        with self.writes():
            if self._queue is not None:
                run_id = uuid.uuid4().hex
                self._queue[run_id] = PendingRun(run_id, create=True, start_time=int(time.time() * 1000),
                                                 create_tags=text_tags,
                                                 params=[RunParam(k, v) for k, v in params.items()])
                return run_id
        run_id = self.client.create_run(self.experiment_id, tags=text_tags).info.run_id
        items = [RunParam(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, **to_mlflow(params=items[i : i + 100]))
        return run_id

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """Record one evaluation (MLflow step = optimizer steps taken); written in batches."""
        self.log_metrics_rows([(run_id, step, metrics)])

    @tracking
    def log_metrics_rows(self, rows: Sequence[tuple[str, int, Mapping[str, float]]]) -> None:
        """Record evaluations of several runs at once, ``(run_id, step, metrics)`` each (a stack's
        evaluation step); written in batches, as :meth:`log_metrics` writes one."""
        ts = int(time.time() * 1000)
        for run_id, step, metrics in rows:
            pending = self._pending.setdefault(run_id, [])
            for k, v in metrics.items():
                try:
                    pending.append((k, float(v), ts, step))  # a plain tuple: see records.MetricRow
                except (TypeError, ValueError):  # not a number: not a metric
                    continue
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
                self.flush(run_id)

    @tracking
    def flush(self, run_id: str, tags: Sequence[Any] | None = None) -> None:
        """Write ``run_id``'s buffered metrics (and ``tags``, records with ``key`` and ``value``)
        in as few ``log_batch`` calls as MLflow's limits allow."""
        metrics = self._pending.pop(run_id, [])
        self._flushed[run_id] = time.monotonic()
        tags = [RunTag(t.key, t.value) for t in tags or []]
        with self.writes():
            if self._queue is not None:
                queued = self._queued(run_id)
                queued.metrics += metrics
                queued.tags.update((t.key, t.value) for t in tags)
                return
        while metrics or tags:
            room = MAX_METRICS_PER_BATCH - len(tags)
            self.client.log_batch(run_id, **to_mlflow(metrics=metrics[:room], tags=tags))
            metrics, tags = metrics[room:], []

    @tracking
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set (or replace) tags of a run."""
        self.flush(run_id, [RunTag(k, str(v)) for k, v in tags.items()])

    @tracking
    def finish(self, run_id: str, result: Any, *, figure: Any = None) -> None:
        """Log a finished run's artifacts (with ``figure``, a matplotlib figure of its curves,
        as ``curves.png``), its buffered metrics, and mark it with its status."""
        spec: RunSpec = result.spec
        with self.writes():
            # the texts are made where they are written (a writer process, see suite.tracking.writer)
            self.log_text(run_id, Deferred(yaml_text, spec.yaml_data()), "spec.yaml")
            if result.final_params:
                self.log_text(run_id, Deferred(dict_text, result.final_params), "final_params.json")
            if result.traceback:
                self.log_text(run_id, result.traceback, "traceback.txt")
            if figure is not None:
                self.log_figure(run_id, figure, "curves.png")
            tags = [RunTag(TAG_STATUS, result.status), RunTag(TAG_SECONDS, f"{result.seconds:.3f}")]
            if result.reason:
                tags.append(RunTag(TAG_REASON, result.reason[:4000]))
            tags.append(RunTag(TAG_ENGINE, result.engine))
            if result.stack:
                tags.append(RunTag(TAG_STACK, result.stack))
            self._pending.setdefault(run_id, []).extend(best_metrics(result.history, spec.target))
            self._pending[run_id].extend(final_metrics(result))
            self._pending[run_id].extend(clock_metrics(result))
            self.flush(run_id, tags)
            self._flushed.pop(run_id, None)
            self.set_status(run_id, MLFLOW_STATUS[result.status])

    @tracking
    def mark(self, run_id: str, status: str, reason: str = "") -> None:
        """Terminate a run that did not finish normally (interrupted, failed to start), with the
        metrics it had logged."""
        tags = [RunTag(TAG_STATUS, status)] + ([RunTag(TAG_REASON, reason[:4000])] if reason else [])
        with self.writes():
            self.flush(run_id, tags)
            self._flushed.pop(run_id, None)
            self.set_status(run_id, MLFLOW_STATUS[status])

    @tracking
    def log_text(self, run_id: str, content: str | Deferred, name: str) -> None:
        """Write ``content`` as the run's artifact ``name`` (as ``MlflowClient.log_text``)."""
        with self.writes():
            if self._queue is not None:
                self._queued(run_id).artifacts[name] = content
                return
        self.client.log_text(run_id, content.text() if isinstance(content, Deferred) else content, name)

    @tracking
    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        """Write a matplotlib figure as the run's PNG artifact ``name`` (as ``MlflowClient.log_figure``)."""
        with self.writes():
            if self._queue is not None:
                png = io.BytesIO()
                with CLOCK.phase("reporting"):  # drawing the figure is reporting; storing it, tracking
                    figure.savefig(png, format="png")
                self._queued(run_id).artifacts[name] = png.getvalue()
                return
        self.client.log_figure(run_id, figure, name)

    @tracking
    def set_status(self, run_id: str, status: str) -> None:
        """Set a run's MLflow status: a final one (``FINISHED``, ``FAILED``, ``KILLED``) ends it
        now; ``RUNNING`` reopens it (as ``MlflowClient.update_run``, its end time kept)."""
        ended = status != RUNNING
        with self.writes():
            if self._queue is not None:
                queued = self._queued(run_id)
                queued.status, queued.end_time = status, int(time.time() * 1000) if ended else None
                return
        if ended:
            self.client.set_terminated(run_id, status)
        else:
            self.client.update_run(run_id, status=status)

    @tracking
    def log_batch(self, run_id: str, metrics: Sequence[Any] = (), tags: Sequence[Any] = ()) -> None:
        """Log metric values (records with ``key``, ``value``, ``timestamp``, ``step``) and tags."""
        self._pending.setdefault(run_id, []).extend((m.key, m.value, m.timestamp, m.step) for m in metrics)
        self.flush(run_id, tags)

    @tracking
    def run_status(self, run_id: str) -> str:
        """A run's MLflow status (``RUNNING``, ``FINISHED``, ...)."""
        self.commit(wait=True)  # a read sees what is queued
        if self._direct is not None:
            return self._direct.run_status(run_id)
        return self.client.get_run(run_id).info.status

    # -- batched writes (one transaction for many runs) ------------------------------------
    def _queued(self, run_id: str) -> PendingRun:
        assert self._queue is not None
        return self._queue.setdefault(run_id, PendingRun(run_id))

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

    def _write(self, records: Sequence[PendingRun]) -> None:
        if self._writer is not None:  # after what the writer process has (batched(settle=False))
            self.settle()
        if self._direct is not None:
            t0 = time.perf_counter()
            self._direct.write(self.experiment_id, records)
            self._last_write_s = time.perf_counter() - t0
        else:
            assert self._bulk is not None
            self._bulk.write(self.client, records)

    @contextmanager
    def batched(self, *, settle: bool = True) -> Iterator[None]:
        """Queue every run write made inside, to be written by :meth:`commit` (by the caller at
        safe points, here when :data:`FLUSH_EVERY_S` has passed, before any read of the store, and
        on the way out, an exception included). Only on an MLflow SQL store; elsewhere (a
        tracking server) the writes are made as they come.

        ``settle=False``: a writer process may still be writing on the way out (not after an
        exception); the next read or write of this tracker, or :meth:`settle`, waits for it."""
        if self._queue is not None:
            yield
            return
        if self._direct is None and self._bulk is None:
            self._bulk = SqlBulk.for_client(self.client, self.experiment_id)
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
        made (and raises if it failed); without ``wait`` a failure is raised by a later call."""
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
                        self._start_writer()  # later writes go to a writer process (see the class docstring)
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

    def after_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every write committed so far is in the store (now, without a
        writer process; else from a later tracker call)."""
        if self._writer is None:
            callback()
        else:
            self._writer.when_written(callback)

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

    @tracking
    def log_phases(self, run_id: str, seconds: Mapping[str, float]) -> None:
        """Tag a parent run with where its invocation's time went (``suite.seconds.<phase>``)."""
        self.set_tags(run_id, {TAG_PHASE_SECONDS[p]: f"{s:.3f}" for p, s in seconds.items()})

    # -- grids: parent runs, resume --------------------------------------------------------
    @tracking
    def start_parent(self, name: str, tags: Mapping[str, Any] | None = None,
                     params: Mapping[str, Any] | None = None) -> str:
        """Create the parent run of one grid invocation (tag ``suite.kind=grid``; ``params``: the
        command line and the grid's axes)."""
        all_tags = {MLFLOW_RUN_NAME: name, TAG_KIND: "grid", TAG_STATUS: "running",
                    TAG_OWNER: owner(), TAG_HOST: platform.node(), **(tags or {})}
        return self.create_run(all_tags, {k: _param_text(v)[:6000] for k, v in (params or {}).items()})

    @tracking
    def search(self, filter_string: str = "") -> list[Any]:
        """Every run of the experiment matching ``filter_string`` (all pages; MLflow's search)."""
        self.commit(wait=True)
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=5000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    @tracking
    def find_runs(self, tags: Mapping[str, str], *, status: str | None = None) -> list[Any]:
        """The experiment's active runs with these tag values (and MLflow status), with their
        tags, params and latest metric values (as ``MlflowClient.search_runs``)."""
        self.commit(wait=True)  # a read sees what is queued
        if self._direct is not None:
            return self._direct.runs(self.experiment_id, tags=tags, status=status)
        where = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        if status is not None:
            where.append(f"attributes.status = '{status}'")
        return self.search(" and ".join(where))

    @tracking
    def metric_history(self, run_id: str, key: str) -> list[Any]:
        """Every logged value of one metric of a run (``.step``, ``.value``, ``.timestamp``)."""
        self.commit(wait=True)  # a read sees what is queued
        if self._direct is not None:
            return self._direct.metric_history(run_id, key)
        return self.client.get_metric_history(run_id, key)

    @tracking
    def done_runs(self) -> dict[str, Any]:
        """The latest finished run per spec hash whose ``suite.status`` counts as done."""
        done: dict[str, Any] = {}
        for run in self.find_runs({TAG_KIND: "run"}):
            h = run.data.tags.get(TAG_HASH)
            if h and _is_done(run) and (h not in done or run.info.start_time > done[h].info.start_time):
                done[h] = run
        return done

    @tracking
    def done_run(self, spec_hash: str) -> Any | None:
        """The latest finished run of one spec that counts as done (see :meth:`done_runs`), or None."""
        runs = [r for r in self.find_runs({TAG_HASH: spec_hash, TAG_KIND: "run"}) if _is_done(r)]
        return max(runs, key=lambda r: r.info.start_time) if runs else None

    @tracking
    def reap_orphans(self) -> list[str]:
        """Mark runs left RUNNING by a dead process on this host as interrupted (KILLED).

        A run's owner is the label of the process that logs it (:mod:`suite.owners`: host, pid
        and the process's start). Runs owned by a live process (another invocation still working)
        or by another host are left alone; a pid now held by another process is no owner."""
        reaped = []
        for run in self.find_runs({}, status="RUNNING"):
            label = run.data.tags.get(TAG_OWNER, "")
            if not owners.gone(label):
                continue
            self.mark(run.info.run_id, "interrupted", f"its process ({label}) died before it finished")
            reaped.append(run.info.run_id)
        return reaped


def _rows(records: Sequence[PendingRun]) -> int:
    """About how many table rows writing ``records`` adds or changes."""
    return sum(1 + len(r.create_tags) + len(r.params) + len(r.metrics) + len(r.tags) for r in records)


def _end_writer(writer: WriterProcess) -> None:
    """End a writer process (its input; it exits once it has answered) and give back its core."""
    writer.close()
    cores.release()


def _is_done(run: Any) -> bool:
    return run.data.tags.get(TAG_STATUS) in DONE_STATUSES and run.info.status != "RUNNING"


def owner() -> str:
    """The label of this process (:func:`suite.owners.label`): the tag that tells a live run from an orphan."""
    return owners.label()


def best_metrics(history: Sequence[tuple[int, Mapping[str, float]]], target: float | None = None) -> list[Metric]:
    """``best_val_loss`` (and ``best_avg_val_loss``): the lowest value over the run, logged at the
    step it was reached, beside the last value MLflow shows as ``val_loss``; with a ``target``,
    ``steps_to_target`` (and ``avg_steps_to_target``, see :mod:`suite.engine.target`)."""
    ts = int(time.time() * 1000)
    out = []
    if target is not None:
        out += [Metric(k, float(v), ts, v) for k, v in steps_to_target(history, target).items()]
    for key in ("val_loss", "avg_val_loss"):
        points = [(m[key], step) for step, m in history if key in m and _finite(m[key])]
        if points:
            value, step = min(points)
            out.append(Metric(f"best_{key}", float(value), ts, step))
    return out


def final_metrics(result: Any) -> list[Metric]:
    """A completed run's ``final_metrics`` (e.g. ``test_loss``), logged once at its last step."""
    ts = int(time.time() * 1000)
    step = result.history[-1][0] if result.history else 0
    return [Metric(k, float(v), ts, step) for k, v in getattr(result, "final_metrics", {}).items()]


def clock_metrics(result: Any) -> list[Metric]:
    """``train_seconds`` at each evaluated step: the seconds spent training so far, evaluations
    excluded (:class:`suite.engine.loop.RunResult`'s ``clock``)."""
    ts = int(time.time() * 1000)
    return [Metric(TRAIN_SECONDS, float(v), ts, step) for step, v in getattr(result, "clock", [])]


def _finite(v: Any) -> bool:
    try:
        return float(v) == float(v) and abs(float(v)) != float("inf")
    except (TypeError, ValueError):
        return False


def _param_text(value: Any) -> str:
    return "None" if value is None else str(value)
