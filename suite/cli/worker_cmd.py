"""``suite worker``: join the suite's studies in a shared storage and work on them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import click

from suite.cli.common import storage_options
from suite.distributed.worker import WorkerContext, run_worker
from suite.exec.devices import resolve_devices
from suite.stores import HeartbeatPolicy, check_tracking_uri, describe, normalize_storage, open_storage


def _work(storage: str, studies: Sequence[str], device: str, tracking_uri: str | None, quiet: bool,
          policy: HeartbeatPolicy, wait: bool, threads: int) -> str:
    import torch

    from suite.tune.workers import terminate_on_sigterm

    torch.set_num_threads(threads)
    ctx = WorkerContext(device=device, tracking_uri=tracking_uri, quiet=quiet, echo=click.echo)
    restore = terminate_on_sigterm()  # `kill` gives the trial in hand back at once
    try:
        return run_worker(storage, studies, ctx, heartbeat_policy=policy, wait=wait).line()
    finally:
        restore()


def run_workers(url: str, studies: Sequence[str], devices: Sequence[str], *, tracking_uri: str | None = None,
                quiet: bool = False, policy: HeartbeatPolicy | None = None, wait: bool = False) -> list[str]:
    """One worker per device entry (in this process when there is one); their summary lines."""
    policy = policy or HeartbeatPolicy()
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    if len(devices) == 1:
        return [_work(url, studies, devices[0], tracking_uri, quiet, policy, wait, threads)]
    with ProcessPoolExecutor(len(devices), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_work, url, studies, d, tracking_uri, quiet, policy, wait, threads) for d in devices]
        return [f.result() for f in futures]


@click.command("worker")
@storage_options
@click.option("--study", "studies", multiple=True, metavar="NAME",
              help="Work on this study only (repeatable; default: every suite study in the storage).")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, or a list such as cuda:0,cuda:1: one worker process per entry.")
@click.option("--workers", type=int, default=None,
              help="CPU worker processes when no GPU is used (default: number of cores).")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI (default: the one recorded in each study by its creator).")
@click.option("--wait", is_flag=True, help="Keep polling for new work instead of exiting when none is left.")
@click.option("--quiet", "-q", is_flag=True, help="No per-trial output.")
def worker(storage, heartbeat, grace, studies, device, workers, tracking_uri, wait, quiet) -> None:
    """Join the suite's grids and tuning studies in --storage as a worker.

    Start this on as many machines as you like, each pointed at the same PostgreSQL URL: every
    waiting trial is run by exactly one worker, each logs its runs to the MLflow server recorded
    in the study, and a worker that dies has its trial failed and retried by another. Exits when
    nothing is left to do (or never, with --wait).
    """
    url = normalize_storage(storage)
    open_storage(url)  # a one-line error now, not one per process, if it cannot be reached
    if tracking_uri:
        check_tracking_uri(tracking_uri)
    devices = resolve_devices(device, workers)
    click.echo(f"suite worker: {len(devices)} process(es) on {', '.join(sorted(set(devices)))} "
               f"working on {describe(url)}", err=True)
    for line in run_workers(url, studies, devices, tracking_uri=tracking_uri, quiet=quiet,
                            policy=HeartbeatPolicy(interval=heartbeat, grace=grace), wait=wait):
        click.echo(line)
