"""``suite run``: run a configuration, a grid of them, or a benchmark file, and log to MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from suite.cli.common import FAMILY_FLAGS, SHORTCUTS, storage_options, tracking_options
from suite.engine.loop import preflight
from suite.errors import SpecError
from suite.exec.devices import resolve_devices
from suite.exec.dispatch import WorkerStartError
from suite.registry import get_registry
from suite.report import tables
from suite.specs import axes, benchfile
from suite.specs.spec import DEFAULT_COMPONENTS, DEFAULT_DIVERGE_FACTOR, RunSpec, parse_assignment
from suite.vocab import TAG_BENCHMARK

LIST = "Comma list = a grid axis."


@click.command()
@click.argument("benchmark", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--problem", default=None, help=f"Problem name(s) (see `suite list problem`; default linreg). {LIST}")
@click.option("--sampler", default=None, help=f"Sampler name(s) (default shuffle). {LIST}")
@click.option("--optimizer", default=None, help=f"Optimizer name(s) (default sgd). {LIST}")
@click.option("--scheduler", default=None, help=f"Scheduler name(s) (default constant). {LIST}")
@click.option("--averager", default=None, help=f"Averager name(s) (default none). {LIST}")
@click.option("--batch-size", default=None, help=f"Batch size(s) (default 32). {LIST}")
@click.option("--epochs", type=int, default=None, help="Budget in epochs (default 10 unless --steps).")
@click.option("--steps", type=int, default=None, help="Budget in optimizer steps.")
@click.option("--eval-every", type=int, default=None, help="Evaluate every K steps (default: once per epoch).")
@click.option("--seed", type=int, default=None, help="One seed (default 0).")
@click.option("--seeds", default=None, help="Several seeds: K means 0..K-1, A-B a range, or a list 1,5,9.")
@click.option("--lr", default=None, help=f"Shortcut for --set optimizer.lr=α. {LIST}")
@click.option("--momentum", default=None, help=f"Shortcut for --set optimizer.momentum=β. {LIST}")
@click.option("--weight-decay", default=None, help=f"Shortcut for --set optimizer.weight_decay=λ. {LIST}")
@click.option("--set", "sets", multiple=True, metavar="FAMILY.PARAM=V[,V...]",
              help=f"Any hyperparameter of any component, e.g. --set scheduler.eta_min=0.001. {LIST}")
@click.option("--diverge-factor", type=float, default=None,
              help=f"Stop a run as diverged past F x its initial val loss (default {DEFAULT_DIVERGE_FACTOR:g}).")
@click.option("--force", is_flag=True, help="Run again specs that already have a completed run in MLflow.")
@click.option("--dry-run", is_flag=True, help="Print the expanded runs and their count; run nothing.")
@tracking_options
@storage_options
@click.option("--study", default=None, metavar="NAME",
              help="With --storage: the grid study's name (default: grid-EXPERIMENT-<hash of the grid>).")
@click.option("--submit-only", is_flag=True,
              help="With --storage: enqueue the grid and exit; `suite worker` processes run it.")
def run(benchmark, problem, sampler, optimizer, scheduler, averager, batch_size, epochs, steps, eval_every, seed,
        seeds, lr, momentum, weight_decay, sets, diverge_factor, force, dry_run, experiment, tracking_uri, device,
        workers, quiet, storage, heartbeat, grace, study, submit_only) -> None:
    """Run a configuration, a grid (comma lists, --seeds) or a BENCHMARK file, and log to MLflow.

    Runs already completed (same spec hash) are skipped unless --force; the exit code is 1 if
    any run failed (in a grid a diverged run is a result, not a failure; a single configuration
    that diverges exits 1).

    With --storage (e.g. postgresql://...), the grid becomes an Optuna study of enqueued runs in
    that storage: this command and any number of `suite worker` processes on other machines
    share it, each run done exactly once."""
    registry = get_registry()
    flags = dict(problem=problem, sampler=sampler, optimizer=optimizer, scheduler=scheduler, averager=averager,
                 batch_size=batch_size, epochs=epochs, steps=steps, eval_every=eval_every, seed=seed, seeds=seeds,
                 lr=lr, momentum=momentum, weight_decay=weight_decay, diverge_factor=diverge_factor)
    if benchmark is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None] + (["--set"] if sets else [])
        if given:
            raise SpecError(f"{benchmark}: {', '.join(given)} cannot be combined with a benchmark file; "
                            "edit the file (or copy it) instead")
        bench = benchfile.load(benchmark, registry)
        sections = [(s.name, s.specs) for s in bench.sections]
        where = {s.name: s.where(benchmark) for s in bench.sections}
        exp_name, run_name = experiment or bench.name, f"{bench.name} ({benchmark})"
        parent_tags = {TAG_BENCHMARK: str(benchmark)}
    else:
        specs = _grid_specs(registry, flags, sets)
        problems = sorted({s.problem for s in specs})
        exp_name = experiment or (problems[0] if len(problems) == 1 else "grid")
        sections, run_name, parent_tags = [("grid", specs)], f"grid of {len(specs)} runs", {}
    from suite.grids.local import distinct

    all_specs = distinct(sections)
    for sec, specs in sections:
        try:
            preflight(specs, registry)
        except SpecError as exc:
            raise SpecError(f"{where[sec]}: {exc}" if benchmark else str(exc)) from None
    if dry_run:
        _print_dry_run(sections, len(all_specs))
        return
    devices = resolve_devices(device, workers)
    if storage is not None or study or submit_only:
        if force:
            raise SpecError("--force cannot be combined with --storage: a shared grid reuses finished runs")
        from suite.grids.shared import execute_shared

        execute_shared(sections, all_specs, devices, exp_name, run_name, parent_tags, tracking_uri, storage,
                       heartbeat, grace, study, submit_only, quiet)
        return
    _execute(sections, all_specs, registry, devices, exp_name, run_name, parent_tags, tracking_uri, force, quiet,
             parent=benchmark is not None or len(all_specs) > 1)


def _grid_specs(registry, flags: dict, sets: tuple[str, ...]) -> list[RunSpec]:
    """The cross product of the command line's lists, validated."""
    grid_axes: list[axes.Axis] = []
    for family in FAMILY_FLAGS:
        grid_axes.append(axes.axis(family, axes.split_list(flags[family] or DEFAULT_COMPONENTS[family])))
    hyper: dict[str, list[str]] = {}
    for name in ("lr", "momentum", "weight_decay"):
        if flags[name] is not None:
            hyper[SHORTCUTS[name]] = axes.split_list(flags[name])
    for text in sets:
        family, param, value = parse_assignment(text)
        hyper[f"{family}.{param}"] = axes.split_list(value)
    grid_axes += [axes.axis(k, v) for k, v in hyper.items()]
    grid_axes.append(axes.axis("batch_size", axes.split_list(flags["batch_size"] or "32")))
    if flags["seeds"] is not None and flags["seed"] is not None:
        raise SpecError("give --seed N or --seeds K, not both")
    seeds = axes.parse_seeds(flags["seeds"]) if flags["seeds"] is not None else [flags["seed"] or 0]
    grid_axes.append(axes.axis("seed", seeds))
    scalars = {"eval_every": flags["eval_every"]}
    if flags["epochs"] is None and flags["steps"] is None:
        scalars["epochs"] = 10
    else:
        scalars.update(epochs=flags["epochs"], steps=flags["steps"])
    if flags["diverge_factor"] is not None:
        scalars["diverge_factor"] = flags["diverge_factor"]
    return axes.expand(registry, axes.product(grid_axes), {k: v for k, v in scalars.items() if v is not None})


def _print_dry_run(sections, total: int) -> None:
    for sec, specs in sections:
        varying = axes.varying_keys(specs, skip=())
        if len(sections) > 1:
            click.echo(f"== {sec}: {len(specs)} runs")
        for i, spec in enumerate(specs, 1):
            flat = spec.flat_params()
            shown = " ".join(f"{k}={flat[k]}" for k in varying if k in flat)
            click.echo(f"  {i:>4}. {spec.hash}  {spec.name}  {shown}".rstrip())
    click.echo(f"{total} runs (dry run: nothing was run or logged)")


def _execute(sections, specs, registry, devices, exp_name, run_name, parent_tags, tracking_uri, force, quiet,
             parent: bool) -> None:
    from suite.grids.local import run_grid
    from suite.tracking.tracker import Tracker

    tracker = Tracker(exp_name, tracking_uri)
    try:
        out = run_grid(sections, tracker, registry, devices, name=run_name, force=force, quiet=quiet, parent=parent,
                       parent_tags=parent_tags)
    except KeyboardInterrupt:
        click.echo("interrupted: runs in flight were marked KILLED (suite.status=interrupted); "
                   "run the same command again to finish the rest", err=True)
        sys.exit(130)
    except WorkerStartError as exc:  # runs were logged: a failure of the grid, not bad input
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    if out.reaped:
        click.echo(f"marked {len(out.reaped)} run(s) left RUNNING by a dead invocation as interrupted", err=True)
    single = len(specs) == 1 and not parent
    if single:
        _single_summary(out, tracker)
    else:
        _grid_summary(out, force)
    where = f"experiment {tracker.experiment_name!r} at {tracker.tracking_uri}"
    if out.parent_run_id:
        where += f", parent run {out.parent_run_id}"
    click.echo(f"MLflow: {where} (browse with `make ui`)")
    if out.failures:
        sys.exit(1)
    diverged = [r for r in out.results.values() if r.status == "diverged"]
    if single and diverged:  # one configuration asked for, and it diverged: say so and exit non-zero
        click.echo(f"run diverged: {diverged[0].reason}", err=True)
        sys.exit(1)


def _single_summary(out, tracker) -> None:
    (spec,) = out.specs
    if spec.hash in out.results:
        for line in tables.run_summary(out.results[spec.hash]):
            click.echo(line)
        return
    run = out.skipped[spec.hash]
    m = run.data.metrics
    click.echo(f"run {spec.name} [{spec.hash}] was already done: MLflow run {run.info.run_id} "
               f"({run.data.tags.get('suite.status')}); --force runs it again")
    shown = [k for k in ("train_loss", "val_loss", "avg_val_loss", "dist_to_opt", "avg_dist_to_opt") if k in m]
    if shown:
        click.echo("  final " + "  ".join(f"{k}={m[k]:.6f}" for k in shown))


def _grid_summary(out, force: bool) -> None:
    fresh, skipped = len(out.results), len(out.skipped)
    counts = {}
    for r in out.results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    click.echo(f"{len(out.specs)} runs: {fresh} run now ({text or 'none'}), {skipped} done before (skipped)")
    grid_table(out)
    for r in out.failures:
        click.echo(f"FAILED {r.spec.name} [{r.spec.hash}]: {r.reason} (traceback.txt in its MLflow run)", err=True)


def grid_table(out) -> None:
    """The per-configuration table of a grid and the winner per batch size."""
    for line in tables.table_text(out.stats):
        click.echo(line)
    lines = tables.winner_lines(out.stats)
    if lines:
        click.echo(tables.WINNER_HEADER)
        for line in lines:
            click.echo(f"  {line}")
