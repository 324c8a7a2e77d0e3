"""What ``suite run`` and ``suite tune`` did, as plain data: the ``--format json`` output, and the
rows the notebook API turns into DataFrames."""

from __future__ import annotations

from typing import Any

from suite.engine.exactness import unstable
from suite.tracking import ui


def run_rows(out: Any) -> list[dict[str, Any]]:
    """One dict per run of a grid outcome (:class:`suite.grids.local.GridOutcome`): section, name,
    spec hash, status, final val losses, and the MLflow run id where known."""
    rows = []
    for r in out.rows:
        rows.append({"section": r.section, "name": r.spec.name, "spec_hash": r.spec.hash, "status": r.status,
                     "val_loss": r.val_loss, "avg_val_loss": r.avg_val_loss, "reason": r.reason or None,
                     "mlflow_run_id": r.run_id or None, "ran_now": r.spec.hash in out.results})
    return rows


def config_rows(out: Any) -> list[dict[str, Any]]:
    """One dict per configuration: mean and std over seeds of the final val losses."""
    rows = []
    for c in out.stats:
        v, a = c.stat("val_loss"), c.stat("avg_val_loss")
        rows.append({"section": c.section, "configuration": c.label, "batch_size": c.batch_size, "seeds": len(c.rows),
                     "val_loss_mean": v[0] if v else None, "val_loss_std": v[1] if v else None,
                     "avg_val_loss_mean": a[0] if a else None, "avg_val_loss_std": a[1] if a else None})
    return rows


def where(tracking_uri: str, experiment_id: str, *, view: str | None = None, run_id: str | None = None) -> dict:
    """Where to look: the ``mlflow ui`` command and the URLs."""
    out = {"ui_command": ui.ui_command(tracking_uri), "runs_url": ui.runs_url(tracking_uri, experiment_id, view)}
    if run_id:
        out["run_url"] = ui.run_url(tracking_uri, experiment_id, run_id)
    return out


def run_summary(plan: Any, out: Any, tracker: Any, *, missing: list | None = None) -> dict[str, Any]:
    """``suite run --format json``: counts, every run, every configuration, and where they are."""
    counts: dict[str, int] = {}
    for r in out.results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    return {
        "experiment": tracker.experiment_name, "experiment_id": tracker.experiment_id,
        "tracking_uri": tracker.tracking_uri, "parent_run_id": out.parent_run_id,
        "total": len(out.specs), "ran_now": len(out.results), "done_before": len(out.skipped),
        "statuses": counts, "failed": [r.spec.hash for r in out.failures] + [s.hash for s in (missing or [])],
        "unstable": [r.spec.hash for r in out.results.values() if unstable(r)],
        "runs": run_rows(out), "configurations": config_rows(out),
        "winners": [{"section": s, "batch_size": b, "configuration": lab, "loss": loss, "model": which}
                    for s, b, lab, loss, which in _winners(out)],
        **where(tracker.tracking_uri, tracker.experiment_id, view=out.view, run_id=out.parent_run_id),
    }


def _winners(out: Any) -> list:
    from suite.report import tables

    return tables.winners(out.stats)


def tune_summary(outcome: Any, experiment_id: str | None = None) -> dict[str, Any]:
    """``suite tune --format json``: one dict per study (its best value and params), and where."""
    studies = [s.to_dict() for s in outcome.summaries]
    data = {"experiment": outcome.experiment, "tracking_uri": outcome.tracking_uri, "storage": outcome.storage,
            "report_run_id": outcome.report_run_id, "studies": studies, "troubles": list(outcome.troubles)}
    if experiment_id is not None:
        data.update(where(outcome.tracking_uri, experiment_id, run_id=outcome.report_run_id))
    return data
