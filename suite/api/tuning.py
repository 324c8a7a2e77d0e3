"""``suite tune`` as a library: turn the command's options into a validated
:class:`suite.tuning.session.Request` (everything that can be refused is refused here, before
anything is stored or logged), and run it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from suite.errors import SuiteError
from suite.registry import Registry
from suite.specs.spec import parse_assignment

if TYPE_CHECKING:
    from suite.progress import Progress

DEFAULT_EPOCHS = "epochs:10"
DEFAULT_STEPS = "steps:500"
DEFAULT_TARGET_BUDGET = "steps:auto"  # steps-to-target: runs stop at the target
TARGET_SEEDS = 3  # steps-to-target: default seeds per trial
TARGET_REEVALUATE = 5  # steps-to-target: default fresh seeds per re-evaluated trial
DEFAULT_POPULATION = 8  # trials a worker asks Optuna for at once and trains as one stack (see the README)


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


def plan_request(registry: Registry, *, problem: str = "logistic", optimizer: str = "sgd,precond",
                 scheduler: str = "constant", averager: str = "none", sampler: str = "shuffle",
                 batch_sizes: str = "8,64,512", trials: int = 30, budget: str | None = None,
                 objective: str = "final", seeds: int | None = None, spaces: Sequence[str] = (),
                 sets: Sequence[str] = (), eval_every: int | None = None, pruner: str = "median",
                 study_seed: int | None = None, storage: str | None = None, heartbeat: int | None = None,
                 grace: int | None = None, submit_only: bool = False, reevaluate: int | None = None,
                 reevaluate_top: int = 3, experiment: str | None = None, tracking_uri: str | None = None,
                 device: str = "auto", workers: int | None = None, population: int | None = None,
                 engine: str = "auto", studies: int = 1) -> Any:
    """The :class:`suite.tuning.session.Request` of ``suite tune``'s options (same names and defaults)."""
    from suite.specs.spec import MAX_BUDGET, MAX_SEED
    from suite.stores import check_name

    check_name(experiment, "--experiment")
    problems = _names(problem, "--problem")
    choices = {"optimizer": _names(optimizer, "--optimizer"), "scheduler": _names(scheduler, "--scheduler"),
               "averager": _names(averager, "--averager"), "sampler": _names(sampler, "--sampler")}
    for family, names in {"problem": problems, **choices}.items():
        for name in names:
            registry.get(family, name)
    sizes = _sizes(batch_sizes)
    fixed = {}
    for text in sets:
        family, param, value = parse_assignment(text)
        fixed[f"{family}.{param}"] = value
    if study_seed is not None and not 0 <= study_seed <= MAX_SEED:
        raise SuiteError(f"--study-seed={study_seed} is out of range: must be in [0, {MAX_SEED}]")
    if trials < 1:
        raise SuiteError(f"--trials={trials} is out of range: must be at least 1")
    if studies < 1:
        raise SuiteError(f"--studies={studies} is out of range: must be at least 1")
    to_target = objective.strip().startswith("steps-to-target")  # parsed (and checked) below
    seeds = seeds if seeds is not None else TARGET_SEEDS if to_target else 1
    reevaluate = reevaluate if reevaluate is not None else TARGET_REEVALUATE if to_target else 0
    if reevaluate < 0:
        raise SuiteError(f"--reevaluate={reevaluate} is out of range: must be at least 0")
    if population is not None and population < 1:
        raise SuiteError(f"--population={population} is out of range: must be at least 1")
    if reevaluate_top < 1:
        raise SuiteError(f"--reevaluate-top={reevaluate_top} is out of range: must be at least 1")
    if eval_every is not None and eval_every < 1:
        raise SuiteError(f"--eval-every={eval_every} is out of range: must be at least 1")
    # the checks above need no heavy import; suite.tuning.plan imports optuna and the engine (torch)
    from suite.exec import phases

    phases.import_engine()  # first, and timed: what a worker process would pay to start (see suite.exec.pool)
    from suite.exec.devices import resolve_devices
    from suite.stores import (
        DEFAULT_HEARTBEAT,
        HeartbeatPolicy,
        check_tracking_uri,
        normalize_storage,
        resolve_tracking_uri,
    )
    from suite.tuning.budget import Budget
    from suite.tuning.objective import Objective
    from suite.tuning.plan import plan_studies
    from suite.tuning.session import Request
    from suite.tuning.space import parse_space_option, variants

    budget_obj = Budget.parse(budget) if budget is not None else None
    objective_obj = Objective.parse(objective)
    space_overrides = dict(parse_space_option(s) for s in spaces)
    if budget_obj is not None and not budget_obj.auto and budget_obj.n > MAX_BUDGET:
        raise SuiteError(f"--budget {budget!r} is out of range: at most {MAX_BUDGET} {budget_obj.unit}")
    both = sorted(set(fixed) & set(space_overrides))
    if both:
        raise SuiteError(f"{both[0]} is given by --set and by --space: pin it or search it, not both")
    from suite.specs import limits

    cells = len(problems) * len(variants(choices)) * len(sizes)  # counted before R × cells plans are made
    per = f"{studies} studies per cell, " if studies > 1 else ""
    limits.check_runs(cells * studies * (trials * seeds + reevaluate * reevaluate_top),
                      f"the tuning ({cells * studies} studies ({per}{trials} trials × {seeds} seeds each), and "
                      "re-evaluations)")
    plans = []
    for p in problems:
        b = budget_obj or Budget.parse(DEFAULT_TARGET_BUDGET if to_target else _default_budget(registry, p, fixed))
        plans += plan_studies(
            registry, problems=[p], variant_list=variants(choices), batch_sizes=sizes, budget=b,
            objective=objective_obj, seeds=seeds, fixed=fixed, space_overrides=space_overrides, eval_every=eval_every,
            studies=studies,
        )
    devices = resolve_devices(device, workers)
    normalize_storage(storage)  # a malformed storage or tracking URI: refused before anything is stored
    check_tracking_uri(resolve_tracking_uri(tracking_uri))
    return Request(plans=plans, trials=trials, pruner=pruner, study_seed=study_seed, storage=storage,
                   reevaluate=reevaluate, devices=devices, experiment=experiment or problems[0],
                   tracking_uri=tracking_uri, objective=objective_obj, submit_only=submit_only,
                   heartbeat=HeartbeatPolicy(heartbeat or DEFAULT_HEARTBEAT, grace), reevaluate_top=reevaluate_top,
                   population=population or DEFAULT_POPULATION, engine=engine, adaptive=workers is None)


