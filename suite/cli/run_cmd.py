"""``suite run``: run a configuration, log it to MLflow and print its summary."""

from __future__ import annotations

import sys

import click
import torch

from suite import report
from suite.cli.common import SHORTCUTS, tracking_options
from suite.engine import preflight, train
from suite.errors import SpecError
from suite.registry import get_registry
from suite.spec import RunSpec, parse_assignment, resolve_spec
from suite.tracking import Tracker


def _single_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"--device {device}: no CUDA device is visible; use --device cpu or auto")
    return device


@click.command()
@click.option("--problem", default="linreg", show_default=True, help="Problem name (see `suite list problem`).")
@click.option("--sampler", default="shuffle", show_default=True)
@click.option("--optimizer", default="sgd", show_default=True)
@click.option("--scheduler", default="constant", show_default=True)
@click.option("--averager", default="none", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--epochs", type=int, default=None, help="Budget in epochs (default 10 unless --steps).")
@click.option("--steps", type=int, default=None, help="Budget in optimizer steps.")
@click.option("--eval-every", type=int, default=None, help="Evaluate every K steps (default: once per epoch).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", default=None, help="Shortcut for --set optimizer.lr=α.")
@click.option("--momentum", default=None, help="Shortcut for --set optimizer.momentum=β.")
@click.option("--weight-decay", default=None, help="Shortcut for --set optimizer.weight_decay=λ.")
@click.option("--set", "sets", multiple=True, metavar="FAMILY.PARAM=VALUE",
              help="Any hyperparameter of any component, e.g. --set scheduler.eta_min=0.001.")
@tracking_options
def run(problem, sampler, optimizer, scheduler, averager, batch_size, epochs, steps, eval_every, seed,
        lr, momentum, weight_decay, sets, experiment, tracking_uri, device, workers, quiet) -> None:
    """Run a configuration and log it to MLflow."""
    registry = get_registry()
    overrides: dict[str, str] = {}
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if value is not None:
            overrides[SHORTCUTS[name]] = value
    for text in sets:
        family, param, value = parse_assignment(text)
        overrides[f"{family}.{param}"] = value
    if epochs is None and steps is None:
        epochs = 10
    spec = resolve_spec(
        registry,
        components=dict(problem=problem, sampler=sampler, optimizer=optimizer, scheduler=scheduler, averager=averager),
        overrides=overrides, batch_size=batch_size, seed=seed, epochs=epochs, steps=steps, eval_every=eval_every,
    )
    preflight([spec], registry)
    dev = _single_device(device)
    tracker = Tracker(experiment or spec.problem, tracking_uri)
    result = _run_one(spec, dev, tracker, registry, quiet)
    for line in report.run_summary(result):
        click.echo(line)
    click.echo(f"MLflow: experiment {tracker.experiment_name!r} at {tracker.tracking_uri} "
               f"(browse with `make ui`)")
    if result.status != "completed":
        click.echo(f"run {result.status}: {result.reason}", err=True)
        sys.exit(1)


def _run_one(spec: RunSpec, device: str, tracker: Tracker, registry, quiet: bool):
    run_id = tracker.start_run(spec, registry, device=device)
    n_eval = [0]

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, step, metrics)
        n_eval[0] += 1
        if not quiet:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch")
            click.echo(f"[{spec.name}] step {step:>6}  epoch {metrics['epoch']:.1f}  {shown}", err=True)

    try:
        result = train(spec, device, registry, on_eval)
    except BaseException:
        tracker.mark(run_id, "interrupted", "interrupted by the user or a signal")
        raise
    tracker.finish(run_id, result)
    return result
