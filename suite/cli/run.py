"""``suite run``: run a configuration, a grid of them, or a benchmark file, and log to MLflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from suite.cli.common import (
    FLOAT,
    INT,
    IntRange,
    command_line,
    echoes,
    format_option,
    storage_options,
    tracking_options,
    verbose,
)
from suite.errors import SpecError
from suite.registry import FAMILIES, get_registry
from suite.report.score import Score
from suite.specs import axes
from suite.specs.spec import DEFAULT_DIVERGE_FACTOR
from suite.vocab import TAG_STATUS

LIST = "Comma list = a grid axis."


@click.command()
@click.argument("benchmark", required=False, type=click.Path(dir_okay=False, path_type=Path))
@format_option
@click.option("--problem", default=None, help=f"Problem name(s) (see `suite list problem`; default linreg). {LIST}")
@click.option("--sampler", default=None, help=f"Sampler name(s) (default shuffle). {LIST}")
@click.option("--optimizer", default=None, help=f"Optimizer name(s) (default sgd). {LIST}")
@click.option("--scheduler", default=None, help=f"Scheduler name(s) (default constant). {LIST}")
@click.option("--averager", default=None, help=f"Averager name(s) (default none). {LIST}")
@click.option("--batch-size", default=None, help=f"Batch size(s) (default 32). {LIST}")
@click.option("--epochs", type=INT, default=None, help="Budget in epochs (default 10 unless --steps).")
@click.option("--steps", type=INT, default=None, help="Budget in optimizer steps.")
@click.option("--eval-every", type=INT, default=None, help="Evaluate every K steps (default: once per epoch).")
@click.option("--seed", type=INT, default=None, help="One seed (default 0).")
@click.option("--seeds", default=None, help="Several seeds: K means 0..K-1, A-B a range, or a list 1,5,9.")
@click.option("--lr", default=None, help=f"Shortcut for --set optimizer.lr=α. {LIST}")
@click.option("--momentum", default=None, help=f"Shortcut for --set optimizer.momentum=β. {LIST}")
@click.option("--weight-decay", default=None, help=f"Shortcut for --set optimizer.weight_decay=λ. {LIST}")
@click.option("--set", "sets", multiple=True, metavar="FAMILY.PARAM=V[,V...]",
              help=f"Any hyperparameter of any component, e.g. --set scheduler.eta_min=0.001. {LIST}")
@click.option("--diverge-factor", type=FLOAT, default=None,
              help=f"Stop a run as diverged past F x its initial val loss (default {DEFAULT_DIVERGE_FACTOR:g}).")
@click.option("--target", type=FLOAT, default=None, metavar="X",
              help="A loss to reach: each run logs steps_to_target, the first evaluated step at which its "
                   "expected risk (nqm) or else val loss was <= X (and avg_steps_to_target for an averaged model).")
@click.option("--metric", default=None, metavar="METRIC[:min|max]",
              help="What the summary compares configurations by: any final metric the runs log and which way is "
                   "better (default val_loss:min; e.g. val_acc:max); the better of the model's and its averaged "
                   "model's (avg_METRIC).")
@click.option("--engine", type=click.Choice(["auto", "stacked", "loop"]), default="auto", show_default=True,
              help="stacked: train compatible configurations as one batched model; loop: one at a time; "
                   "auto: stack what can be stacked.")
@click.option("--stack-size", type=IntRange(min=1), default=None, metavar="N",
              help="At most N configurations per stack (default: what fits the device's memory).")
@click.option("--force", is_flag=True, help="Run again specs that already have a completed run in MLflow.")
@click.option("--dry-run", is_flag=True,
              help="Print the expanded runs, their count and the units they would train in (stacks and loop "
                   "runs, with their sizes); run nothing.")
@tracking_options
@storage_options
@click.option("--study", default=None, metavar="NAME",
              help="With --storage: the grid study's name (default: grid-EXPERIMENT-<hash of the grid>).")
@click.option("--submit-only", is_flag=True,
              help="With --storage: enqueue the grid and exit; `suite worker` processes run it.")
def run(benchmark, output_format, problem, sampler, optimizer, scheduler, averager, batch_size, epochs, steps,
        eval_every, seed, seeds, lr, momentum, weight_decay, sets, diverge_factor, target, metric, engine, stack_size,
        force, dry_run,
        experiment, tracking_uri, device, workers, quiet, storage, heartbeat, grace, study, submit_only) -> None:
    """Run a configuration, a grid (comma lists, --seeds) or a BENCHMARK file, and log to MLflow.

    BENCHMARK may also be the spec.yaml the suite logs with every run: the same run again (edit it
    for a new one).

    Runs already completed (same spec hash) are skipped unless --force; the exit code is 1 if
    any run failed (in a grid a diverged run is a result, not a failure; a single configuration
    that diverges exits 1).

    With --storage (e.g. postgresql://...), the grid becomes an Optuna study of enqueued runs in
    that storage: this command and any number of `suite worker` processes on other machines
    share it, each run done exactly once."""
    from suite.api import runs, tuning

    by = Score.parse(metric)  # a bad --metric exits 2 before anything is loaded
    registry = get_registry()
    flags = dict(problem=problem, sampler=sampler, optimizer=optimizer, scheduler=scheduler, averager=averager,
                 batch_size=batch_size, epochs=epochs, steps=steps, eval_every=eval_every, seed=seed, seeds=seeds,
                 lr=lr, momentum=momentum, weight_decay=weight_decay, diverge_factor=diverge_factor,
                 target=target)
    if benchmark is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None] + (["--set"] if sets else [])
        if given:
            raise SpecError(f"{benchmark}: {', '.join(given)} cannot be combined with a benchmark file; "
                            "edit the file (or copy it) instead")
        if runs.is_spec_file(benchmark):
            plan = runs.plan_spec_file(benchmark, registry, experiment)
        else:
            plan = runs.plan_benchmark(benchmark, registry, experiment)
    else:
        plan = runs.plan_flags(registry, flags, sets, experiment)
    plan.command = command_line(click.get_current_context())
    plan.by = by
    from suite.exec import phases

    phases.import_engine()  # torch and the engine, timed: what a worker process would pay to start
    with phases.CLOCK.phase("building"):
        runs.check(plan, registry)
        tuning.plan_file_tuning(plan, registry, storage=storage, tracking_uri=tracking_uri, device=device,
                                workers=workers, engine=engine, heartbeat=heartbeat, grace=grace,
                                submit_only=submit_only)
    from suite.exec.devices import resolve_devices  # imports torch: after the flags are checked

    devices = resolve_devices(device, workers)
    if dry_run:
        _print_dry_run(plan.sections, len(plan.specs), plan.tuning,
                       unit_lines(plan.specs, registry, engine, stack_size, devices))
        return
    if storage is not None or study or submit_only:
        if force:
            raise SpecError("--force cannot be combined with --storage: a shared grid reuses finished runs")
        _shared(plan, registry, devices, storage, tracking_uri, heartbeat, grace, study, submit_only, quiet, engine,
                stack_size, output_format)
        return
    _local(plan, registry, devices, tracking_uri, force, quiet, engine, stack_size, output_format,
           adaptive=workers is None)


def _print_dry_run(sections, total: int, tuning=(), units=()) -> None:
    from suite.tuning.labels import readable_name

    for sec, specs in sections:
        varying = axes.varying_keys(specs, skip=())
        if len(sections) > 1:
            click.echo(f"== {sec}: {len(specs)} runs")
        for i, spec in enumerate(specs, 1):
            flat = spec.flat_params()
            shown = " ".join(f"{k}={flat[k]}" for k in varying if k in flat)
            click.echo(f"  {i:>4}. {spec.hash}  {spec.name}  {shown}".rstrip())
    studies: dict[str, list] = {}
    for request in tuning:
        for p in request.plans:
            studies.setdefault(p.section, []).append((p, request))
    for sec, items in studies.items():
        click.echo(f"== {sec}: {len(items)} Optuna studies (tuned)")
        for i, (p, request) in enumerate(items, 1):
            seeds = f"{p.seeds} seed{'s' if p.seeds != 1 else ''}"
            click.echo(f"  {i:>4}. {readable_name(p)}  {request.trials} trials × {seeds}, {p.budget}, "
                       f"tuning {', '.join(k for k, _ in p.space)}")
    n_studies = sum(len(v) for v in studies.values())
    also = f" and {n_studies} tuned stud{'y' if n_studies == 1 else 'ies'}" if n_studies else ""
    for line in units:
        click.echo(line)
    click.echo(f"{total} runs{also} (dry run: nothing was run or logged)")


def unit_lines(specs, registry, engine: str, stack_size, devices) -> list[str]:
    """The work units the runs would train in: stacks (one batched model each, with their sizes)
    and runs through the per-run loop, with the reason."""
    from suite.engine.stack import stackable
    from suite.engine.units import plan_units

    if not specs:
        return []
    units = plan_units(specs, registry, engine=engine, stack_size=stack_size, device=devices[0], workers=len(devices))
    stacks = [u for u in units if engine != "loop" and stackable(specs[u[0]], registry)]
    loops = [u for u in units if not any(u is s for s in stacks)]
    sizes = ", ".join(str(len(u)) for u in stacks) or "none"
    lines = [f"planned units (--engine {engine}, {len(devices)} x {devices[0]}): {len(stacks)} stack(s) of "
             f"{sizes} runs, {len(loops)} run(s) through the per-run loop"]
    for u in stacks:
        first = specs[u[0]]
        counts: dict[str, int] = {}
        for i in u:
            label = f"{specs[i].optimizer}/{specs[i].scheduler}/{specs[i].averager}"
            counts[label] = counts.get(label, 0) + 1
        rows = ", ".join(f"{label} x{n}" for label, n in counts.items())
        lines.append(f"  stack of {len(u)}: {first.problem} {first.sampler} b{first.batch_size} {first.budget_text}; "
                     f"optimizer/scheduler/averager {rows}")
    reasons: dict[str, int] = {}
    for u in loops:
        spec = specs[u[0]]
        why = "--engine loop" if engine == "loop" else "no stacked implementation: " + ", ".join(
            f"{f} {spec.component(f)!r}" for f in FAMILIES if registry.get(f, spec.component(f)).stacked is None)
        reasons[why] = reasons.get(why, 0) + 1
    lines += [f"  loop: {n} run(s), one at a time ({why})" for why, n in reasons.items()]
    return lines


def _shared(plan, registry, devices, storage, tracking_uri, heartbeat, grace, study, submit_only, quiet, engine,
            stack_size, output_format) -> None:
    from suite.api import runs, summaries, tuning

    data: dict = {}
    if not plan.specs:  # a benchmark file with tuned experiments only
        tuned = tuning.run_tuned(plan, registry, output_format=_tuned_format(plan, output_format), data=data,
                                 **echoes(quiet))
        if tuned:
            ending = tuning.write_benchmark_report(plan, tuned[0].tracking_uri, output_format=output_format, data=data)
            _end(ending, tuned[0].tracking_uri, tuned[0].experiment_id)
        if output_format == "json" and not submit_only:
            click.echo(json.dumps(data, indent=1))
        if any(o.troubles for o in tuned):
            sys.exit(1)
        return
    shared = runs.run_shared(plan, devices, storage=storage, tracking_uri=tracking_uri, heartbeat=heartbeat,
                             grace=grace, study=study, submit_only=submit_only, quiet=quiet or not verbose(),
                             echo=lambda line: click.echo(line, err=True), engine=engine, stack_size=stack_size)
    click.echo(f"grid study {shared.study!r}: {len(plan.specs)} runs, "
               f"{'enqueued in' if shared.created else 'already in'} {shared.storage}", err=True)
    if submit_only:
        click.echo(f"workers join it with: suite worker --storage '{shared.storage}' --study {shared.study}")
        tuning.run_tuned(plan, registry, output_format=output_format, data=data, **echoes(quiet))  # enqueued
        return
    brief = _tuned_format(plan, output_format) == "brief"
    for line in shared.worker_lines:
        click.echo(line, err=True)
    out, missing = shared.outcome, shared.missing
    if output_format == "json":
        data.update(summaries.run_summary(plan, out, shared.tracker, missing=missing))
    else:
        not_done = f", {len(missing)} failed or not done" if missing else ""
        click.echo(f"{len(plan.specs)} runs: {len(out.skipped)} done{not_done}")
        if brief:
            _grid_pointer(out)
            unstable_note(out)
        else:
            grid_table(out)
            unstable_note(out)
            click.echo(f"MLflow: experiment {plan.experiment!r} at {shared.tracker.tracking_uri}, parent run "
                       f"{out.parent_run_id}")
            _where(shared.tracker, out)
    for s in missing:
        click.echo(f"FAILED or not done: {s.name} [{s.hash}]", err=True)
    tuned = tuning.run_tuned(plan, registry, output_format=_tuned_format(plan, output_format), data=data,
                             **echoes(quiet))
    if plan.benchmark is not None:
        ending = tuning.write_benchmark_report(plan, shared.tracker.tracking_uri, output_format=output_format,
                                               data=data)
        _end(ending, shared.tracker.tracking_uri, shared.tracker.experiment_id, out)
    if output_format == "json":
        click.echo(json.dumps(data, indent=1))
    if missing or any(o.troubles for o in tuned):
        sys.exit(1)


def _local(plan, registry, devices, tracking_uri, force, quiet, engine, stack_size, output_format,
           adaptive=False) -> None:
    from suite.api import runs, summaries, tuning
    from suite.exec.phases import CLOCK

    out = tracker = None
    data: dict = {}
    single = not plan.wants_parent
    brief = _tuned_format(plan, output_format) == "brief"
    if plan.specs:
        out, tracker = runs.run_local(plan, registry, devices, tracking_uri=tracking_uri, force=force, quiet=quiet,
                                      engine=engine, stack_size=stack_size, adaptive=adaptive)
        if out.reaped:
            click.echo(f"marked {len(out.reaped)} run(s) left RUNNING by a dead invocation as interrupted", err=True)
        if output_format == "json":
            data = summaries.run_summary(plan, out, tracker)
        else:
            if single:
                _single_summary(out, tracker)
            else:
                _grid_summary(out, force, table=not brief)
            if not brief:  # a benchmark file's output ends with where to look
                click.echo(f"MLflow: {_experiment_line(tracker, out)}")
                _where(tracker, out)
    tuned = tuning.run_tuned(plan, registry, output_format=_tuned_format(plan, output_format), data=data,
                             **echoes(quiet))
    ending: list[str] = []
    if plan.benchmark is not None and ((out is not None and out.rows) or tuned):
        ending = tuning.write_benchmark_report(plan, tracker.tracking_uri if tracker else tuned[0].tracking_uri,
                                               output_format=output_format, data=data)
    if output_format == "json":
        click.echo(json.dumps(data, indent=1))
    if out is not None and out.parent_run_id:
        tracker.log_phases(out.parent_run_id, CLOCK.seconds())
    if output_format != "json":  # JSON stays parseable; the same figures are suite.seconds.* tags
        click.echo(CLOCK.line())
    if brief and tracker is not None:
        _end(ending, tracker.tracking_uri, tracker.experiment_id, out, tracker)
    elif brief and tuned:
        _end(ending, tuned[0].tracking_uri, tuned[0].experiment_id)
    if (out is not None and out.failures) or any(o.troubles for o in tuned):
        sys.exit(1)
    diverged = [r for r in out.results.values() if r.status == "diverged"] if out is not None else []
    if single and diverged:  # one configuration asked for, and it diverged: say so and exit non-zero
        click.echo(f"run diverged: {diverged[0].reason}", err=True)
        sys.exit(1)


def _tuned_format(plan, output_format: str) -> str:
    """How a run's tuned experiments report: ``brief`` (a pointer to the report) for a benchmark
    file's text output, else ``output_format``."""
    return "brief" if plan.benchmark is not None and output_format == "text" else output_format


def _experiment_line(tracker, out) -> str:
    where = f"experiment {tracker.experiment_name!r} at {tracker.tracking_uri}"
    return where + (f", parent run {out.parent_run_id}" if out is not None and out.parent_run_id else "")


def _end(ending: list[str], tracking_uri: str, experiment_id: str, out=None, tracker=None) -> None:
    """A benchmark file's last lines: the claims summary and verdicts, the report's path, then
    the MLflow experiment and its runs table's URL in the grid's saved view."""
    from suite.tracking import ui

    for line in ending:
        click.echo(line)
    if tracker is not None:
        click.echo(f"MLflow: {_experiment_line(tracker, out)}")
    view = out.view if out is not None else None
    for line in ui.where_lines(tracking_uri, experiment_id, view=view):
        click.echo(line)


def _grid_pointer(out) -> None:
    """Where a benchmark file's per-experiment tables are (instead of printing them)."""
    on = f" and summary.md on parent run {out.parent_run_id}" if out.parent_run_id else ""
    click.echo(f"per-experiment tables (configurations, winner per batch size): the report's sections{on}")


def _where(tracker, out) -> None:
    """The ``mlflow ui`` command that serves the store, and the URLs of the runs and of this run."""
    from suite.tracking import ui

    run_id = out.parent_run_id
    if run_id is None and len(out.specs) == 1:
        spec = out.specs[0]
        earlier = out.skipped.get(spec.hash)
        run_id = out.run_ids.get(spec.hash) or (earlier.info.run_id if earlier is not None else None)
    for line in ui.where_lines(tracker.tracking_uri, tracker.experiment_id, view=out.view, run_id=run_id):
        click.echo(line)


def _single_summary(out, tracker) -> None:
    from suite.report import tables

    (spec,) = out.specs
    if spec.hash in out.results:
        for line in tables.run_summary(out.results[spec.hash]):
            click.echo(line)
        return
    run = out.skipped[spec.hash]
    m = run.data.metrics
    click.echo(f"run {spec.name} [{spec.hash}] was already done: MLflow run {run.info.run_id} "
               f"({run.data.tags.get(TAG_STATUS)}); --force runs it again")
    shown = [k for k in ("train_loss", "val_loss", "avg_val_loss", "dist_to_opt", "avg_dist_to_opt") if k in m]
    if shown:
        click.echo("  final " + "  ".join(f"{k}={m[k]:.6f}" for k in shown))


def _grid_summary(out, force: bool, table: bool = True) -> None:
    fresh, skipped = len(out.results), len(out.skipped)
    counts = {}
    for r in out.results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    meanwhile = f", {len(out.elsewhere)} of them by another invocation meanwhile" if out.elsewhere else ""
    click.echo(f"{len(out.specs)} runs: {fresh} run now ({text or 'none'}), {skipped} done before (skipped){meanwhile}")
    if table:
        grid_table(out)
    else:
        _grid_pointer(out)
    unstable_note(out)
    for r in out.failures:
        click.echo(f"FAILED {r.spec.name} [{r.spec.hash}]: {r.reason} (traceback.txt in its MLflow run)", err=True)


def unstable_note(out) -> None:
    """The grid summary's line on the stacked runs of this invocation outside the exactness promise."""
    from suite.engine.exactness import unstable_line

    line = unstable_line(list(out.results.values()))
    if line:
        click.echo(f"UNSTABLE: {line}")


def grid_table(out) -> None:
    """The per-configuration table of a grid and the winner per batch size."""
    from suite.report import tables

    for line in tables.table_text(out.stats):
        click.echo(line)
    lines = tables.winner_lines(out.stats)
    if lines:
        click.echo(tables.WINNER_HEADER)
        for line in lines:
            click.echo(f"  {line}")
