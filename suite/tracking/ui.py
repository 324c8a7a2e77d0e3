"""What a user opens after a run: the ``mlflow ui`` command for the tracking store, the URL of a
run, and a shared view of the runs table that shows what they came for.

MLflow 3.17's UI opens an experiment on its GenAI overview unless the URL says
``workflowType=machine_learning``; the experiment kind tag (set by
:class:`suite.tracking.tracker.Tracker`) records that it is a model-training experiment. The runs
table's columns, and a grouping by ``suite.config`` (mean over seeds, runs listed under their
configuration), are a *shared view*: an experiment tag ``mlflow.sharedViewState.<key>`` holding the
table's state as JSON, opened by ``?viewStateShareKey=<key>``.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

from suite.vocab import MLFLOW_ML_WORKFLOW, MLFLOW_VIEW_STATE_PREFIX, TAG_CONFIG, TAG_STATUS

DEFAULT_UI = "http://127.0.0.1:5000"
KEY_METRICS = ("val_loss", "avg_val_loss", "best_val_loss", "best_avg_val_loss", "train_loss")


def store_uri(tracking_uri: str) -> str:
    """``tracking_uri`` with a relative sqlite path made absolute (works from any directory)."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not tracking_uri.startswith(prefix + "/"):
        return prefix + str(Path(tracking_uri[len(prefix):]).resolve())
    return tracking_uri


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves the UI on a local store (None for a tracking server: it serves one)."""
    if is_server(tracking_uri):
        return None
    return f"mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri {shlex.quote(store_uri(tracking_uri))}"


def ui_base(tracking_uri: str) -> str:
    return tracking_uri.rstrip("/") if is_server(tracking_uri) else DEFAULT_UI


def runs_url(tracking_uri: str, experiment_id: str, view: str | None = None) -> str:
    """The experiment's runs table (in the shared view ``view`` if given)."""
    query = f"workflowType={MLFLOW_ML_WORKFLOW}" + (f"&viewStateShareKey={quote(view)}" if view else "")
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?{query}"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """One run's page."""
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?workflowType={MLFLOW_ML_WORKFLOW}"


def view_state(params: Sequence[str]) -> dict:
    """The runs table's state: runs grouped by ``suite.config`` (a group row holds the mean over
    seeds), the key metrics, the grid's varying params and the status as columns."""
    columns = [f"metrics.`{m}`" for m in KEY_METRICS] + [f"params.`{p}`" for p in params]
    columns.append(f"tags.`{TAG_STATUS}`")
    return {"groupBy": f"tag.average.{TAG_CONFIG}", "selectedColumns": columns,
            "orderByKey": "attributes.start_time", "orderByAsc": False}


def share_view(set_experiment_tag: Callable[[str, str], None], params: Sequence[str]) -> str:
    """Store the runs table's view for a grid varying ``params`` through ``set_experiment_tag(key,
    value)`` (:meth:`suite.tracking.tracker.Tracker.set_experiment_tag`; idempotent); return its key."""
    state = view_state(params)
    key = "suite-" + hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:10]
    set_experiment_tag(MLFLOW_VIEW_STATE_PREFIX + key, json.dumps(state))
    return key


def where_lines(tracking_uri: str, experiment_id: str, *, view: str | None = None,
                run_id: str | None = None) -> list[str]:
    """What the CLI prints after a run: how to start the UI, and where to look."""
    lines = []
    cmd = ui_command(tracking_uri)
    if cmd:
        lines.append(f"browse: {cmd}")
    lines.append(f"  runs: {runs_url(tracking_uri, experiment_id, view)}")
    if run_id:
        lines.append(f"  run:  {run_url(tracking_uri, experiment_id, run_id)}")
    return lines
