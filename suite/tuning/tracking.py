"""MLflow side of tuning: a parent run per study, a child run per trial run, done by the suite.

* Study parent run: tags ``suite.kind=study``, ``suite.study=<name>``, ``suite.study_uid``; params = the study's
  settings (problem, components, batch size, budget, objective, seeds, search space, fixed
  values), which cannot change for a study; tags for what may change between invocations
  (``suite.trials_requested``, ``suite.pruner``, ``suite.study_seed``). The same parent is
  found and reused when a study is resumed. At the end of each invocation it gets the best
  value and params (metrics ``best_value``, ``best.<family.param>`` with step = trials so far,
  so their history shows how the best evolved; tags ``suite.best.<family.param>``; tag
  ``suite.best_at_edge``: the winner's ends of its search space, :mod:`suite.tuning.edges`), the trial
  counts, ``best.json`` and Optuna's history and importance plots.
* Trial runs: children of their study's parent, logged exactly like ``suite run`` runs
  (:class:`suite.tracking.Tracker`) with ``suite.kind=trial`` and tags ``suite.study``,
  ``suite.trial``, ``suite.seed_index``, ``suite.study_index``, ``suite.trial_state`` and ``suite.trial_value``
  (``suite.study_index`` also on the study parent and the re-evaluation runs).
* Re-evaluation runs: children of the parent with ``suite.kind=reeval``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from suite.engine.exactness import mark_unstable
from suite.engine.loop import RunResult
from suite.registry import Registry
from suite.specs import naming
from suite.specs.spec import RunSpec
from suite.tracking.queue import tracking
from suite.tracking.records import FINISHED, RUNNING, Metric, RunTag, dict_text
from suite.tracking.records import RUN_NAME_TAG as MLFLOW_RUN_NAME
from suite.tracking.tracker import Tracker
from suite.tuning import edges
from suite.tuning.labels import pinned_text
from suite.vocab import (
    TAG_BATCH_SIZE,
    TAG_BEST_AT_EDGE,
    TAG_BEST_TRIAL,
    TAG_DEVICE,
    TAG_KIND,
    TAG_PROBLEM,
    TAG_PRUNER,
    TAG_REEVALUATED,
    TAG_SECTION,
    TAG_STATUS,
    TAG_STORAGE,
    TAG_STUDIES,
    TAG_STUDY,
    TAG_STUDY_INDEX,
    TAG_STUDY_SEED,
    TAG_STUDY_UID,
    TAG_TRIAL,
    TAG_TRIALS,
    TAG_TRIALS_REQUESTED,
    TAG_VARIANT,
)


class TrackerSink:
    """The :class:`suite.tuning.trials.TrialSink` of the parent process: logs every event to MLflow.

    A run's metrics are buffered by the :class:`Tracker` (a steps-to-target trial evaluates every
    few steps, and one database write per evaluation would cost more than the training). Inside
    :meth:`Tracker.batched`, a population's runs are written together: once they have all
    started (they appear, RUNNING), and when the population has ended (:meth:`settle`)."""

    def __init__(self, tracker: Tracker, registry: Registry, parents: Mapping[str, str],
                 echo: Callable[[str], None], sections: Mapping[str, str] | None = None,
                 labels: Mapping[str, Sequence[str]] | None = None,
                 on_started: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
        self.tracker, self.registry, self.parents, self._echo = tracker, registry, parents, echo
        self.on_started = on_started  # with the trials whose runs have started, once they are in the store
        self._starting: dict[tuple[str, int], None] = {}  # (study, trial) of runs started since the last write
        self.sections = dict(sections or {})  # study -> the benchmark file's experiment (tag suite.section)
        self.labels = dict(labels or {})  # study -> the hyperparameters its runs' names show (tuned, pinned)
        self.run_ids: dict[str, str] = {}
        self.results: dict[str, RunResult] = {}
        self._unwritten_starts = False

    def _write_starts(self) -> None:
        if self._unwritten_starts:
            self._unwritten_starts = False
            self.tracker.commit()
            if self.on_started is not None and self._starting:
                trials, self._starting, said = list(self._starting), {}, self.on_started
                self.tracker.after_write(lambda: said(trials))

    def start(self, key: str, study: str, spec: RunSpec, kind: str, tags: dict[str, Any]) -> None:
        # within a study runs differ by trial (and seed), across studies by their pinned and tuned
        # values: ``nqm sgd lr=0.117 β=0.9 b64 t3 s0``, ``… reeval s7``
        which = f"t{tags[TAG_TRIAL]}" if TAG_TRIAL in tags else kind
        label = naming.config_label(spec, self.labels.get(study, ()))
        self.run_ids[key] = self.tracker.start_run(
            spec, self.registry, device=str(tags.get(TAG_DEVICE, "cpu")), parent_run_id=self.parents[study],
            kind=kind, tags={MLFLOW_RUN_NAME: f"{label} {which} s{spec.seed}", **tags,
                             **({TAG_SECTION: self.sections[study]} if study in self.sections else {})},
        )
        self._unwritten_starts = True
        if self.on_started is not None and kind == "trial" and TAG_TRIAL in tags:
            self._starting[(study, int(tags[TAG_TRIAL]))] = None  # once: a trial of several seeds starts several runs

    def eval(self, key: str, step: int, metrics: dict[str, float]) -> None:
        self.eval_rows([(key, step, metrics)])

    @tracking
    def eval_rows(self, rows: list[tuple[str, int, dict[str, float]]]) -> None:
        """Several runs' evaluations, ``(key, step, metrics)`` each (a population's evaluation step)."""
        self._write_starts()
        self.tracker.log_metrics_rows([(self.run_ids[key], step, loggable(metrics)) for key, step, metrics in rows])

    def done(self, key: str, result: RunResult) -> None:
        self._write_starts()
        mark_unstable(self.tracker, self.run_ids[key], result)
        self.tracker.finish(self.run_ids[key], result)
        self.results[key] = result

    def tag(self, key: str, tags: dict[str, Any]) -> None:
        self._write_starts()
        self.tracker.flush(self.run_ids[key], [RunTag(k, str(v)) for k, v in tags.items()])

    def interrupted(self, key: str) -> None:
        self._write_starts()
        if key in self.run_ids:
            self.tracker.mark(self.run_ids[key], "interrupted", "interrupted before the run finished")

    def settle(self, *, wait: bool = True) -> None:
        """Everything announced so far is final (a population has ended): write it, before its
        trials are told to Optuna.

        ``wait=False`` (the events of a worker process, which has told Optuna already): hand it to
        the writer and go on; the lines :meth:`echo` says from then on wait for it instead."""
        self._write_starts()
        self.tracker.commit(wait=wait)

    def poll(self) -> None:
        """Say the lines whose runs the writer process has written since (:meth:`Tracker.poll_writes`)."""
        self.tracker.poll_writes()

    def echo(self, line: str) -> None:
        """Say ``line`` once everything committed so far is in the store (a trial is reported
        once its runs are: :meth:`Tracker.after_write`)."""
        self.tracker.after_write(lambda: self._echo(line))


def study_parent(tracker: Tracker, plan: Any, uid: str, *, trials: int, pruner: str, study_seed: int | None,
                 storage: str) -> str:
    """Find the study's parent run (resume) or create it; mark it running; return its id.

    The parent is found by the Optuna study's uid (tag ``suite.study_uid``), not only by its
    name: a study of the same name in another storage gets a parent of its own."""
    found = sorted(tracker.find_runs({TAG_KIND: "study", TAG_STUDY_UID: uid}), key=lambda r: r.info.start_time)
    tags = {TAG_TRIALS_REQUESTED: trials, TAG_PRUNER: pruner, TAG_STUDY_SEED: study_seed,
            TAG_STORAGE: storage, TAG_STATUS: "running",
            **({TAG_SECTION: plan.section} if getattr(plan, "section", None) else {})}
    if found:
        run_id = found[0].info.run_id
        with tracker.writes():
            tracker.set_status(run_id, RUNNING)
            tracker.set_tags(run_id, tags)
        return run_id
    name = f"{plan.name} {pinned_text(plan)}".strip()  # the pinned values tell variants of one method apart
    all_tags = {MLFLOW_RUN_NAME: name, TAG_KIND: "study", TAG_STUDY: plan.name, TAG_STUDY_UID: uid,
                TAG_PROBLEM: plan.problem, TAG_VARIANT: plan.variant.name,
                TAG_BATCH_SIZE: plan.batch_size, TAG_STUDY_INDEX: getattr(plan, "study_index", 0), **tags}
    settings = plan.settings()
    params = {k: v for k, v in settings.items() if k not in ("space", "fixed")}
    params.update({f"space.{k}": _space_text(v) for k, v in settings["space"].items()})
    params.update({f"fixed.{k}": v for k, v in settings["fixed"].items()})
    return tracker.create_run(all_tags, {k: str(v) for k, v in params.items()})


def _space_text(d: Mapping[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)


def finish_study_parent(tracker: Tracker, run_id: str, summary: Any, figures: Mapping[str, Any]) -> None:
    """Log a study's outcome (a :class:`suite.tuning.winners.StudySummary`) to its parent run."""
    ts = _now_ms()
    step = summary.n_counted
    metrics = [Metric("n_complete", summary.n_complete, ts, step), Metric("n_pruned", summary.n_pruned, ts, step),
               Metric("n_failed", summary.n_failed, ts, step), Metric("n_diverged", summary.n_diverged, ts, step)]
    tags = [RunTag(TAG_STATUS, "completed"), RunTag(TAG_TRIALS, str(summary.n_counted))]
    if summary.best_value is not None:
        metrics.append(Metric("best_value", summary.best_value, ts, step))
        tags.append(RunTag(TAG_BEST_TRIAL, str(summary.best_number)))
        for k, v in summary.best_params.items():
            tags.append(RunTag(f"suite.best.{k}", str(v)))
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                metrics.append(Metric(f"best.{k}", float(v), ts, step))
        tags.append(RunTag(TAG_BEST_AT_EDGE, edges.tag_value(summary.edges)))
    if summary.reevaluated:
        tags.append(RunTag(TAG_REEVALUATED, ",".join(map(str, summary.reevaluated))))
    if summary.reeval is not None:
        metrics += [Metric("reeval_mean", summary.reeval.mean, ts, step),
                    Metric("reeval_std", summary.reeval.std, ts, step)]
    with tracker.writes():  # one transaction on a direct store
        tracker.log_batch(run_id, metrics, tags)
        tracker.log_text(run_id, dict_text(summary.to_dict()), "best.json")
        _log_figures(tracker, run_id, figures)
        tracker.set_status(run_id, FINISHED)


