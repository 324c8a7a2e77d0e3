"""One ``suite tune`` invocation: validate, open the studies, run the trials, re-evaluate,
report. Everything that can be refused is refused before anything is stored or logged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from suite.exec.phases import CLOCK
from suite.registry import Registry
from suite.stores import open_storage
from suite.tracking import diagnose
from suite.tracking.tracker import Tracker
from suite.tuning import edges, slots, winners, workers
from suite.tuning.labels import label_keys
from suite.tuning.objective import Objective
from suite.tuning.plan import StudyPlan
from suite.tuning.studies import (
    check_settings,
    open_study,
    reevaluation_specs,
    resolve_names,
    storage_label,
    top_trials,
)
from suite.tuning.tracking import (
    TrackerSink,
    finish_study_parent,
    finish_tune_run,
    previous_report,
    start_tune_run,
    study_parent,
)
from suite.vocab import STUDY_REEVALS, STUDY_UID, TAG_REEVAL_OF, TAG_STUDIES, TAG_STUDY, TAG_STUDY_INDEX

if TYPE_CHECKING:
    from suite.progress import Progress


@dataclass(frozen=True)
class Request:
    """A validated tuning request."""

    plans: Sequence[StudyPlan]
    trials: int
    pruner: str
    study_seed: int | None
    storage: str | None
    reevaluate: int  # fresh seeds per re-evaluated trial (0: none)
    devices: Sequence[str]
    experiment: str
    tracking_uri: str | None
    objective: Objective
    submit_only: bool = False
    heartbeat: Any = None  # suite.stores.HeartbeatPolicy of this invocation's workers
    reevaluate_top: int = 3  # how many of each study's best trials are re-evaluated; the best mean wins
    population: int | None = None  # trials trained at once as one stack (None: the default)
    engine: str = "auto"
    adaptive: bool = False  # no --workers: run in this process while workers are measured not to pay off


@dataclass
class TuneOutcome:
    summaries: list[winners.StudySummary]
    markdown: str
    csv: str
    storage: str
    experiment: str
    tracking_uri: str
    report_run_id: str
    troubles: list[str]  # workers that died or raised
    experiment_id: str | None = None


def run_session(req: Request, registry: Registry, echo: Callable[[str], None],
                trials: Progress | None = None) -> TuneOutcome | None:
    """Run a tuning request to the end and report it (see ``suite tune --help``). With
    ``submit_only``, only create the studies and enqueue their trials (None is returned).
    ``echo`` is told what happens, and each trial's line unless ``trials`` counts them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the studies, their slots and parent runs (the MLflow calls count as tracking); a store failing here: exit code 2
    with CLOCK.phase("building"), diagnose.told(req.tracking_uri, storage=req.storage):
        storage = open_storage(req.storage)
        req = replace(req, plans=resolve_names(storage, req.plans))  # studies named before the settings hash
        check_settings(storage, req.plans)
        tracker = Tracker(req.experiment, req.tracking_uri)  # the experiment exists before any worker starts
        studies = {plan.name: open_study(storage, plan) for plan in req.plans}
        label = storage_label(req.storage)
        parents = {plan.name: study_parent(tracker, plan, studies[plan.name].user_attrs[STUDY_UID], trials=req.trials,
                                           pruner=req.pruner, study_seed=req.study_seed, storage=label)
                   for plan in req.plans}
        added_any, full = False, []
        for plan in req.plans:  # enqueue the trials still to do, for any worker anywhere to claim
            added = slots.share(studies[plan.name], req.storage, trials=req.trials, pruner=req.pruner,
                                study_seed=req.study_seed, experiment=tracker.experiment_name,
                                tracking_uri=tracker.tracking_uri,
                                parent_run_id=parents[plan.name], population=req.population)
            added_any = added_any or bool(added)
            if not added and not slots.n_slots_left(studies[plan.name]):
                full.append(plan.name)
        if len(full) == 1:
            echo(f"[{full[0]}] already holds {req.trials} trials")
        elif full:  # one line, not one per study
            echo(f"{len(full)} of the {len(req.plans)} studies already hold {req.trials} trials each")
    if req.submit_only:
        return None
    problems = list(dict.fromkeys(p.problem for p in req.plans))
    studies_tag = ",".join(parents)[:4000]
    pending = any(slots.n_slots_left(s) for s in studies.values())  # trials waiting or running anywhere
    idle = not added_any and not pending
    planned = None  # the re-evaluations, planned here when the studies are full (their top trials are final)
    if idle and req.reevaluate:
        planned = _reeval_jobs(req, registry, storage, parents)
        idle = not planned[0]  # and maybe all re-evaluated before
    # a rerun that runs nothing reports on the run an earlier invocation left, not on a second one
    report_run = previous_report(tracker, studies_tag) if idle else None
    fresh = report_run is None
    report_run = report_run or start_tune_run(
        tracker, f"tune-{'+'.join(problems)}",
        tags={TAG_STUDIES: studies_tag},
        params={"studies": len(req.plans), "trials": req.trials, "pruner": req.pruner,
                "study_seed": req.study_seed, "storage": label, "reevaluate": req.reevaluate,
                "objective": str(req.objective), "devices": ",".join(req.devices)},
    )
    sink = TrackerSink(tracker, registry, parents,
                       echo if trials is None else (lambda line: trials.tick(line, trial_status(line))),
                       sections={p.name: p.section for p in req.plans if p.section is not None},
                       labels={p.name: label_keys(p) for p in req.plans},
                       on_started=None if trials is None else (  # --verbose: "started: [study] trial N"
                           lambda started: trials.started([f"[{study}] trial {n}" for study, n in started])))
    settings = workers.Settings(req.storage, req.study_seed, req.pruner, req.heartbeat, req.population, req.engine)
    # every worker works on every study (with --workers N: N shares of each; chosen by measured costs: one job per
    # study, which a worker, once started, takes as a whole); studies that share a stack key train as one stack
    shares = 1 if req.adaptive else len(req.devices)
    try:
        jobs = workers.study_jobs(req.plans, registry, shares=shares, engine=req.engine, population=req.population)
        with tracker.batched():  # a population's runs are written together (suite.tracking.bulk)
            troubles = _run_trials(jobs, req, settings, sink, list(studies.values()), trials) if pending else []
            reevals = (_reevaluate(req, sink, settings, troubles, parents,
                                   planned or _reeval_jobs(req, registry, storage, parents))
                       if req.reevaluate else {})
        with CLOCK.phase("reporting"):  # tables and figures (their MLflow writes count as tracking)
            summaries = []
            # a rerun that ran nothing keeps the figures an earlier invocation logged on the parent
            pngs = winners.study_pngs([studies[p.name] for p in req.plans]) if fresh else [{} for _ in req.plans]
            for plan, figs in zip(req.plans, pngs, strict=True):
                study = studies[plan.name]
                summary = winners.summarize(study, plan, reevals.get(plan.name))
                summary.edges = edges.of_study(plan, summary.best_params, registry)
                finish_study_parent(tracker, parents[plan.name], summary, figs)
                summaries.append(summary)
            md = winners.markdown(summaries, req.objective.label)
            csv_text = winners.csv_text(summaries)
            if fresh:
                figs = winners.figures(summaries, req.objective.label)
                finish_tune_run(tracker, report_run, {"table.md": md, "table.csv": csv_text}, figs)
                winners.close_all(figs)
    except BaseException:
        for run_id in [*parents.values(), *([report_run] if fresh else [])]:
            tracker.mark(run_id, "interrupted", "tuning did not finish")
        raise
    return TuneOutcome(summaries, md, csv_text, label, tracker.experiment_name, tracker.tracking_uri, report_run,
                       troubles, tracker.experiment_id)


