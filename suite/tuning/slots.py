"""Tuning studies that any number of workers, on any number of machines, share exactly.

``--trials N`` is made exact by slots: the study holds N enqueued trials without params (user
attributes ``suite.slot`` = k and ``suite.key`` = ``slot-k``), and workers only claim enqueued
trials (:mod:`suite.distributed.worker`), never create new ones. A claimed slot samples its params from
the study's sampler as any trial would (nothing is fixed). A slot whose worker died is failed
and enqueued again with the same slot number; a later invocation tops up the slots that no
trial holds any more (``--trials`` raised, trials interrupted). Reading which slots are held and
enqueueing the others happens under the storage's own lock (:mod:`suite.distributed.enqueue`),
so any number of invocations started at once, here or on other machines, enqueue each slot
once; a copy enqueued anyway (a storage without such a lock) is discarded when it is claimed
(:func:`suite.distributed.worker.duplicate_of`).

Everything a remote ``suite worker`` needs to run a trial is stored on the study: its
settings (``suite.settings``, from :meth:`suite.tuning.plan.StudyPlan.settings`), the pruner, study
seed and trial count (``suite.tune``), and where to log (experiment, tracking URI, the study's
MLflow parent run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from suite.distributed.enqueue import enqueue_lock, enqueue_missing
from suite.distributed.worker import Worker, WorkerContext
from suite.params import Space
from suite.registry import get_registry
from suite.tuning.budget import Budget
from suite.tuning.objective import Objective
from suite.tuning.plan import StudyPlan
from suite.tuning.sampling import design_seed, make_pruner, make_sampler
from suite.tuning.space import VARIANT_FAMILIES, Variant
from suite.tuning.trials import TrialObjective, TrialSink, share_key, train_populations
from suite.vocab import (
    STUDY_EXPERIMENT,
    STUDY_KIND,
    STUDY_PARENT_RUN_ID,
    STUDY_SETTINGS,
    STUDY_TRACKING_URI,
    STUDY_TUNE,
    STUDY_UID,
    TAG_STUDY,
    TAG_TRIAL,
    TRIAL_RETRY_OF,
    TRIAL_SLOT,
)


def share(study: optuna.Study, storage_url: str | None, *, trials: int, pruner: str, study_seed: int | None,
          experiment: str, tracking_uri: str, parent_run_id: str, population: int | None = None) -> int:
    """Make ``study`` (in the storage at ``storage_url``) workable by workers anywhere and
    enqueue the slots no trial holds, atomically across processes; returns how many were
    enqueued."""
    tune = {"trials": trials, "pruner": pruner, "study_seed": study_seed}
    if population is not None:
        tune["population"] = population
    attrs = {STUDY_KIND: "tune", STUDY_TUNE: tune,
             STUDY_EXPERIMENT: experiment, STUDY_TRACKING_URI: tracking_uri, STUDY_PARENT_RUN_ID: parent_run_id}
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    with enqueue_lock(storage_url, study.study_name):
        return enqueue_missing(study, [(f"slot-{k}", {TRIAL_SLOT: k}) for k in range(trials)])


def plan_of(study: optuna.Study) -> StudyPlan:
    """The :class:`StudyPlan` a study was made with, from its stored settings."""
    s = study.user_attrs[STUDY_SETTINGS]
    plan = StudyPlan(
        problem=s["problem"], variant=Variant(*(s[f] for f in VARIANT_FAMILIES)), batch_size=int(s["batch_size"]),
        budget=Budget.parse(s["budget"]), objective=Objective.parse(s["objective"]), seeds=int(s["seeds"]),
        space=tuple((k, Space.from_dict(v)) for k, v in s["space"].items()),
        fixed=tuple(sorted(s["fixed"].items())), eval_every=s["eval_every"], eval_growth=s.get("eval_growth"),
        study_name=study.study_name, study_index=int(s.get("study_index", 0)),
    )
    return plan


class TuneTrialRunner:
    """Runs the trials of one tuning study in one worker: the study's sampler and pruner, the
    same objective as ``suite tune`` (:class:`suite.tuning.trials.TrialObjective`). Without a ``sink``
    the runs go straight to the study's MLflow experiment, children of its parent run."""

    def __init__(self, study: optuna.Study, ctx: WorkerContext, sink: TrialSink | None = None,
                 on_close: Callable[..., None] | None = None) -> None:
        from suite.tuning.tracking import TrackerSink

        self.study, self.ctx, self.on_close = study, ctx, on_close
        self.plan = plan_of(study)
        tune = study.user_attrs[STUDY_TUNE]
        started = len([t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
        salt = f"{ctx.salt or ctx.label}|n{started}"  # as `suite tune` seeds a worker's sampler
        self.population_size = ctx.stack_size or int(tune.get("population") or 1)  # older studies: one at a time
        design = design_seed(tune["study_seed"], self.plan, study.user_attrs[STUDY_UID])
        study.sampler = make_sampler(self.plan, tune["trials"], tune["study_seed"], salt=salt,
                                     population=self.population_size, design_seed=design)
        study.pruner = make_pruner(tune["pruner"])
        registry = get_registry()
        self.tracker = None
        if sink is None:
            from suite.tracking.tracker import Tracker

            attrs = study.user_attrs
            self.tracker = Tracker(attrs[STUDY_EXPERIMENT], ctx.tracking_uri or attrs[STUDY_TRACKING_URI])
            sink = TrackerSink(self.tracker, registry, {self.plan.name: attrs[STUDY_PARENT_RUN_ID]}, ctx.say,
                               on_started=lambda trials: ctx.started(self.plan.name, [n for _, n in trials]))
        self.objective = TrialObjective(self.plan, registry, ctx.device, sink, worker=ctx.label, engine=ctx.engine)
        components = self.plan.variant.components(self.plan.problem)
        self.stackable = ctx.engine != "loop" and all(registry.get(f, n).stacked is not None
                                                      for f, n in components.items())

    def __call__(self, trial: optuna.Trial) -> float:
        if self.tracker is not None:
            self._kill_predecessors(trial)
        return self.objective(trial)

    def group_key(self, frozen: Any) -> str | None:
        """Every slot of a study can train in one population, if its components stack."""
        return self.plan.name if self.stackable else None

    def max_batch(self) -> int:
        """Trials per population (``--population``)."""
        return self.population_size

    def share_key(self) -> tuple | None:
        """Studies with one key train their populations as one stack (:meth:`batch_group`): the
        stack key of the study's runs (:func:`suite.tuning.trials.share_key`); None where they
        do not stack, with the loop engine, or one trial at a time (``--population 1``)."""
        if not self.stackable or self.population_size == 1:
            return None
        if not hasattr(self, "_share_key"):
            self._share_key = share_key(self.plan, get_registry())
        return self._share_key

    def batch(self, trials: list[optuna.Trial]) -> list[tuple[TrialState, float | None, str]]:
        """A population: the claimed slots sample their values and train as one stack."""
        if self.tracker is not None:
            for trial in trials:
                self._kill_predecessors(trial)
        return self.objective.population(trials)

    @staticmethod
    def batch_group(parts: list[tuple[TuneTrialRunner, list[optuna.Trial]]]
                    ) -> list[list[tuple[TrialState, float | None, str]]]:
        """Several studies' populations (one runner and its claimed slots each) trained as one
        unit: rows that stack form one stack across the studies (:func:`train_populations`);
        each trial is still judged, pruned and told to its own study."""
        for runner, trials in parts:
            if runner.tracker is not None:
                for trial in trials:
                    runner._kill_predecessors(trial)
        return train_populations([(runner.objective, trials) for runner, trials in parts])

    def _kill_predecessors(self, trial: optuna.Trial) -> None:
        """A retried trial: mark the runs its lost predecessors left RUNNING as interrupted."""
        for number in trial.user_attrs.get(TRIAL_RETRY_OF, []):
            for run in self.tracker.find_runs({TAG_STUDY: self.plan.name, TAG_TRIAL: str(number)},
                                              status="RUNNING"):
                why = f"its worker was lost; retried as trial {trial.number}"
                self.tracker.mark(run.info.run_id, "interrupted", why)

    def close(self) -> None:
        """The study is done: log its outcome to its parent run, if nobody has yet (with
        ``on_close``, which ``suite worker`` gives; a `suite tune` session logs it itself)."""
        if self.tracker is None or self.on_close is None:
            return
        parent = self.study.user_attrs[STUDY_PARENT_RUN_ID]
        if self.tracker.run_status(parent) == "RUNNING":
            self.on_close(self.tracker, self.study, self.plan, parent)


def runner_with_sink(sink: TrialSink) -> Callable[[optuna.Study, WorkerContext], Any]:
    """A runner factory for ``suite tune``'s own worker processes, whose runs go to ``sink``."""
    return lambda study, ctx: TuneTrialRunner(study, ctx, sink)



def n_slots_left(study: optuna.Study) -> int:
    """Trials still waiting or running."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))


def run_study_share(plan: StudyPlan, storage_url: str | None, *, sink: TrialSink, device: str, worker: int = 0,
                    heartbeat: Any = None, population: int | None = None, engine: str = "auto") -> None:
    """Work on ``plan``'s study here until none of its trials is waiting or running: claim its
    enqueued slots a population at a time (:mod:`suite.distributed.worker`), together with any
    other process or machine working on the same storage."""
    ctx = WorkerContext(device=device, quiet=True, salt=f"w{worker}", engine=engine, stack_size=population)
    Worker(storage_url, [plan.name], ctx, heartbeat_policy=heartbeat, runners={"tune": runner_with_sink(sink)}).run()


def run_group_share(plans: list[StudyPlan], storage_url: str | None, *, sink: TrialSink, device: str,
                    worker: int = 0, heartbeat: Any = None, population: int | None = None,
                    engine: str = "auto") -> None:
    """Work on several studies here at once until none of their trials is waiting or running:
    each round claims a population from every study that has waiting slots and trains them as
    one stack (:meth:`TuneTrialRunner.batch_group`; the studies share their problem, batch size,
    budget and evaluation schedule: :func:`suite.tuning.workers.shared_groups`)."""
    ctx = WorkerContext(device=device, quiet=True, salt=f"w{worker}", engine=engine, stack_size=population)
    Worker(storage_url, [p.name for p in plans], ctx, heartbeat_policy=heartbeat,
           runners={"tune": runner_with_sink(sink)}, shared=True).run()
