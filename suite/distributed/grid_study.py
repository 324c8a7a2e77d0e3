"""A grid of runs as an Optuna study, so that workers on many machines share it.

Design: each RunSpec of the grid is one enqueued trial (no params; user attributes
``suite.spec`` = the spec's JSON and ``suite.spec_hash``). Workers (:mod:`suite.distributed.worker`) claim
WAITING trials through the storage, run the spec through the engine, log one MLflow run as a
child of the grid's parent run, and tell the trial the final ``val_loss``. A submission sets the
study up (its parent run and attributes) if nobody has, and enqueues the specs no trial holds,
under the storage's lock (:mod:`suite.distributed.enqueue`): submissions started together enqueue
each spec once, and one that was killed mid-way leaves a study the next submission fills up. The
study is marked ready once every spec is in. The MLflow run is the result, the trial is the ticket:

- a spec with a finished MLflow run (``suite.status`` completed or diverged, same
  ``suite.spec_hash``, same experiment) is not run again: the trial completes with that
  run's value (resume across invocations, and no duplicate when a worker died after logging
  but before telling);
- a trial retried after its worker died carries the dead worker's MLflow run id; that run is
  marked KILLED before the retry starts its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from mlflow.entities import RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from optuna.trial import TrialState

from suite.distributed.enqueue import enqueue_lock, enqueue_missing
from suite.distributed.worker import WorkerContext
from suite.engine.exactness import mark_unstable
from suite.engine.loop import RunResult
from suite.engine.stack import stack_key, stackable
from suite.engine.units import MAX_STACK
from suite.errors import StoreError, TrialFailed
from suite.registry import get_registry
from suite.specs import naming
from suite.specs.axes import varying_keys
from suite.specs.spec import RunSpec
from suite.stores import describe, open_storage
from suite.tracking.tracker import Tracker
from suite.vocab import (
    STUDY_EXPERIMENT,
    STUDY_GRID_ID,
    STUDY_KIND,
    STUDY_PARENT_RUN_ID,
    STUDY_TRACKING_URI,
    TAG_HASH,
    TAG_N_SPECS,
    TAG_OWNER,
    TAG_REUSED,
    TAG_STUDY,
    TAG_TOTAL,
    TAG_TRIAL,
    TRIAL_RUN_ID,
    TRIAL_RUN_NAME,
    TRIAL_SPEC,
    TRIAL_STATUS,
    TRIAL_WORKER,
)


def grid_id(specs: Sequence[RunSpec]) -> str:
    """A short hash of the set of spec hashes: the identity of a grid."""
    return hashlib.sha256(",".join(sorted({s.hash for s in specs})).encode()).hexdigest()[:12]


def submit_grid(
    specs: Sequence[RunSpec],
    storage_url: str | None,
    *,
    experiment: str,
    tracking_uri: str | None = None,
    study_name: str | None = None,
    run_name: str | None = None,
    parent_tags: Mapping[str, Any] | None = None,
    parent_params: Mapping[str, Any] | None = None,
) -> tuple[str, bool]:
    """Create the grid's study with one enqueued trial per distinct spec, or join it if the
    same grid is already there (enqueueing the specs no trial holds). Returns ``(study name,
    created)``: created is whether this call set the study up.

    Raises :class:`StoreError` if ``study_name`` exists in the storage with a different grid.
    """
    unique = list({s.hash: s for s in specs}.values())
    gid = grid_id(unique)
    name = study_name or f"grid-{experiment}-{gid}"
    storage = open_storage(storage_url)
    tracker = Tracker(experiment, tracking_uri)  # checks the tracking server, creates the experiment
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True)
    varying = varying_keys(unique)  # a run is named against the whole grid, which its worker does not see
    wanted = [(spec.hash, {TRIAL_SPEC: spec.to_json(), TAG_HASH: spec.hash,
                           TRIAL_RUN_NAME: naming.run_name(spec, varying)}) for spec in unique]
    with enqueue_lock(storage_url, name):
        attrs = study.user_attrs
        if attrs.get(STUDY_GRID_ID, gid) != gid or attrs.get(STUDY_KIND, "grid") != "grid":
            raise StoreError(
                f"study {name!r} in {describe(str(storage_url))} holds another grid; choose a new --study name"
            )
        created = STUDY_PARENT_RUN_ID not in attrs
        if created:  # the parent run belongs to the study, not to this process: no host:pid owner to reap it by
            parent = tracker.start_parent(
                run_name or name,
                {TAG_STUDY: name, TAG_N_SPECS: len(unique), TAG_OWNER: "optuna-study", **(parent_tags or {})},
                parent_params,
            )
            for key, value in {STUDY_KIND: "grid", STUDY_GRID_ID: gid, STUDY_EXPERIMENT: experiment,
                               STUDY_TRACKING_URI: tracker.tracking_uri, TAG_TOTAL: len(unique),
                               STUDY_PARENT_RUN_ID: parent}.items():  # the parent last: it says "set up"
                study.set_user_attr(key, value)
        enqueue_missing(study, wanted)
    return name, created


def objective_value(result: RunResult) -> float:
    """What a grid trial reports to Optuna: the final validation loss (inf if not finite)."""
    v = result.final.get("val_loss", math.inf)
    return float(v) if math.isfinite(v) else math.inf


class GridTrialRunner:
    """Runs the trials of one grid study in one worker (see the module docstring)."""

    def __init__(self, study: optuna.Study, ctx: WorkerContext) -> None:
        attrs = study.user_attrs
        self.study, self.ctx = study, ctx
        self.tracker = Tracker(attrs[STUDY_EXPERIMENT], ctx.tracking_uri or attrs[STUDY_TRACKING_URI])
        self.parent = attrs.get(STUDY_PARENT_RUN_ID)
        self.registry = get_registry()

    def _kill_predecessor(self, run_id: str | None, trial: optuna.Trial) -> None:
        if not run_id:
            return
        run = self.tracker.client.get_run(run_id)
        if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
            self.tracker.mark(run_id, "interrupted", f"its worker stopped; retried as trial {trial.number}")

    def group_key(self, frozen: Any) -> tuple | None:
        """Trials with the same key train together as one stack (None: this one trains alone)."""
        if self.ctx.engine == "loop":
            return None
        spec = RunSpec.from_json(frozen.user_attrs[TRIAL_SPEC])
        return stack_key(spec) if stackable(spec, self.registry) else None

    def max_batch(self) -> int:
        """How many trials one batch may hold (``--stack-size``; default: a stack's default size)."""
        return self.ctx.stack_size or MAX_STACK

    def __call__(self, trial: optuna.Trial) -> float:
        ((state, value, message),) = self.batch([trial])
        if state == TrialState.FAIL:
            raise TrialFailed(message)
        return value

    def batch(self, trials: Sequence[optuna.Trial]) -> list[tuple[TrialState, float | None, str]]:
        """Run the claimed trials' specs as one unit (a stack where they can stack), each logged
        as its own MLflow run; returns each trial's (state, value, message)."""
        from suite.engine.units import run_unit
        from suite.report import tables  # matplotlib only when a run finishes

        outcomes: list[tuple[TrialState, float | None, str] | None] = [None] * len(trials)
        todo: list[int] = []
        specs = [RunSpec.from_json(t.user_attrs[TRIAL_SPEC]) for t in trials]
        for i, (trial, spec) in enumerate(zip(trials, specs, strict=True)):
            self._kill_predecessor(trial.user_attrs.get(TRIAL_RUN_ID), trial)
            done = self.tracker.done_run(spec.hash)
            if done is None:
                todo.append(i)
                continue
            trial.set_user_attr(TRIAL_RUN_ID, done.info.run_id)
            trial.set_user_attr(TAG_REUSED, True)
            self.ctx.say(f"[{self.ctx.label}] {spec.name} [{spec.hash}]: already in MLflow, not run again")
            outcomes[i] = (TrialState.COMPLETE, float(done.data.metrics.get("val_loss", math.inf)), "")
        run_ids: dict[int, str] = {}
        try:
            for i in todo:
                name = trials[i].user_attrs.get(TRIAL_RUN_NAME)  # named against the whole grid when submitted
                run_ids[i] = self.tracker.start_run(
                    specs[i], self.registry, device=self.ctx.device, parent_run_id=self.parent,
                    tags={TAG_STUDY: self.study.study_name, TAG_TRIAL: trials[i].number, TRIAL_WORKER: self.ctx.label,
                          **({MLFLOW_RUN_NAME: name} if name else {})},
                )
                trials[i].set_user_attr(TRIAL_RUN_ID, run_ids[i])
            if todo:
                numbers = [trials[i].number for i in todo]
                self.tracker.after_write(lambda: self.ctx.started(self.study.study_name, numbers))

            def on_eval(j: int, step: int, metrics: dict) -> None:
                self.tracker.log_metrics(run_ids[todo[j]], step, metrics)

            for j, result in run_unit([specs[i] for i in todo], self.ctx.device, self.registry, on_eval,
                                      engine=self.ctx.engine):
                i = todo[j]
                fig = tables.run_figure(result) if result.history else None
                mark_unstable(self.tracker, run_ids[i], result)
                self.tracker.finish(run_ids.pop(i), result, figure=fig)
                if fig is not None:
                    tables.close(fig)
                trials[i].set_user_attr(TRIAL_STATUS, result.status)
                self.ctx.say(f"[{self.ctx.label}] {result.spec.name} [{result.spec.hash}]: {result.status} "
                             f"in {result.seconds:.1f} s")
                outcomes[i] = ((TrialState.FAIL, None, result.reason) if result.status == "failed"
                               else (TrialState.COMPLETE, objective_value(result), ""))
        except BaseException:
            for run_id in run_ids.values():
                self.tracker.mark(run_id, "interrupted", "interrupted by the user or a signal")
            raise
        return outcomes  # type: ignore[return-value]

    def close(self) -> None:
        """The grid is done: end its parent run (idempotent; any worker may do it)."""
        if self.parent:
            run = self.tracker.client.get_run(self.parent)
            if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
                self.tracker.mark(self.parent, "completed")