def plan_benchmark(bench: Any, registry: Registry, *, storage: str | None = None, experiment: str | None = None,
                   tracking_uri: str | None = None, device: str = "auto", workers: int | None = None,
                   engine: str = "auto", heartbeat: int | None = None, grace: int | None = None,
                   submit_only: bool = False) -> list[Any]:
    """The tuning requests of a benchmark file's tuned experiments (``tune:``; a
    :class:`suite.specs.benchfile.Benchmark`): one :class:`suite.tuning.session.Request` per
    group of experiments that share their session settings (trials, pruner, seeds of the
    samplers, re-evaluation, population), each study tagged with its experiment. Errors name
    the file, line and experiment."""
    from dataclasses import replace

    from suite.errors import BenchFileError
    from suite.specs.spec import DEFAULT_COMPONENTS

    requests: dict[tuple, Any] = {}
    seen: dict[str, Any] = {}  # study name -> the experiment that makes it
    for section in bench.tuned:
        tune = section.tune
        choices = dict(tune.choices)
        names = {f: ",".join(choices.get(f) or (DEFAULT_COMPONENTS[f],))
                 for f in ("optimizer", "scheduler", "averager", "sampler")}
        try:
            req = plan_request(
                registry, problem=",".join(tune.problems), **names,
                batch_sizes=",".join(map(str, tune.batch_sizes)), trials=tune.trials, budget=tune.budget,
                objective=tune.objective, seeds=tune.seeds, spaces=tune.spaces, sets=tune.sets,
                eval_every=tune.eval_every, pruner=tune.pruner, study_seed=tune.study_seed, storage=storage,
                reevaluate=tune.reevaluate, reevaluate_top=tune.reevaluate_top, population=tune.population,
                studies=tune.studies, engine=engine, experiment=experiment or bench.name, tracking_uri=tracking_uri,
                device=device, workers=workers, heartbeat=heartbeat, grace=grace, submit_only=submit_only)
        except SuiteError as exc:
            raise BenchFileError(f"{section.where(bench.path)}.tune: {exc}") from None
        plans = [replace(p, section=section.name) for p in req.plans]
        for p in plans:  # two experiments that make one study would re-evaluate it twice and share its runs
            if p.name in seen:
                other = seen[p.name]
                raise BenchFileError(f"{section.where(bench.path)}: its study {p.name} is also made by experiment "
                                     f"{other.name!r} (line {other.line}): give the two experiments different settings "
                                     "or merge them")
            seen[p.name] = section
        key = tune.session_key()
        if key in requests:
            requests[key] = replace(requests[key], plans=[*requests[key].plans, *plans])
        else:
            requests[key] = replace(req, plans=plans)
    return list(requests.values())


