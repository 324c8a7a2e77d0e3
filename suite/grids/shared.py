"""``suite run --storage URL``: a grid shared with `suite worker` processes on other machines."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click
import optuna

from suite.cli.run_cmd import grid_table
from suite.cli.worker_cmd import run_workers
from suite.distributed.grid_study import submit_grid
from suite.grids.local import Outcome, _log_parent, _rows
from suite.report import tables
from suite.specs.spec import RunSpec
from suite.stores import HeartbeatPolicy, describe, normalize_storage, open_storage
from suite.tracking.tracker import Tracker
from suite.vocab import STUDY_PARENT_RUN_ID


def execute_shared(sections: Sequence[tuple[str, Sequence[RunSpec]]], specs: Sequence[RunSpec],
                   devices: Sequence[str], experiment: str, run_name: str, parent_tags: Mapping[str, Any],
                   tracking_uri: str | None, storage: str | None, heartbeat: int, grace: int | None,
                   study: str | None, submit_only: bool, quiet: bool) -> None:
    """Enqueue the grid in the shared storage (or join it), work on it here, then summarize."""
    url = normalize_storage(storage)
    name, created = submit_grid(specs, url, experiment=experiment, tracking_uri=tracking_uri, study_name=study,
                                run_name=run_name, parent_tags=parent_tags)
    click.echo(f"grid study {name!r}: {len(specs)} runs, {'enqueued in' if created else 'already in'} "
               f"{describe(url)}", err=True)
    if submit_only:
        click.echo(f"workers join it with: suite worker --storage '{describe(url)}' --study {name}")
        return
    for line in run_workers(url, [name], devices, quiet=quiet, policy=HeartbeatPolicy(heartbeat, grace)):
        click.echo(line, err=True)
    tracker = Tracker(experiment, tracking_uri)
    done = tracker.done_runs()
    parent = optuna.load_study(study_name=name, storage=open_storage(url)).user_attrs.get(STUDY_PARENT_RUN_ID)
    out = Outcome(specs=list(specs), skipped={s.hash: done[s.hash] for s in specs if s.hash in done},
                  parent_run_id=parent)
    out.rows = _rows(sections, out, tracker)
    out.stats = tables.config_stats(out.rows)
    missing = [s for s in specs if s.hash not in done]
    not_done = f", {len(missing)} failed or not done" if missing else ""
    click.echo(f"{len(specs)} runs: {len(out.skipped)} done{not_done}")
    grid_table(out)
    if parent:
        _log_parent(tracker, out)
        if missing:
            tracker.mark(parent, "failed", f"{len(missing)} run(s) failed or not done")
    click.echo(f"MLflow: experiment {experiment!r} at {tracker.tracking_uri}, parent run {parent} "
               "(browse with `make ui`)")
    for s in missing:
        click.echo(f"FAILED or not done: {s.name} [{s.hash}]", err=True)
    if missing:
        sys.exit(1)