def trial_status(line: str) -> str:
    """A trial line's outcome for a :class:`suite.progress.Progress`: failed, diverged (pruned as
    diverged) or completed (a value, or pruned)."""
    outcome = line.partition("] trial ")[2].partition(": ")[2]
    if outcome.startswith("fail"):
        return "failed"
    return "diverged" if outcome.startswith("pruned (diverged") else "completed"


def _run_trials(jobs: list, req: Request, settings: workers.Settings, sink: TrackerSink, studies: list,
                trials: Progress | None) -> list[str]:
    """Train the studies' waiting trials (``trials``: counts them as they finish)."""
    if trials is not None:
        trials.begin(sum(slots.n_slots_left(s) for s in studies))
    try:
        return workers.run(jobs, req.devices, settings, sink, adaptive=req.adaptive)
    finally:
        if trials is not None:
            trials.end()


def _reevaluate(req: Request, sink: TrackerSink, settings: workers.Settings, troubles: list[str],
                parents: dict[str, str], planned) -> dict[str, dict[int, winners.Reeval]]:
    """Re-run each study's top ``reevaluate_top`` trials on ``reevaluate`` fresh seeds each
    (``planned`` by :func:`_reeval_jobs`), spread over the workers: ``{study: {trial number:
    Reeval}}`` (the winner is the best mean, which resists the winner's curse of picking the
    luckiest tuning draw).

    A re-evaluation an earlier invocation finished for the same MLflow parent run is not run
    again: its value is kept on the Optuna study (:data:`STUDY_REEVALS`; a trial's spec, seed
    and budget are fixed by the study's settings, so the value would be the same)."""
    jobs, keys, done, loaded = planned
    plans = {p.name: p for p in req.plans}
    try:
        if jobs:
            troubles += workers.run(jobs, req.devices, settings, sink, adaptive=req.adaptive)
    finally:  # what finished is kept even if the rest was interrupted
        for name, by_trial in keys.items():
            fresh: dict[str, dict[str, float | None]] = {}
            for number, items in by_trial.items():
                for key in items:
                    result = sink.results.get(key)
                    if key not in done and result is not None and result.status in ("completed", "diverged"):
                        done[key] = reeval_value(plans[name].objective, result)
                        fresh.setdefault(str(number), {})[key.rpartition("#")[2]] = done[key]
            if fresh:
                _keep_reevals(loaded[name], parents[name], fresh)
    out: dict[str, dict[int, winners.Reeval]] = {}
    for name, by_trial in keys.items():
        for number, items in by_trial.items():
            values = [done.get(key) for key in items]  # a run that did not finish counts as diverged
            out.setdefault(name, {})[number] = winners.Reeval(
                [v for v in values if v is not None], sum(v is None for v in values),
                per_seed={int(key.rpartition("#")[2]): done.get(key) for key in items})
    return out


