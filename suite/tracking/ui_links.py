"""What ``make ui`` prints before it starts the MLflow UI: each experiment's runs table.

MLflow 3.17 opens an experiment clicked in its list on the GenAI overview unless the browser
has chosen "Model training" in the sidebar toggle (kept per browser in localStorage, default
GenAI; the experiment's ``mlflow.experimentKind`` tag is not consulted: mlflow/mlflow issue
24498). A URL with ``workflowType=machine_learning`` lands on the runs table in any browser, so
``make ui`` prints one per experiment (in the grid's saved view where the experiment has one).

Run as ``python -m suite.tracking.ui_links TRACKING_URI [PORT]``.
"""

from __future__ import annotations

import sys

from suite.tracking.ui import runs_url
from suite.vocab import MLFLOW_VIEW_STATE_PREFIX

HINT = ("MLflow 3.17 opens an experiment clicked in its list on the GenAI overview until 'Model training' is "
        "chosen once in the sidebar (the browser remembers it); these links open the runs table directly:")


def experiment_links(tracking_uri: str, port: int = 5000) -> list[str]:
    """A line on why, then one line per experiment: its name and its runs table's URL on the UI at
    ``port``; a line that says so if a sqlite store does not exist yet (none is created)."""
    from suite.stores import sqlite_path

    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        return [f"no MLflow store at {path} yet: `make bench` or `suite run` fills it"]
    from mlflow import MlflowClient

    lines = [HINT]
    for exp in MlflowClient(tracking_uri=tracking_uri).search_experiments():
        views = sorted(k.removeprefix(MLFLOW_VIEW_STATE_PREFIX) for k in exp.tags
                       if k.startswith(MLFLOW_VIEW_STATE_PREFIX))
        url = runs_url(f"http://127.0.0.1:{port}", exp.experiment_id, views[0] if len(views) == 1 else None)
        lines.append(f"  {exp.name}: {url}")
    return lines


if __name__ == "__main__":
    for line in experiment_links(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5000):
        print(line)