def study_names(requests: Sequence[Any]) -> dict[str, list[str]]:
    """Section -> the names its studies may have: the name with the pinned values, the
    settings-hashed name of studies created before, and the name a study created before names
    carried a hash is resumed under (``problem/variant/bB``)."""
    from suite.tuning.labels import readable_name

    out: dict[str, list[str]] = {}
    for request in requests:
        for plan in request.plans:
            out.setdefault(plan.section, []).extend(dict.fromkeys([readable_name(plan), plan.name, plan.legacy_name]))
    return out


Echo = Callable[[str], None]


def plan_file_tuning(plan: Any, registry: Registry, **options: Any) -> None:
    """Fill ``plan.tuning`` (a :class:`suite.api.runs.RunPlan` of a benchmark file) with the
    requests of the file's tuned experiments (:func:`plan_benchmark`; ``options``: storage,
    tracking_uri, device, workers, engine, heartbeat, grace, submit_only), validated before
    anything runs."""
    if plan.bench is not None and plan.bench.tuned:
        plan.tuning = plan_benchmark(plan.bench, registry, experiment=plan.experiment, **options)


def run_requests(requests: Sequence[Any], registry: Registry, *, out: Echo, err: Echo, progress: Echo,
                 output_format: str = "text", bar: Callable[[str], Progress] | None = None) -> list[Any]:
    """Run tuning requests one after the other and say what each did as ``suite tune`` does
    (``out``: its table, or its JSON; nothing with ``output_format="none"``; ``err``: workers that
    died; ``progress``: what the tuning says as it goes, and each trial unless ``bar`` is given:
    ``bar(label)`` makes the :class:`suite.progress.Progress` that counts a request's trials);
    returns their outcomes (none for requests only submitted)."""
    import json

    from suite.stores import describe, normalize_storage

    outcomes = []
    for request in requests:
        plans = request.plans
        outcome = run(request, registry, progress, bar(request_label(request)) if bar is not None else None)
        if outcome is None:
            where = describe(normalize_storage(request.storage))
            out(f"{len(plans)} stud{'y' if len(plans) == 1 else 'ies'} ready in {where}; workers join with: "
                f"suite worker --storage '{where}'")
            continue
        outcomes.append(outcome)
        for line in outcome.troubles:
            err(f"{line}; its unfinished trials are not counted: rerun the same command to complete them")
        if output_format == "json":
            from suite.api.summaries import tune_summary

            out(json.dumps(tune_summary(outcome, outcome.experiment_id), indent=1))
        elif output_format == "brief":  # a benchmark file's: the table is in its report, its warnings here
            from suite.tuning.winners import edge_warnings

            for line in edge_warnings(outcome.summaries):
                out(line)
            out(f"tuned {request_label(request)} in Optuna storage {outcome.storage}: the studies' table is in the "
                f"report and on MLflow run {outcome.report_run_id} (table.md); compare them: "
                f"optuna-dashboard '{outcome.storage}'")
        elif output_format != "none":  # "none": the caller prints them (suite run FILE --format json)
            from suite.tracking import ui

            studies = "1 study" if len(plans) == 1 else f"{len(plans)} studies"
            where = ui.where_lines(outcome.tracking_uri, outcome.experiment_id, run_id=outcome.report_run_id)
            stored = (f"{studies} in Optuna storage {outcome.storage}; MLflow experiment {outcome.experiment!r} at "
                      f"{outcome.tracking_uri}: report on run {outcome.report_run_id} (table.md, table.csv, figures)")
            dashboard = f"compare the studies: optuna-dashboard '{outcome.storage}'  (or: make dashboard)"
            for line in [outcome.markdown.rstrip("\n"), "", stored, *where, dashboard]:
                out(line)
    return outcomes