def _reeval_jobs(req: Request, registry: Registry, storage, parents: dict[str, str]):
    """The re-evaluation runs still to do (a ``SpecsJob`` per study, or per group of studies that share a
    stack when one worker trains them), every re-evaluation's key per study
    and trial, the values of those done before (by key), and the loaded studies."""
    import optuna

    jobs: list[workers.SpecsJob] = []  # one per study (or group): its re-evaluations train as one stack
    keys: dict[str, dict[int, list[str]]] = {}
    done: dict[str, float | None] = {}
    loaded = {}
    for plan in req.plans:
        study = loaded[plan.name] = optuna.load_study(study_name=plan.name, storage=storage)
        cached = study.user_attrs.get(STUDY_REEVALS, {}).get(parents[plan.name], {})
        runs: list[workers.SpecJob] = []
        for trial in top_trials(study, req.reevaluate_top):
            for spec in reevaluation_specs(plan, trial, registry, req.reevaluate):
                key = f"{plan.name}#reeval{trial.number}#{spec.seed}"
                keys.setdefault(plan.name, {}).setdefault(trial.number, []).append(key)
                if str(spec.seed) in cached.get(str(trial.number), {}):
                    done[key] = cached[str(trial.number)][str(spec.seed)]
                    continue
                tags = {TAG_STUDY: plan.name, TAG_REEVAL_OF: trial.number, TAG_STUDY_INDEX: plan.study_index}
                runs.append(workers.SpecJob(key, plan.name, spec, tags, plan.objective))
        if runs:
            jobs.append(workers.SpecsJob(plan.name, tuple(runs)))
    if len(jobs) > 1 and (req.adaptive or len(req.devices) == 1):  # one worker: studies that share, share a stack
        groups = workers.study_jobs(req.plans, registry, engine=req.engine, population=req.population)
        group_of = {p.name: i for i, job in enumerate(groups) if isinstance(job, workers.StudyGroupJob)
                    for p in job.plans}
        jobs = workers.merged_specs_jobs(jobs, group_of.get)
    return jobs, keys, done, loaded


def _keep_reevals(study, parent_run_id: str, fresh: dict[str, dict[str, float | None]]) -> None:
    """Add finished re-evaluations to the study's record of them (for this MLflow parent run)."""
    stored = dict(study.user_attrs.get(STUDY_REEVALS, {}))
    mine = {k: dict(v) for k, v in stored.get(parent_run_id, {}).items()}
    for number, seeds in fresh.items():
        mine.setdefault(number, {}).update(seeds)
    stored[parent_run_id] = mine
    study.set_user_attr(STUDY_REEVALS, stored)


def reeval_value(objective: Objective, result: Any) -> float | None:
    """A re-evaluation run's value; ``None`` if it did not complete (counted as diverged). A run
    that went on past its target still has its value: the first step below it."""
    if result is None or result.status != "completed":
        return None
    return objective.value(result)
