"""``suite tune``: Optuna tunes each variant at each batch size; MLflow records it; a table says
which choice wins where."""

from __future__ import annotations

import sys

import click

from suite.cli.common import storage_options, tracking_options
from suite.errors import SuiteError
from suite.registry import Registry, get_registry
from suite.specs.spec import parse_assignment

DEFAULT_EPOCHS = "epochs:10"
DEFAULT_STEPS = "steps:500"
DEFAULT_TARGET_BUDGET = "steps:auto"  # steps-to-target: runs stop at the target
TARGET_SEEDS = 3  # steps-to-target: default seeds per trial
TARGET_REEVALUATE = 5  # steps-to-target: default fresh seeds per re-evaluated trial


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or not all(names):
        raise SuiteError(f"malformed {option} {text!r}: give a comma-separated list of names, e.g. sgd,adam")
    return names


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(b < 1 for b in sizes):
        raise SuiteError(f"malformed --batch-size {text!r}: give positive integers separated by commas, e.g. 8,64,512")
    return list(dict.fromkeys(sizes))


def _default_budget(registry: Registry, problem: str, fixed: dict[str, str]) -> str:
    """``epochs:5`` for a problem with a data set, ``steps:500`` for one without (the NQM)."""
    import torch

    from suite.context import BuildContext

    comp = registry.get("problem", problem)
    params = comp.resolve({k.partition(".")[2]: v for k, v in fixed.items() if k.startswith("problem.")})
    built = comp.build(BuildContext(seed=0, device=torch.device("cpu"), batch_size=1), params)
    return DEFAULT_EPOCHS if built.n_train is not None else DEFAULT_STEPS


@click.command()
@click.option("--problem", default="logistic", show_default=True, help="Problem(s), comma-separated.")
@click.option("--optimizer", default="sgd,precond", show_default=True, help="Optimizer variants, comma-separated.")
@click.option("--scheduler", default="constant", show_default=True, help="Scheduler variants.")
@click.option("--averager", default="none", show_default=True, help="Averager variants.")
@click.option("--sampler", default="shuffle", show_default=True, help="Sampler variants.")
@click.option("--batch-size", "batch_sizes", default="8,64,512", show_default=True, help="Batch sizes.")
@click.option("--trials", type=int, default=30, show_default=True, help="Trials per study (pruned included).")
@click.option("--budget", default=None,
              help=f"Each trial's budget: epochs:N, steps:N or steps:auto (default {DEFAULT_EPOCHS}; {DEFAULT_STEPS} "
                   f"for a problem without a data set; {DEFAULT_TARGET_BUDGET} for steps-to-target: a cap per batch "
                   "size, from the closed form where the problem has one, runs stopping at the target).")
@click.option("--objective", default="final", show_default=True,
              help="final | best | steps-to-target:X, of the validation loss over the trial's seeds (the averaged "
                   "model's if any); steps-to-target uses the expected risk where the problem knows it (nqm).")
@click.option("--seeds", type=int, default=None,
              help=f"A trial's value is read from the mean curve over K seeds (default 1; {TARGET_SEEDS} for "
                   "steps-to-target).")
@click.option("--space", "spaces", multiple=True, metavar="FAMILY.PARAM=SPACE",
              help="Override a declared search space: log:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or choice:a,b.")
@click.option("--set", "sets", multiple=True, metavar="FAMILY.PARAM=VALUE",
              help="Fix a hyperparameter (it is then not tuned), e.g. --set optimizer.momentum=0.")
