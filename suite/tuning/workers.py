"""Where trials run: ``suite tune``'s jobs on the one process pool (:mod:`suite.exec.pool`).

Each worker opens the shared Optuna storage and claims the studies' enqueued trials one at a
time (:mod:`suite.distributed.worker`), as ``suite worker`` processes on other machines do: the
storage is the only coordination. Workers do not talk to MLflow: their runs' events (start,
eval, done, tag, interrupted, echo) go to the parent process through the pool, and the parent's
:class:`suite.tuning.trials.TrialSink` (MLflow) is the tracking store's single writer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from suite.engine.evalbatch import EvalBatches
from suite.exec.phases import CLOCK
from suite.exec.pool import Pool, WorkerEnv
from suite.vocab import TAG_DEVICE

SINK_METHODS = ("start", "eval", "eval_rows", "done", "tag", "interrupted", "echo", "settle")


@dataclass(frozen=True)
class StudyJob:
    """Work on a study until none of its enqueued trials is waiting or running."""

    plan: Any  # suite.tuning.plan.StudyPlan


@dataclass(frozen=True)
class StudyGroupJob:
    """Work on several studies at once until none of their enqueued trials is waiting or
    running: each round a population of every study, trained as one stack
    (:func:`suite.tuning.trials.train_populations`); each trial is told to its own study."""

    plans: tuple[Any, ...]  # suite.tuning.plan.StudyPlan each, all with one suite.tuning.trials.share_key


def study_jobs(plans: Sequence[Any], registry: Any, *, shares: int = 1, engine: str = "auto",
               population: int | None = None, shared: bool | None = None) -> list[StudyJob | StudyGroupJob]:
    """The jobs that train ``plans``' trials, ``shares`` of each (one per worker): a
    :class:`StudyGroupJob` for every set of two or more studies with one :func:`suite.tuning.trials.share_key`
    (unless sharing is off: ``shared=False``, :func:`suite.distributed.worker.sharing_on`, the loop engine, or
    ``--population 1``, one trial at a time), a :class:`StudyJob` for each other study."""
    from suite.distributed.worker import sharing_on
    from suite.tuning.trials import share_key

    shared = (sharing_on() if shared is None else shared) and population != 1
    groups: dict[Any, list[Any]] = {}
    for i, plan in enumerate(plans):
        key = share_key(plan, registry) if shared and engine != "loop" else None
        groups.setdefault(("one", i) if key is None else key, []).append(plan)
    units: list[StudyJob | StudyGroupJob] = [
        StudyGroupJob(tuple(group)) if len(group) > 1 else StudyJob(group[0]) for group in groups.values()]
    return [job for _ in range(shares) for job in units]


def job_plans(job: Any) -> tuple[Any, ...]:
    """The study plans a job works on (none for re-evaluations)."""
    if isinstance(job, StudyJob):
        return (job.plan,)
    return job.plans if isinstance(job, StudyGroupJob) else ()


@dataclass(frozen=True)
class SpecJob:
    """One run of a :class:`SpecsJob`: a RunSpec (re-evaluation of a best configuration),
    reported as ``key``."""

    key: str
    study: str
    spec: Any  # suite.specs.spec.RunSpec
    tags: dict
    objective: Any = None  # suite.tuning.objective.Objective: a run that reaches its target stops there


@dataclass(frozen=True)
class SpecsJob:
    """Train a study's re-evaluation runs (:class:`SpecJob` each) as one unit: one stack where
    their components stack, each row stopping at its own target."""

    study: str
    runs: tuple[SpecJob, ...]


def merged_specs_jobs(jobs: Sequence[SpecsJob], key_of: Any) -> list[SpecsJob]:
    """The re-evaluations of studies with one share key (``key_of(study name)``, None: alone)
    merged into one :class:`SpecsJob`: they train as one stack, each run still its own study's."""
    groups: dict[Any, list[SpecsJob]] = {}
    for i, job in enumerate(jobs):
        key = key_of(job.study)
        groups.setdefault(("one", i) if key is None else key, []).append(job)
    return [group[0] if len(group) == 1 else SpecsJob("+".join(j.study for j in group),
                                                      tuple(run for j in group for run in j.runs))
            for group in groups.values()]