def request_label(request: Any) -> str:
    """A tuning request in a few words: its benchmark-file experiments (else problems) and
    number of studies."""
    names = list(dict.fromkeys(p.section or p.problem for p in request.plans))
    n = len(request.plans)
    return f"{', '.join(names)}: {n} stud{'y' if n == 1 else 'ies'}"


def run_tuned(plan: Any, registry: Registry, *, out: Echo, err: Echo, progress: Echo, output_format: str,
              data: dict[str, Any], bar: Callable[[str], Progress] | None = None) -> list[Any]:
    """Run a benchmark file's tuned experiments (``plan.tuning``; after its grids, for ``suite
    run``); with ``--format json`` their summaries go into ``data["tuned"]`` instead of ``out``."""
    if not plan.tuning:
        return []
    json_out = output_format == "json"
    outcomes = run_requests(plan.tuning, registry, out=out, err=err, progress=progress,
                            output_format="none" if json_out else output_format, bar=bar)
    if json_out:
        from suite.api.summaries import tune_summary

        data["tuned"] = [tune_summary(o, o.experiment_id) for o in outcomes]
    return outcomes


def write_benchmark_report(plan: Any, tracking_uri: str, *, output_format: str, data: dict[str, Any]) -> list[str]:
    """Write a benchmark file's report (its grids and tuned experiments): its path goes into
    ``data["report"]`` and its one-line claims summary (verdicts, underpowered claims) into
    ``data["claims"]``. Returns, unless the output is JSON, the lines that end the command's
    output: the claims summary, each claim's verdict, the report's path."""
    from suite.api.runs import write_plan_report
    from suite.exec.phases import CLOCK
    from suite.report.verdict_lines import claim_lines

    with CLOCK.phase("reporting"):
        lines: list[str] = []
        page = write_plan_report(plan, tracking_uri, studies=study_names(plan.tuning), echo=lines.append)
    data["report"] = str(page)
    data["claims"] = lines[0] if lines else ""
    if output_format == "json":
        return []
    verdicts = [f"  {line}" for line in claim_lines(page.with_name("report.md"))]
    return [*lines[:1], *verdicts, f"report: {page}  (per-experiment tables, the studies' table, figures)"]


def run(request: Any, registry: Registry, echo: Callable[[str], None] = print, trials: Progress | None = None) -> Any:
    """Run a tuning request to the end (see :func:`suite.tuning.session.run_session`)."""
    from suite.tracking import diagnose
    from suite.tuning.session import run_session

    # a store (tracking or Optuna) failing mid-run: exit code 1
    with diagnose.told(request.tracking_uri, "the tuning", storage=request.storage):
        return run_session(request, registry, echo, trials)