@click.option("--eval-every", type=int, default=None, help="Evaluate (and report to the pruner) every K steps.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True)
@click.option("--study-seed", type=int, default=None, help="Seed of the samplers: makes the tuning reproducible.")
@storage_options
@click.option("--submit-only", is_flag=True,
              help="Create the studies and enqueue their trials, then exit: `suite worker` processes run them "
                   "(and a later `suite tune` with the same options writes the report).")
@click.option("--reevaluate", type=int, default=None,
              help="Re-run each study's top trials on K fresh seeds each; the best mean wins and is reported as "
                   f"mean ± std (default 0; {TARGET_REEVALUATE} for steps-to-target).")
@click.option("--reevaluate-top", type=int, default=3, show_default=True,
              help="How many of each study's best trials --reevaluate re-runs.")
@tracking_options
def tune(problem, optimizer, scheduler, averager, sampler, batch_sizes, trials, budget, objective, seeds, spaces,
         sets, eval_every, pruner, study_seed, storage, heartbeat, grace, submit_only, reevaluate, reevaluate_top,
         experiment, tracking_uri, device, workers, quiet) -> None:
    """Tune lr, momentum, weight decay (and schedule/averager parameters) per variant and batch size."""
    from suite.exec.devices import resolve_devices
    from suite.stores import HeartbeatPolicy, describe, normalize_storage
    from suite.tune import plan
    from suite.tune.session import Request, run_session

    registry = get_registry()
    problems = _names(problem, "--problem")
    choices = {"optimizer": _names(optimizer, "--optimizer"), "scheduler": _names(scheduler, "--scheduler"),
               "averager": _names(averager, "--averager"), "sampler": _names(sampler, "--sampler")}
    for family, names in {"problem": problems, **choices}.items():
        for name in names:
            registry.get(family, name)
    sizes = _sizes(batch_sizes)
    budget_obj = plan.Budget.parse(budget) if budget is not None else None
    objective_obj = plan.Objective.parse(objective)
    space_overrides = dict(plan.parse_space_option(s) for s in spaces)
    fixed = {}
    for text in sets:
        family, param, value = parse_assignment(text)
        fixed[f"{family}.{param}"] = value
    if trials < 1:
        raise SuiteError(f"--trials={trials} is out of range: must be at least 1")
    to_target = objective_obj.kind == "steps-to-target"
    seeds = seeds if seeds is not None else TARGET_SEEDS if to_target else 1
    reevaluate = reevaluate if reevaluate is not None else TARGET_REEVALUATE if to_target else 0
    if reevaluate < 0:
        raise SuiteError(f"--reevaluate={reevaluate} is out of range: must be at least 0")
    if reevaluate_top < 1:
        raise SuiteError(f"--reevaluate-top={reevaluate_top} is out of range: must be at least 1")
    if eval_every is not None and eval_every < 1:
        raise SuiteError(f"--eval-every={eval_every} is out of range: must be at least 1")
    plans = []
    for p in problems:
        b = budget_obj or plan.Budget.parse(DEFAULT_TARGET_BUDGET if to_target else _default_budget(registry, p, fixed))
        plans += plan.plan_studies(
            registry, problems=[p], variant_list=plan.variants(choices), batch_sizes=sizes, budget=b,
            objective=objective_obj, seeds=seeds, fixed=fixed, space_overrides=space_overrides, eval_every=eval_every,
        )
    devices = resolve_devices(device, workers)
    request = Request(plans=plans, trials=trials, pruner=pruner, study_seed=study_seed, storage=storage,
                      reevaluate=reevaluate, devices=devices, experiment=experiment or problems[0],
                      tracking_uri=tracking_uri, objective=objective_obj, submit_only=submit_only,
                      heartbeat=HeartbeatPolicy(heartbeat, grace), reevaluate_top=reevaluate_top)
    echo = (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))
    outcome = run_session(request, registry, echo)
    if outcome is None:
        where = describe(normalize_storage(storage))
        click.echo(f"{len(plans)} stud{'y' if len(plans) == 1 else 'ies'} ready in {where}; workers join with: "
                   f"suite worker --storage '{where}'")
        return
    click.echo(outcome.markdown, nl=False)
    for line in outcome.troubles:
        click.echo(f"{line}; its unfinished trials are not counted: rerun the same command to complete them",
                   err=True)
    studies = "1 study" if len(plans) == 1 else f"{len(plans)} studies"
    click.echo(f"\n{studies} in Optuna storage {outcome.storage}; MLflow experiment "
               f"{outcome.experiment!r} at {outcome.tracking_uri}: report on run {outcome.report_run_id} "
               "(table.md, table.csv, figures; browse with `make ui`)")
    if outcome.troubles:
        sys.exit(1)
