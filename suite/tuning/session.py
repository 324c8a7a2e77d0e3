"""One ``suite tune`` invocation: validate, open the studies, run the trials, re-evaluate,
report. Everything that can be refused is refused before anything is stored or logged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from suite.exec.phases import CLOCK
from suite.registry import Registry
from suite.stores import open_storage
from suite.tracking.tracker import Tracker
from suite.tuning import report, slots, workers
from suite.tuning.plan import Objective, StudyPlan
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
from suite.vocab import STUDY_UID, TAG_REEVAL_OF, TAG_STUDIES, TAG_STUDY


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


@dataclass
class TuneOutcome:
    summaries: list[report.StudySummary]
    markdown: str
    csv: str
    storage: str
    experiment: str
    tracking_uri: str
    report_run_id: str
    troubles: list[str]  # workers that died or raised
    experiment_id: str | None = None


def run_session(req: Request, registry: Registry, echo: Callable[[str], None]) -> TuneOutcome | None:
    """Run a tuning request to the end and report it (see ``suite tune --help``). With
    ``submit_only``, only create the studies and enqueue their trials (None is returned)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with CLOCK.phase("building"):  # the studies, their slots and parent runs (the MLflow calls count as tracking)
        storage = open_storage(req.storage)
        req = replace(req, plans=resolve_names(storage, req.plans))  # studies named before the settings hash
        check_settings(storage, req.plans)
        tracker = Tracker(req.experiment, req.tracking_uri)  # the experiment exists before any worker starts
        studies = {plan.name: open_study(storage, plan) for plan in req.plans}
        label = storage_label(req.storage)
        parents = {plan.name: study_parent(tracker, plan, studies[plan.name].user_attrs[STUDY_UID], trials=req.trials,
                                           pruner=req.pruner, study_seed=req.study_seed, storage=label)
                   for plan in req.plans}
        added_any = False
        for plan in req.plans:  # enqueue the trials still to do, for any worker anywhere to claim
            added = slots.share(studies[plan.name], trials=req.trials, pruner=req.pruner, study_seed=req.study_seed,
                                experiment=tracker.experiment_name, tracking_uri=tracker.tracking_uri,
                                parent_run_id=parents[plan.name], population=req.population)
            added_any = added_any or bool(added)
            if not added and not slots.n_slots_left(studies[plan.name]):
                echo(f"[{plan.name}] already holds {req.trials} trials")
    if req.submit_only:
        return None
    problems = list(dict.fromkeys(p.problem for p in req.plans))
    studies_tag = ",".join(parents)[:4000]
    idle = not added_any and not req.reevaluate and not any(slots.n_slots_left(s) for s in studies.values())
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
    sink = TrackerSink(tracker, registry, parents, echo,
                       sections={p.name: p.section for p in req.plans if p.section is not None})
    settings = workers.Settings(req.storage, req.study_seed, req.pruner, req.heartbeat, req.population, req.engine)
    n = len(req.devices)
    try:
        # every worker works on every study, each starting at another one
        jobs = [workers.StudyJob(p) for _ in range(n) for p in req.plans]
        with tracker.batched():  # a population's runs are written together (suite.tracking.bulk)
            troubles = workers.run(jobs, req.devices, settings, sink)
            reevals = _reevaluate(req, registry, storage, sink, settings, troubles) if req.reevaluate else {}
        with CLOCK.phase("reporting"):  # tables and figures (their MLflow writes count as tracking)
            summaries = []
            for plan in req.plans:
                study = studies[plan.name]
                summary = report.summarize(study, plan, reevals.get(plan.name))
                figs = report.study_figures(study)
                finish_study_parent(tracker, parents[plan.name], summary, figs)
                report.close_all(figs)
                summaries.append(summary)
            md = report.markdown(summaries, req.objective.label)
            csv_text = report.csv_text(summaries)
            figs = report.figures(summaries, req.objective.label)
            if fresh:
                finish_tune_run(tracker, report_run, {"table.md": md, "table.csv": csv_text}, figs)
            report.close_all(figs)
    except BaseException:
        for run_id in [*parents.values(), *([report_run] if fresh else [])]:
            tracker.mark(run_id, "interrupted", "tuning did not finish")
        raise
    return TuneOutcome(summaries, md, csv_text, label, tracker.experiment_name, tracker.tracking_uri, report_run,
                       troubles, tracker.experiment_id)


def _reevaluate(req: Request, registry: Registry, storage, sink: TrackerSink, settings: workers.Settings,
                troubles: list[str]) -> dict[str, dict[int, report.Reeval]]:
    """Re-run each study's top ``reevaluate_top`` trials on ``reevaluate`` fresh seeds each,
    spread over the workers: ``{study: {trial number: Reeval}}`` (the winner is the best mean,
    which resists the winner's curse of picking the luckiest tuning draw)."""
    import optuna

    jobs: list[workers.SpecJob] = []
    keys: dict[str, dict[int, list[str]]] = {}
    for plan in req.plans:
        study = optuna.load_study(study_name=plan.name, storage=storage)
        for trial in top_trials(study, req.reevaluate_top):
            for spec in reevaluation_specs(plan, trial, registry, req.reevaluate):
                key = f"{plan.name}#reeval{trial.number}#{spec.seed}"
                tags = {TAG_STUDY: plan.name, TAG_REEVAL_OF: trial.number}
                jobs.append(workers.SpecJob(key, plan.name, spec, tags, plan.objective))
                keys.setdefault(plan.name, {}).setdefault(trial.number, []).append(key)
    troubles += workers.run(jobs, req.devices, settings, sink)
    out: dict[str, dict[int, report.Reeval]] = {}
    for name, by_trial in keys.items():
        plan = next(p for p in req.plans if p.name == name)
        for number, items in by_trial.items():
            out.setdefault(name, {})[number] = reeval_of(plan.objective, [sink.results.get(k) for k in items])
    return out


def reeval_of(objective: Objective, results: Sequence[Any]) -> report.Reeval:
    """Per-seed values of a trial's re-evaluation runs (a seed that did not complete counts as
    diverged). A run that went on past its target still has its value: the first step below it."""
    values, diverged = [], 0
    for result in results:
        if result is None or result.status != "completed":
            diverged += 1
            continue
        values.append(objective.value(result))
    return report.Reeval(values, diverged)
