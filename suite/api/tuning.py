"""``suite tune`` as a library: turn the command's options into a validated
:class:`suite.tune.session.Request` (everything that can be refused is refused here, before
anything is stored or logged), and run it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from suite.errors import SuiteError
from suite.registry import Registry
from suite.specs.spec import parse_assignment

DEFAULT_EPOCHS = "epochs:10"
DEFAULT_STEPS = "steps:500"


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
                 objective: str = "final", seeds: int = 1, spaces: Sequence[str] = (), sets: Sequence[str] = (),
                 eval_every: int | None = None, pruner: str = "median", study_seed: int | None = None,
                 storage: str | None = None, heartbeat: int | None = None, grace: int | None = None,
                 submit_only: bool = False, reevaluate: int = 0, experiment: str | None = None,
                 tracking_uri: str | None = None, device: str = "auto", workers: int | None = None) -> Any:
    """The :class:`suite.tune.session.Request` of ``suite tune``'s options (same names and defaults)."""
    from suite.exec.devices import resolve_devices
    from suite.specs.spec import MAX_BUDGET, MAX_SEED
    from suite.stores import DEFAULT_HEARTBEAT, HeartbeatPolicy, check_name, check_tracking_uri, normalize_storage
    from suite.tracking.tracker import resolve_tracking_uri
    from suite.tune import plan
    from suite.tune.session import Request

    check_name(experiment, "--experiment")
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
    if budget_obj is not None and budget_obj.n > MAX_BUDGET:
        raise SuiteError(f"--budget {budget!r} is out of range: at most {MAX_BUDGET} {budget_obj.unit}")
    both = sorted(set(fixed) & set(space_overrides))
    if both:
        raise SuiteError(f"{both[0]} is given by --set and by --space: pin it or search it, not both")
    if study_seed is not None and not 0 <= study_seed <= MAX_SEED:
        raise SuiteError(f"--study-seed={study_seed} is out of range: must be in [0, {MAX_SEED}]")
    if trials < 1:
        raise SuiteError(f"--trials={trials} is out of range: must be at least 1")
    if reevaluate < 0:
        raise SuiteError(f"--reevaluate={reevaluate} is out of range: must be at least 0")
    if eval_every is not None and eval_every < 1:
        raise SuiteError(f"--eval-every={eval_every} is out of range: must be at least 1")
    plans = []
    for p in problems:
        b = budget_obj or plan.Budget.parse(_default_budget(registry, p, fixed))
        plans += plan.plan_studies(
            registry, problems=[p], variant_list=plan.variants(choices), batch_sizes=sizes, budget=b,
            objective=objective_obj, seeds=seeds, fixed=fixed, space_overrides=space_overrides, eval_every=eval_every,
        )
    devices = resolve_devices(device, workers)
    normalize_storage(storage)  # a malformed storage or tracking URI: refused before anything is stored
    check_tracking_uri(resolve_tracking_uri(tracking_uri))
    return Request(plans=plans, trials=trials, pruner=pruner, study_seed=study_seed, storage=storage,
                   reevaluate=reevaluate, devices=devices, experiment=experiment or problems[0],
                   tracking_uri=tracking_uri, objective=objective_obj, submit_only=submit_only,
                   heartbeat=HeartbeatPolicy(heartbeat or DEFAULT_HEARTBEAT, grace))


def run(request: Any, registry: Registry, echo: Callable[[str], None] = print) -> Any:
    """Run a tuning request to the end (see :func:`suite.tune.session.run_session`)."""
    from suite.tune.session import run_session

    return run_session(request, registry, echo)
