"""``suite worker``: join the suite's studies in a shared storage and work on them."""

from __future__ import annotations

import sys

import click

from suite.cli.common import INT, IntRange, storage_options


@click.command("worker")
@storage_options
@click.option("--study", "studies", multiple=True, metavar="NAME",
              help="Work on this study only (repeatable; default: every suite study in the storage).")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, or a list such as cuda:0,cuda:1: one worker process per entry.")
@click.option("--workers", type=INT, default=None,
              help="CPU worker processes when no GPU is used (default: number of cores).")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI (default: the one recorded in each study by its creator).")
@click.option("--engine", type=click.Choice(["auto", "stacked", "loop"]), default="auto", show_default=True,
              help="stacked: claim compatible runs together and train them as one batched model; loop: one at a time.")
@click.option("--stack-size", type=IntRange(min=1), default=None, metavar="N",
              help="At most N runs claimed and trained at once.")
@click.option("--wait", is_flag=True, help="Keep polling for new work instead of exiting when none is left.")
@click.option("--quiet", "-q", is_flag=True, help="No per-trial output.")
def worker(storage, heartbeat, grace, studies, device, workers, tracking_uri, engine, stack_size, wait,
           quiet) -> None:
    """Join the suite's grids and tuning studies in --storage as a worker.

    Start this on as many machines as you like, each pointed at the same PostgreSQL URL: every
    waiting trial is run by exactly one worker, each logs its runs to the MLflow server recorded
    in the study, and a worker that dies has its trial failed and retried by another. Exits when
    nothing is left to do (or never, with --wait): with status 1 if a worker process died or
    raised (its line says why, e.g. the Optuna storage failing), else 0.
    """
    from suite.api.work import check_studies, work
    from suite.exec.devices import resolve_devices
    from suite.stores import HeartbeatPolicy, check_tracking_uri, describe, normalize_storage, open_storage

    check_studies(studies)
    url = normalize_storage(storage)
    if tracking_uri:
        check_tracking_uri(tracking_uri)
    devices = resolve_devices(device, workers)
    open_storage(url)  # after every flag is checked (it may create a journal file), before any process starts
    click.echo(f"suite worker: {len(devices)} process(es) on {', '.join(sorted(set(devices)))} "
               f"working on {describe(url)}", err=True)
    lines = work(url, studies, devices, tracking_uri=tracking_uri, quiet=quiet,
                 policy=HeartbeatPolicy(interval=heartbeat, grace=grace), wait=wait, echo=click.echo,
                 engine=engine, stack_size=stack_size)
    for line in lines:
        click.echo(line)
    if lines.troubles:  # a worker died or raised: its unfinished trials are failed and retried by the next worker
        sys.exit(1)
