"""One ``suite tune`` invocation: validate, open the studies, run the trials, re-evaluate,
report. Everything that can be refused is refused before anything is stored or logged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from suite.registry import Registry
from suite.stores import open_storage
from suite.tracking.tracker import Tracker
from suite.tune import report, slots, workers
from suite.tune.plan import Objective, StudyPlan
from suite.tune.studies import best_trial, check_settings, open_study, reevaluation_specs, storage_label
from suite.tune.tracking import (
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
    reevaluate: int
    devices: Sequence[str]
    experiment: str
    tracking_uri: str | None
    objective: Objective
    submit_only: bool = False
    heartbeat: Any = None  # suite.stores.HeartbeatPolicy of this invocation's workers


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
    storage = open_storage(req.storage)
    check_settings(storage, req.plans)
    tracker = Tracker(req.experiment, req.tracking_uri)  # the experiment exists before any worker starts
    studies = {plan.name: open_study(storage, plan) for plan in req.plans}
    label = storage_label(req.storage)
    parents = {plan.name: study_parent(tracker, plan, studies[plan.name].user_attrs[STUDY_UID], trials=req.trials,
                                       pruner=req.pruner, study_seed=req.study_seed, storage=label)
               for plan in req.plans}
    added_any = False
    for plan in req.plans:  # enqueue the trials still to do, for any worker anywhere to claim
        added = slots.share(studies[plan.name], trials=req.trials, pruner=req.pruner,
                                 study_seed=req.study_seed, experiment=tracker.experiment_name,
                                 tracking_uri=tracker.tracking_uri, parent_run_id=parents[plan.name])
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
    sink = TrackerSink(tracker, registry, parents, echo)
    settings = workers.Settings(req.storage, req.study_seed, req.pruner, req.heartbeat)
    n = len(req.devices)
    try:
        # every worker works on every study, each starting at another one
        jobs = [workers.StudyJob(p) for _ in range(n) for p in req.plans]
        troubles = workers.run(jobs, req.devices, settings, sink)
        reevals = _reevaluate(req, registry, storage, sink, settings, troubles) if req.reevaluate else {}
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
                troubles: list[str]) -> dict[str, report.Reeval]:
    """Re-run each study's best configuration on K fresh seeds, spread over the workers."""
    import optuna

    jobs: list[workers.SpecJob] = []
    keys: dict[str, list[str]] = {}
    for plan in req.plans:
        best = best_trial(optuna.load_study(study_name=plan.name, storage=storage))
        if best is None:
            continue
        for spec in reevaluation_specs(plan, best, registry, req.reevaluate):
            key = f"{plan.name}#reeval{best.number}#{spec.seed}"
            tags = {TAG_STUDY: plan.name, TAG_REEVAL_OF: best.number}
            jobs.append(workers.SpecJob(key, plan.name, spec, tags))
            keys.setdefault(plan.name, []).append(key)
    troubles += workers.run(jobs, req.devices, settings, sink)
    out = {}
    for name, items in keys.items():
        plan = next(p for p in req.plans if p.name == name)
        values, diverged = [], 0
        for key in items:
            result = sink.results.get(key)
            if result is None or result.status != "completed":
                diverged += 1
                continue
            values.append(plan.objective.value(result, result.history[-1][0]))
        out[name] = report.Reeval(values, diverged)
    return out