@dataclass(frozen=True)
class Settings:
    """What every worker needs besides its jobs."""

    storage: str | None
    study_seed: int | None
    pruner: str
    heartbeat: Any = None  # suite.stores.HeartbeatPolicy
    population: int | None = None  # trials per population (None: the study's, else the default)
    engine: str = "auto"


@dataclass(frozen=True)
class JobTask:
    """One job and the settings it runs with: the pool's payload."""

    job: StudyJob | StudyGroupJob | SpecsJob
    settings: Settings


class EmitSink:
    """A :class:`suite.tuning.trials.TrialSink` that sends every call to the parent as a pool event;
    runs are tagged with the worker's device as the user named it (``cuda:1``, not the
    ``cuda:0`` an isolated worker sees)."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    def start(self, key: str, study: str, spec: Any, kind: str, tags: dict) -> None:
        self.env.emit("start", key, study, spec, kind, {**tags, TAG_DEVICE: self.env.device})

    def settle(self) -> None:
        self.env.emit("settle", os.getpid())  # the parent waits for the store only if Optuna is told here next

    def __getattr__(self, method: str):
        if method not in SINK_METHODS:
            raise AttributeError(method)
        return lambda *args: self.env.emit(method, *args)


@dataclass(frozen=True)
class OptunaShare:
    """What a study job spent in Optuna (asks, tells, sampling, pruning, storage), in which process."""

    pid: int
    seconds: float


def run_job(task: JobTask, env: WorkerEnv) -> OptunaShare | None:
    """Pool runner: run one tuning job in this worker."""
    from suite.engine.units import run_unit
    from suite.tuning.objective import at_target_is_completed, stop_at_target
    from suite.tuning.slots import run_group_share, run_study_share

    job, sink = task.job, EmitSink(env)
    if isinstance(job, (StudyJob, StudyGroupJob)):
        before = CLOCK.spent["optuna"]
        kw = dict(sink=sink, device=env.local, worker=env.wid, heartbeat=task.settings.heartbeat,
                  population=task.settings.population, engine=task.settings.engine)
        from suite.tracking.diagnose import storage_named

        with storage_named(task.settings.storage):  # the job's trouble line names a failing Optuna storage
            if isinstance(job, StudyJob):
                run_study_share(job.plan, task.settings.storage, **kw)
            else:
                run_group_share(list(job.plans), task.settings.storage, **kw)
        return OptunaShare(os.getpid(), CLOCK.spent["optuna"] - before)
    runs = job.runs
    # the stack's evaluations go to the parent one evaluation step at a time, as a population's do
    batches = EvalBatches(lambda evals: sink.eval_rows([(runs[j].key, step, m) for j, step, m in evals]))
    stacked = _StackEvals(batches, {run.key: j for j, run in enumerate(runs)})
    callbacks = []
    for j, run in enumerate(runs):
        sink.start(run.key, run.study, run.spec, "reeval", run.tags)
        if run.objective is not None and run.objective.stops_at_target:
            callbacks.append(stop_at_target(run.objective, run.spec, [], stacked, run.key))
        else:
            callbacks.append(lambda step, metrics, _j=j: batches.add(_j, step, metrics))
    running = {run.key for run in runs}
    try:
        for j, result in run_unit([run.spec for run in runs], env.local, env.registry,
                                  lambda j, step, metrics: callbacks[j](step, metrics), engine=task.settings.engine):
            batches.flush()  # every row's evaluations before a row's end
            result = at_target_is_completed(result)
            result.device = env.device
            sink.done(runs[j].key, result)
            running.discard(runs[j].key)
    except BaseException:
        batches.flush()
        for key in sorted(running):
            sink.interrupted(key)
        raise


class _StackEvals:
    """The ``eval`` of a sink for :func:`suite.tuning.objective.stop_at_target`: a stack's rows'
    evaluations gathered into one batch per evaluation step (:class:`EvalBatches`)."""

    def __init__(self, batches: EvalBatches, index: dict[str, int]) -> None:
        self.batches, self.index = batches, index

    def eval(self, key: str, step: int, metrics: dict[str, float]) -> None:
        self.batches.add(self.index[key], step, metrics)


class _SinkHandler:
    """The parent's side: forwards each event to the sink, and remembers the runs in flight so
    that a job whose worker died or raised has them marked interrupted."""

    def __init__(self, sink: Any, jobs: Sequence[JobTask]) -> None:
        self.sink, self.jobs = sink, jobs
        self.in_flight: dict[int, set[str]] = {}
        self.troubles: list[str] = []
        self.optuna_s: dict[int, float] = {}  # per worker process (not this one: its clock counts itself)

    def on_event(self, tid: int, device: str, kind: str, args: tuple) -> None:
        keys = self.in_flight.setdefault(tid, set())
        if kind == "start":
            keys.add(args[0])
        elif kind in ("done", "interrupted"):
            keys.discard(args[0])
        elif kind == "settle":  # a population ended; a worker process tells Optuna without waiting for the
            # store, this process (tasks run here) only once its runs are in it. The lines said next wait for
            # them either way (TrackerSink.echo)
            self.sink.settle(wait=not args or args[0] == os.getpid())
            return
        getattr(self.sink, kind)(*args)

    def on_wait(self) -> None:  # trial lines wait for their runs' writes, not for the next event
        self.sink.poll()

    def on_done(self, tid: int, result: Any) -> None:
        self.in_flight.pop(tid, None)
        if isinstance(result, OptunaShare) and result.pid != os.getpid():
            self.optuna_s[result.pid] = self.optuna_s.get(result.pid, 0.0) + result.seconds
        self.sink.settle(wait=False)  # a re-evaluation run (or a study's share) has ended: no tell follows

    def on_lost(self, tid: int, device: str, why: str) -> None:
        self.interrupt(tid)
        self.troubles.append(why)

    def interrupt(self, tid: int) -> None:
        for key in sorted(self.in_flight.pop(tid, ())):
            self.sink.interrupted(key)


def run(jobs: Sequence[StudyJob | StudyGroupJob | SpecsJob], devices: Sequence[str], settings: Settings, sink: Any,
        adaptive: bool = False) -> list[str]:
    """Run ``jobs`` on one worker per device entry (in this process when there is one; with
    ``adaptive``, in this process while workers are measured not to pay off: :class:`Pool`).
    ``sink`` receives every event in this process.

    Returns one line per job whose worker died or raised (its unfinished runs are marked
    interrupted and its running trials failed, so a rerun redoes them); the others go on."""
    from suite.stores import open_storage
    from suite.tuning.studies import fail_orphan_trials

    tasks = [JobTask(job, settings) for job in jobs]
    handler = _SinkHandler(sink, tasks)
    pool = Pool(devices, run_job, name="suite-tune", adaptive=adaptive)
    try:
        pool.run(tasks, handler)
    except BaseException:
        for tid in list(handler.in_flight):
            handler.interrupt(tid)
        raise
    finally:
        if handler.optuna_s:  # the workers ran side by side: their mean Optuna time is this process's share of waiting
            CLOCK.reassign("training", "optuna", sum(handler.optuna_s.values()) / len(handler.optuna_s))
        if pool.pids:
            plans = list(dict.fromkeys(p for t in tasks for p in job_plans(t.job)))
            fail_orphan_trials(open_storage(settings.storage), plans, {str(pid) for pid in pool.pids})
    return handler.troubles
