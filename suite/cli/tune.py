"""``suite tune``: Optuna tunes each variant at each batch size; MLflow records it; a table says
which choice wins where."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from suite.api.tuning import (
    DEFAULT_EPOCHS,
    DEFAULT_POPULATION,
    DEFAULT_STEPS,
    DEFAULT_TARGET_BUDGET,
    TARGET_REEVALUATE,
    TARGET_SEEDS,
)
from suite.cli.common import INT, echoes, format_option, storage_options, tracking_options
from suite.registry import get_registry


@click.command()
@click.argument("benchmark", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--problem", default="logistic", show_default=True, help="Problem(s), comma-separated.")
@click.option("--optimizer", default="sgd,precond", show_default=True, help="Optimizer variants, comma-separated.")
@click.option("--scheduler", default="constant", show_default=True, help="Scheduler variants.")
@click.option("--averager", default="none", show_default=True, help="Averager variants.")
@click.option("--sampler", default="shuffle", show_default=True, help="Sampler variants.")
@click.option("--batch-size", "batch_sizes", default="8,64,512", show_default=True, help="Batch sizes.")
@click.option("--trials", type=INT, default=30, show_default=True, help="Trials per study (pruned included).")
@click.option("--budget", default=None,
              help=f"Each trial's budget: epochs:N, steps:N or steps:auto (default {DEFAULT_EPOCHS}; {DEFAULT_STEPS} "
                   f"for a problem without a data set; {DEFAULT_TARGET_BUDGET} for steps-to-target: a cap per batch "
                   "size, from the closed form where the problem has one, runs stopping at the target).")
@click.option("--objective", default="final", show_default=True,
              help="final | best | steps-to-target:X, of the validation loss over the trial's seeds (the averaged "
                   "model's if any); steps-to-target uses the expected risk where the problem knows it (nqm).")
@click.option("--seeds", type=INT, default=None,
              help=f"A trial's value is read from the mean curve over K seeds (default 1; {TARGET_SEEDS} for "
                   "steps-to-target).")
@click.option("--space", "spaces", multiple=True, metavar="FAMILY.PARAM=SPACE",
              help="Override a declared search space: log:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or choice:a,b.")
@click.option("--set", "sets", multiple=True, metavar="FAMILY.PARAM=VALUE",
              help="Fix a hyperparameter (it is then not tuned), e.g. --set optimizer.momentum=0.")
@click.option("--eval-every", type=INT, default=None, help="Evaluate (and report to the pruner) every K steps.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True)
@click.option("--study-seed", type=INT, default=None, help="Seed of the samplers: makes the tuning reproducible.")
@click.option("--studies", type=INT, default=1, show_default=True, metavar="R",
              help="Independent studies per variant and batch size, each with its own sampler seed; the report's "
                   "value is the median over them and its interval covers the tuning as well as the seeds.")
@storage_options
@click.option("--submit-only", is_flag=True,
              help="Create the studies and enqueue their trials, then exit: `suite worker` processes run them "
                   "(and a later `suite tune` with the same options writes the report).")
@click.option("--reevaluate", type=INT, default=None,
              help="Re-run each study's top trials on K fresh seeds each; the best mean wins and is reported as "
                   f"mean ± std (default 0; {TARGET_REEVALUATE} for steps-to-target).")
@click.option("--population", type=INT, default=None, metavar="K",
              help="Trials each worker asks Optuna for at once and trains as one stack (default: "
                   f"{DEFAULT_POPULATION}; 1 trains one trial at a time).")
@click.option("--engine", type=click.Choice(["auto", "stacked", "loop"]), default="auto", show_default=True,
              help="stacked: train a population as one batched model; loop: one run at a time.")
@click.option("--reevaluate-top", type=INT, default=3, show_default=True,
              help="How many of each study's best trials --reevaluate re-runs.")
@tracking_options
@format_option
def tune(benchmark, problem, optimizer, scheduler, averager, sampler, batch_sizes, trials, budget, objective, seeds,
         spaces, sets, eval_every, pruner, study_seed, studies, storage, heartbeat, grace, submit_only, reevaluate,
         population, engine, reevaluate_top, experiment, tracking_uri, device, workers, quiet, output_format) -> None:
    """Tune lr, momentum, weight decay (and schedule/averager parameters) per variant and batch size.

    BENCHMARK: a benchmark file; its tuned experiments (those with a ``tune:`` block) are tuned
    as the file says, and the file's report is written (``suite run`` on the file runs its grids
    too)."""
    from suite.api import tuning

    registry = get_registry()
    if benchmark is not None:
        _tune_benchmark(benchmark, registry, storage=storage, heartbeat=heartbeat, grace=grace, submit_only=submit_only,
                        engine=engine, experiment=experiment, tracking_uri=tracking_uri, device=device,
                        workers=workers, quiet=quiet, output_format=output_format)
        return
    request = tuning.plan_request(
        registry, problem=problem, optimizer=optimizer, scheduler=scheduler, averager=averager, sampler=sampler,
        batch_sizes=batch_sizes, trials=trials, budget=budget, objective=objective, seeds=seeds, spaces=spaces,
        sets=sets, eval_every=eval_every, pruner=pruner, study_seed=study_seed, studies=studies, storage=storage,
        heartbeat=heartbeat, grace=grace, submit_only=submit_only, reevaluate=reevaluate,
        reevaluate_top=reevaluate_top, population=population, engine=engine, experiment=experiment,
        tracking_uri=tracking_uri, device=device, workers=workers)
    outcomes = tuning.run_requests([request], registry, output_format=output_format, **echoes(quiet))
    _log_time(outcomes, output_format)
    if any(o.troubles for o in outcomes):
        sys.exit(1)


FILE_OPTIONS = ("storage", "heartbeat", "grace", "submit_only", "engine", "experiment", "tracking_uri", "device",
                "workers", "quiet", "output_format", "benchmark")


def _tune_benchmark(path: Path, registry, *, storage, heartbeat, grace, submit_only, engine, experiment, tracking_uri,
                    device, workers, quiet, output_format) -> None:
    """``suite tune FILE``: the file's tuned experiments, then the file's report."""
    from click.core import ParameterSource

    from suite.api import runs, tuning
    from suite.errors import SpecError

    ctx = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in ctx.params if name not in FILE_OPTIONS
             and ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    if given:
        raise SpecError(f"{path}: {', '.join(given)} cannot be combined with a benchmark file; its experiments' "
                        "tune: blocks say how to tune (edit the file, or copy it)")
    plan = runs.plan_benchmark(path, registry, experiment)
    if not plan.bench.tuned:
        raise SpecError(f"{path}: no experiment has a tune: block, so there is nothing to tune; "
                        f"`suite run {path}` runs its grids")
    tuning.plan_file_tuning(plan, registry, storage=storage, tracking_uri=tracking_uri, device=device, workers=workers,
                            engine=engine, heartbeat=heartbeat, grace=grace, submit_only=submit_only)
    data: dict = {}
    brief = "brief" if output_format == "text" else output_format  # the studies' table is in the report
    outcomes = tuning.run_tuned(plan, registry, output_format=brief, data=data, **echoes(quiet))
    if submit_only:
        return
    ending = tuning.write_benchmark_report(plan, outcomes[0].tracking_uri, output_format=output_format, data=data)
    if output_format == "json":
        click.echo(json.dumps(data, indent=1))
    _log_time(outcomes, output_format)
    from suite.tracking import ui

    for line in [*ending, *ui.where_lines(outcomes[0].tracking_uri, outcomes[0].experiment_id)]:
        click.echo(line)
    if any(o.troubles for o in outcomes):
        sys.exit(1)


def _log_time(outcomes, output_format: str) -> None:
    """The ``time:`` line, also logged as tags on each tuning report run."""
    from suite.exec.phases import CLOCK
    from suite.tracking.tracker import Tracker

    for outcome in outcomes:
        Tracker(outcome.experiment, outcome.tracking_uri).log_phases(outcome.report_run_id, CLOCK.seconds())
    if outcomes and output_format != "json":  # JSON stays parseable; the same figures are suite.seconds.* tags
        click.echo(CLOCK.line())
