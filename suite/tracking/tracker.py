"""MLflow tracking: one MLflow run per RunSpec, with params, per-evaluation metrics, tags and
artifacts. The tracking URI comes from ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
MLflow's own default (``sqlite:///mlflow.db`` in the working directory)."""

from __future__ import annotations

import io
import math
import platform
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from suite import owners
from suite.engine.target import steps_to_target
from suite.errors import StoreError, SuiteError
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
from suite.tracking.direct import DirectStore
from suite.tracking.origin import context_tags
from suite.tracking.queue import WriteQueue, tracking
from suite.tracking.records import FAILED as MLFLOW_FAILED
from suite.tracking.records import (
    FINISHED,
    KILLED,
    RUNNING,
    Deferred,
    MetricRow,
    PendingRun,
    RunParam,
    RunTag,
    dict_text,
    param_text,
)
from suite.tracking.records import PARENT_RUN_TAG as MLFLOW_PARENT_RUN_ID
from suite.tracking.records import RUN_NAME_TAG as MLFLOW_RUN_NAME
from suite.tracking.template import seed_new_store
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


class Tracker:
    """Logs runs to one MLflow experiment (explicit run ids, so it is safe to use from several
    worker processes at once).

    The tracker decides what a run records; each call's writes go to its :attr:`queue`
    (:class:`~suite.tracking.queue.WriteQueue`) as one record, and the queue decides how and
    when they are written: buffered evaluations, one transaction a call, many runs in one
    transaction inside :meth:`batched`, a writer process, recovery after a failed write.

    On a local sqlite store that :mod:`suite.tracking.direct` serves, MLflow is not even
    imported: the experiment, the runs done or left running, and every write go through
    ``sqlite3`` with MLflow's rows. :attr:`client`, a real ``MlflowClient``, is made on first
    use for everything else (reports, notebooks, studies). ``direct=False`` makes every call go
    through MLflow's client."""

    @tracking
    def __init__(self, experiment: str, tracking_uri: str | None = None, *, create: bool = True,
                 direct: bool | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        quiet_store_logs()  # before MLflow makes a store here (a new store template) or opens one
        # malformed, read-only (mode=ro), or an unreachable server: a one-line error in seconds
        check_tracking_uri(self.tracking_uri, write=create)
        check_experiment_name(experiment)  # what MLflow refuses, refused on the direct path too
        self.experiment_name = experiment
        self._client: Any = None
        self._direct: DirectStore | None = None
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
        self.queue = WriteQueue(self.experiment_id, lambda: self.client, self._direct,
                                tracking_uri=self.tracking_uri)

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
        """The pid of the writer process this tracker's writes are handed to now
        (:mod:`suite.tracking.queue`), or None while they are made in this process."""
        return self.queue.writer_pid

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
        return self.create_run(all_tags, {k: param_text(v) for k, v in spec.flat_params().items()})

    def create_run(self, tags: Mapping[str, Any], params: Mapping[str, str]) -> str:
        """Create a run with these tags (``mlflow.runName`` among them) and params; return its id."""
        text_tags = {**context_tags(), **{k: str(v) for k, v in tags.items()}}
        text_tags.setdefault(MLFLOW_RUN_NAME, f"run-{uuid.uuid4().hex[:8]}")  # MLflow names an unnamed run too
        return self.queue.put(PendingRun(uuid.uuid4().hex, create=True, start_time=_now_ms(), create_tags=text_tags,
                                         params=[RunParam(k, v) for k, v in params.items()]))

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """Record one evaluation (MLflow step = optimizer steps taken); written in batches."""
        self.log_metrics_rows([(run_id, step, metrics)])

    def log_metrics_rows(self, rows: Sequence[tuple[str, int, Mapping[str, float]]]) -> None:
        """Record evaluations of several runs at once, ``(run_id, step, metrics)`` each (a stack's
        evaluation step); written in batches, as :meth:`log_metrics` writes one."""
        self.queue.metrics(rows)

    @tracking
    def flush(self, run_id: str, tags: Sequence[Any] | None = None) -> None:
        """Write ``run_id``'s buffered metrics (and ``tags``, records with ``key`` and ``value``)."""
        self.queue.put(PendingRun(run_id, tags={t.key: t.value for t in tags or []}))

    @tracking
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set (or replace) tags of a run."""
        self.flush(run_id, [RunTag(k, str(v)) for k, v in tags.items()])

    @tracking
    def finish(self, run_id: str, result: Any, *, figure: Any = None) -> None:
        """Log a finished run's artifacts (with ``figure``, a matplotlib figure of its curves,
        as ``curves.png``), its buffered metrics, and mark it with its status."""
        spec: RunSpec = result.spec
        # the texts are made where they are written (a writer process, see suite.tracking.writer)
        artifacts: dict[str, str | bytes | Deferred] = {"spec.yaml": Deferred(yaml_text, spec.yaml_data())}
        if result.final_params:
            artifacts["final_params.json"] = Deferred(dict_text, result.final_params)
        if result.traceback:
            artifacts["traceback.txt"] = result.traceback
        if figure is not None:
            artifacts["curves.png"] = png_bytes(figure)
        tags = {TAG_STATUS: result.status, TAG_SECONDS: f"{result.seconds:.3f}"}
        if result.reason:
            tags[TAG_REASON] = result.reason[:4000]
        tags[TAG_ENGINE] = result.engine
        if result.stack:
            tags[TAG_STACK] = result.stack
        metrics = [*best_metrics(result.history, spec.target), *final_metrics(result), *clock_metrics(result)]
        self.queue.put(PendingRun(run_id, artifacts=artifacts, metrics=metrics, tags=tags,
                                  status=MLFLOW_STATUS[result.status], end_time=_now_ms()))

    @tracking
    def mark(self, run_id: str, status: str, reason: str = "") -> None:
        """Terminate a run that did not finish normally (interrupted, failed to start), with the
        metrics it had logged."""
        tags = {TAG_STATUS: status, **({TAG_REASON: reason[:4000]} if reason else {})}
        self.queue.put(PendingRun(run_id, tags=tags, status=MLFLOW_STATUS[status], end_time=_now_ms()))

    @tracking
    def log_text(self, run_id: str, content: str | Deferred, name: str) -> None:
        """Write ``content`` as the run's artifact ``name`` (as ``MlflowClient.log_text``)."""
        self.queue.put(PendingRun(run_id, artifacts={name: content}))

    @tracking
    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        """Write a matplotlib figure as the run's PNG artifact ``name`` (as ``MlflowClient.log_figure``)."""
        self.log_png(run_id, png_bytes(figure), name)

    @tracking
    def log_png(self, run_id: str, png: bytes, name: str) -> None:
        """Write PNG bytes (a figure drawn elsewhere, :func:`png_bytes`) as the run's artifact ``name``."""
        self.queue.put(PendingRun(run_id, artifacts={name: png}))

    @tracking
    def set_status(self, run_id: str, status: str) -> None:
        """Set a run's MLflow status: a final one (``FINISHED``, ``FAILED``, ``KILLED``) ends it
        now; ``RUNNING`` reopens it (as ``MlflowClient.update_run``, its end time kept)."""
        self.queue.put(PendingRun(run_id, status=status, end_time=None if status == RUNNING else _now_ms()))

    @tracking
    def log_batch(self, run_id: str, metrics: Sequence[Any] = (), tags: Sequence[Any] = ()) -> None:
        """Log metric values (records with ``key``, ``value``, ``timestamp``, ``step``) and tags."""
        self.queue.put(PendingRun(run_id, metrics=[(m.key, m.value, m.timestamp, m.step) for m in metrics],
                                  tags={t.key: t.value for t in tags}))

    @tracking
    def run_status(self, run_id: str) -> str:
        """A run's MLflow status (``RUNNING``, ``FINISHED``, ...)."""
        self.commit(wait=True)  # a read sees what is queued
        if self._direct is not None:
            return self._direct.run_status(run_id)
        return self.client.get_run(run_id).info.status

    # -- how and when writes happen: the queue's -------------------------------------------
    def writes(self) -> AbstractContextManager[None]:
        """Around one call's writes: one transaction on a direct store (:meth:`WriteQueue.writes`)."""
        return self.queue.writes()

    def batched(self, *, settle: bool = True) -> AbstractContextManager[None]:
        """Queue every run write made inside, many runs to a transaction (:meth:`WriteQueue.batched`)."""
        return self.queue.batched(settle=settle)

    def commit(self, *, wait: bool = False) -> None:
        """Write what is queued inside :meth:`batched` (:meth:`WriteQueue.commit`)."""
        self.queue.commit(wait=wait)

    def settle(self) -> None:
        """Wait until every write is in the store, and raise if one failed (:meth:`WriteQueue.settle`)."""
        self.queue.settle()

    def poll_writes(self) -> None:
        """Run the :meth:`after_write` callbacks of writes done since (:meth:`WriteQueue.poll`)."""
        self.queue.poll()

    def after_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every write committed so far is in the store (:meth:`WriteQueue.after_write`)."""
        self.queue.after_write(callback)

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
        return self.create_run(all_tags, {k: param_text(v)[:6000] for k, v in (params or {}).items()})

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


def _is_done(run: Any) -> bool:
    return run.data.tags.get(TAG_STATUS) in DONE_STATUSES and run.info.status != "RUNNING"


def owner() -> str:
    """The label of this process (:func:`suite.owners.label`): the tag that tells a live run from an orphan."""
    return owners.label()


def best_metrics(history: Sequence[tuple[int, Mapping[str, float]]], target: float | None = None) -> list[MetricRow]:
    """``best_val_loss`` (and ``best_avg_val_loss``): the lowest value over the run, logged at the
    step it was reached, beside the last value MLflow shows as ``val_loss``; with a ``target``,
    ``steps_to_target`` (and ``avg_steps_to_target``, see :mod:`suite.engine.target`). Plain
    tuples, as :data:`~suite.tracking.records.MetricRow` (a finished run's metrics are made and
    pickled by the thousand)."""
    ts = int(time.time() * 1000)
    out: list[MetricRow] = []
    if target is not None:
        out += [(k, float(v), ts, v) for k, v in steps_to_target(history, target).items()]
    for key in ("val_loss", "avg_val_loss"):
        best: tuple[float, int] | None = None
        for step, m in history:
            v = m.get(key)
            if v is not None and _finite(v) and (best is None or (v, step) < best):
                best = (v, step)
        if best is not None:
            out.append((f"best_{key}", float(best[0]), ts, best[1]))
    return out


def final_metrics(result: Any) -> list[MetricRow]:
    """A completed run's ``final_metrics`` (e.g. ``test_loss``), logged once at its last step."""
    ts = int(time.time() * 1000)
    step = result.history[-1][0] if result.history else 0
    return [(k, float(v), ts, step) for k, v in getattr(result, "final_metrics", {}).items()]


def clock_metrics(result: Any) -> list[MetricRow]:
    """``train_seconds`` at each evaluated step: the seconds spent training so far, evaluations
    excluded (:class:`suite.engine.loop.RunResult`'s ``clock``)."""
    ts = int(time.time() * 1000)
    return [(TRAIN_SECONDS, float(v), ts, step) for step, v in getattr(result, "clock", [])]


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(v)
    except TypeError:  # not a number
        return False


def _now_ms() -> int:
    return int(time.time() * 1000)


def png_bytes(figure: Any) -> bytes:
    """A matplotlib figure as PNG bytes (drawing it is reporting; storing it, tracking)."""
    png = io.BytesIO()
    with CLOCK.phase("reporting"):
        figure.savefig(png, format="png")
    return png.getvalue()