def _log_figures(tracker: Tracker, run_id: str, figures: Mapping[str, Any]) -> None:
    """Each figure, or its PNG drawn already (:func:`suite.tuning.winners.study_pngs`), as an artifact."""
    for name, fig in figures.items():
        if isinstance(fig, bytes):
            tracker.log_png(run_id, fig, name)
        else:
            tracker.log_figure(run_id, fig, name)


def start_tune_run(tracker: Tracker, name: str, tags: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The run of one ``suite tune`` invocation (``suite.kind=tune``), holding its report."""
    all_tags = {MLFLOW_RUN_NAME: name, TAG_KIND: "tune", TAG_STATUS: "running",
                **tags}
    return tracker.create_run(all_tags, {k: str(v)[:6000] for k, v in params.items()})


def previous_report(tracker: Tracker, studies: str) -> str | None:
    """The latest finished report run (``suite.kind=tune``) over the same studies, or None."""
    found = tracker.find_runs({TAG_KIND: "tune", TAG_STUDIES: studies, TAG_STATUS: "completed"})
    return max(found, key=lambda r: r.info.start_time).info.run_id if found else None


def finish_tune_run(tracker: Tracker, run_id: str, texts: Mapping[str, str], figures: Mapping[str, Any]) -> None:
    """Log the invocation's report (tables as text, figures) and mark its run finished."""
    with tracker.writes():  # one transaction on a direct store
        for name, text in texts.items():
            tracker.log_text(run_id, text, name)
        _log_figures(tracker, run_id, figures)
        tracker.set_tags(run_id, {TAG_STATUS: "completed"})
        tracker.set_status(run_id, FINISHED)


def loggable(metrics: dict[str, Any]) -> dict[str, Any]:
    """The values of ``metrics`` that MLflow stores (:func:`_loggable`): ``metrics`` itself when
    all are finite numbers (their sum is then finite: decided at C speed), else a filtered copy."""
    try:
        if math.isfinite(sum(metrics.values())):
            return metrics
    except (TypeError, OverflowError):
        pass
    return {k: v for k, v in metrics.items() if _loggable(v)}


def _loggable(v: Any) -> bool:
    """A number MLflow stores (NaN included; ±inf not)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(x) or math.isnan(x)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
