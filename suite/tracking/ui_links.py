"""What ``make ui`` prints before it starts the MLflow UI: each experiment's runs table.

MLflow 3.17 opens an experiment clicked in its list on the GenAI overview unless the browser
has chosen "Model training" in the sidebar toggle (kept per browser in localStorage, default
GenAI; the experiment's ``mlflow.experimentKind`` tag is not consulted: mlflow/mlflow issue
24498). A URL with ``workflowType=machine_learning`` lands on the runs table in any browser, so
``make ui`` prints one per experiment (in the grid's saved view where the experiment has one).

Run as ``python -m suite.tracking.ui_links TRACKING_URI [PORT] [--open]``: with ``--open``, where a
desktop browser exists (a display on Linux; macOS, Windows), a detached process opens the last
experiment's runs table once the UI answers on the port.
"""

from __future__ import annotations

import sys

from suite.tracking.ui import runs_url
from suite.vocab import MLFLOW_VIEW_STATE_PREFIX

OPEN_WAIT_S = 180  # how long the opener waits for the UI to answer before it gives up
HINT = ("MLflow 3.17 opens an experiment clicked in its list on the GenAI overview until 'Model training' is "
        "chosen once in the sidebar (the browser remembers it); these links open the runs table directly:")


def experiment_urls(tracking_uri: str, port: int = 5000) -> list[tuple[str, str]] | None:
    """``(experiment name, runs-table URL)`` of every experiment, oldest first (in the grid's saved
    view where the experiment has exactly one); None if a sqlite store does not exist yet (none is
    created)."""
    from suite.stores import sqlite_path

    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        return None
    from mlflow import MlflowClient

    out = []
    experiments = MlflowClient(tracking_uri=tracking_uri).search_experiments()
    for exp in sorted(experiments, key=lambda e: e.creation_time or 0):
        views = sorted(k.removeprefix(MLFLOW_VIEW_STATE_PREFIX) for k in exp.tags
                       if k.startswith(MLFLOW_VIEW_STATE_PREFIX))
        url = runs_url(f"http://127.0.0.1:{port}", exp.experiment_id, views[0] if len(views) == 1 else None)
        out.append((exp.name, url))
    return out


def experiment_links(tracking_uri: str, port: int = 5000,
                     urls: list[tuple[str, str]] | None = None) -> list[str]:
    """A line on why, then one line per experiment: its name and its runs table's URL on the UI at
    ``port`` (``urls``: :func:`experiment_urls`' answer, if read before); a line that says so if a
    sqlite store does not exist yet (none is created)."""
    urls = urls if urls is not None else experiment_urls(tracking_uri, port)
    if urls is None:
        return [f"no MLflow store at {tracking_uri} yet: `make bench` or `suite run` fills it"]
    return [HINT, *(f"  {name}: {url}" for name, url in urls)]


def has_desktop() -> bool:
    """Whether a browser window can open here: macOS or Windows, or a display on other systems."""
    import os

    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_when_up(url: str, port: int) -> None:
    """Wait until the UI accepts connections on ``port`` (at most :data:`OPEN_WAIT_S`), then open
    ``url`` in the desktop's browser. ``make ui`` runs it in the background (``--open``), beside
    the UI it waits for."""
    import socket
    import time
    import webbrowser

    deadline = time.monotonic() + OPEN_WAIT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            time.sleep(0.5)
            continue
        webbrowser.open(url)
        return


def main(argv: list[str]) -> None:
    """``URI [PORT]``: print each experiment's runs-table URL; with ``--open`` print nothing and,
    where a desktop browser exists, open the newest experiment's once the UI answers."""
    args = [a for a in argv if a != "--open"]
    uri, port = args[0], int(args[1]) if len(args) > 1 else 5000
    urls = experiment_urls(uri, port)
    if "--open" not in argv:
        for line in experiment_links(uri, port, urls):
            print(line, flush=True)
    elif urls and has_desktop():
        open_when_up(urls[-1][1], port)  # the newest experiment's runs


if __name__ == "__main__":
    main(sys.argv[1:])
