"""``suite run`` as a library: plan what to run (flags or a benchmark file), check it, and run
it here (:func:`suite.grids.local.run_grid`) or shared through an Optuna storage with workers
anywhere (:func:`run_shared`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.errors import SpecError
from suite.registry import Registry
from suite.report.score import Score
from suite.specs import axes, benchfile
from suite.specs.spec import DEFAULT_COMPONENTS, DEFAULT_DIVERGE_FACTOR, RunSpec, parse_assignment
from suite.stores import check_name
from suite.vocab import TAG_BENCHMARK

FAMILIES_FLAGS = ("problem", "sampler", "optimizer", "scheduler", "averager")
SHORTCUTS = {"lr": "optimizer.lr", "momentum": "optimizer.momentum", "weight_decay": "optimizer.weight_decay"}
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = "32"

Sections = list[tuple[str, list[RunSpec]]]


@dataclass
class RunPlan:
    """What one ``suite run`` runs: named sections of specs, where they are logged, and under what."""

    sections: Sections
    experiment: str
    run_name: str
    parent_tags: dict[str, Any] = field(default_factory=dict)
    benchmark: Path | None = None
    where: dict[str, str] = field(default_factory=dict)  # section -> "FILE:LINE" for errors
    command: str | None = None  # how it was asked for (the command line): a param of the parent run
    by: Score = field(default_factory=Score)  # what the summary compares configurations by (--metric)
    bench: Any = None  # the suite.specs.benchfile.Benchmark of a benchmark file
    tuning: list[Any] = field(default_factory=list)  # its tuned experiments' suite.tuning.session.Request list

    @property
    def parent_params(self) -> dict[str, str]:
        return {"command": self.command} if self.command else {}

    @property
    def specs(self) -> list[RunSpec]:
        """Every distinct spec, in order (a spec in two sections runs once)."""
        from suite.grids.local import distinct

        return distinct(self.sections)

    @property
    def wants_parent(self) -> bool:
        """A benchmark file or a grid gets a parent run; a single configuration does not."""
        return self.benchmark is not None or len(self.specs) > 1

    @property
    def summary_curves(self) -> bool:
        """Whether the grid summary draws each section's loss curves on the parent run: not for a
        benchmark file, whose findings report puts its own, per batch size, on the same run."""
        return self.benchmark is None


def plan_benchmark(path: Path, registry: Registry, experiment: str | None = None) -> RunPlan:
    """The plan of a benchmark file (validated as a whole; errors name the file and line)."""
    check_name(experiment, "--experiment")
    bench = benchfile.load(path, registry)
    return RunPlan(
        sections=[(s.name, list(s.specs)) for s in bench.sections if s.tune is None],
        experiment=experiment or bench.name, run_name=f"{bench.name} ({path})", parent_tags={TAG_BENCHMARK: str(path)},
        benchmark=path, where={s.name: s.where(path) for s in bench.sections}, bench=bench,
    )


def is_spec_file(path: Path) -> bool:
    """Whether ``path`` is a ``spec.yaml`` the suite logged with a run (it names its ``spec_hash``)."""
    from suite.errors import BenchFileError
    from suite.specs import yamlfile

    try:
        data = yamlfile.read(path, "spec file").value
    except BenchFileError:  # not a spec file: the benchmark loader says why
        return False
    return isinstance(data, dict) and "spec_hash" in data and "params" in data


SPEC_SCALARS = ("batch_size", "seed", "epochs", "steps", "eval_every", "diverge_factor", "target")


def plan_spec_file(path: Path, registry: Registry, experiment: str | None = None) -> RunPlan:
    """The plan of a ``spec.yaml`` logged with an earlier run: the same run again (or, edited, a
    new one), its values validated as on the command line (a value of the wrong shape is a
    one-line :class:`SpecError` naming the file, line and key)."""
    from suite.specs import yamlfile
    from suite.specs.spec import resolve_spec

    check_name(experiment, "--experiment")
    root = yamlfile.read(path, "spec file")
    data = dict(root.value)
    data.pop("spec_hash", None)
    known = {*FAMILIES_FLAGS, *SPEC_SCALARS, "params"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{path}: unknown key {unknown[0]!r} in a run spec; keys: {', '.join(sorted(known))}")

    def fail(key: str, what: str) -> SpecError:
        return SpecError(f"{path}:{data[key].line}: {key}: expected {what}, got {_shape(data[key].value)}")

    for key in (*FAMILIES_FLAGS, *SPEC_SCALARS):
        if key in data and isinstance(data[key].value, dict | list | bool):
            raise fail(key, "a name" if key in FAMILIES_FLAGS else "a number")
    params = data["params"].value if "params" in data else {}
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise fail("params", "a mapping of family.param: value")
    for key, node in params.items():
        if isinstance(node.value, dict | list):
            raise SpecError(f"{path}:{node.line}: params.{key}: expected one value, got {_shape(node.value)}")
    value = {k: n.value for k, n in data.items() if k != "params"}
    try:
        spec = resolve_spec(
            registry, components={f: None if value.get(f) is None else str(value[f]) for f in FAMILIES_FLAGS},
            overrides={k: n.value for k, n in params.items()},
            batch_size=axes._int(value.get("batch_size", 32), "batch-size"),
            seed=axes._int(value.get("seed", 0), "seed"),
            epochs=None if value.get("epochs") is None else axes._int(value["epochs"], "epochs"),
            steps=None if value.get("steps") is None else axes._int(value["steps"], "steps"),
            eval_every=None if value.get("eval_every") is None else axes._int(value["eval_every"], "eval-every"),
            diverge_factor=axes._float(value.get("diverge_factor", DEFAULT_DIVERGE_FACTOR), "diverge-factor"),
            target=None if value.get("target") is None else axes._float(value["target"], "target"),
        )
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    return RunPlan(sections=[("spec", [spec])], experiment=experiment or spec.problem, run_name=spec.name)


def _shape(value: Any) -> str:
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)


def plan_flags(registry: Registry, flags: Mapping[str, Any], sets: Sequence[str] = (),
               experiment: str | None = None) -> RunPlan:
    """The plan of the command line's flags: the cross product of their comma lists.

    ``flags`` holds the values of ``--problem --sampler --optimizer --scheduler --averager
    --batch-size --epochs --steps --eval-every --seed --seeds --lr --momentum --weight-decay
    --diverge-factor --target`` (None where not given, as text where a comma list is allowed)."""
    check_name(experiment, "--experiment")
    specs = grid_specs(registry, flags, sets)
    problems = sorted({s.problem for s in specs})
    exp = experiment or (problems[0] if len(problems) == 1 else "grid")
    return RunPlan(sections=[("grid", specs)], experiment=exp, run_name=f"grid of {len(specs)} runs")


def grid_specs(registry: Registry, flags: Mapping[str, Any], sets: Sequence[str] = ()) -> list[RunSpec]:
    """The cross product of the command line's lists, validated."""
    grid_axes: list[axes.Axis] = []
    for family in FAMILIES_FLAGS:
        grid_axes.append(axes.axis(family, axes.split_list(flags.get(family) or DEFAULT_COMPONENTS[family])))
    hyper: dict[str, list[str]] = {}
    for name in ("lr", "momentum", "weight_decay"):
        if flags.get(name) is not None:
            hyper[SHORTCUTS[name]] = axes.split_list(str(flags[name]))
    for text in sets:
        family, param, value = parse_assignment(text)
        key = f"{family}.{param}"
        if key in hyper:
            given = next((f"--{n.replace('_', '-')}" for n, k in SHORTCUTS.items() if k == key), "--set")
            raise SpecError(f"{key} is given twice ({given} and --set {text!r}): give its values once, as a comma list")
        hyper[key] = axes.split_list(value)
    grid_axes += [axes.axis(k, v) for k, v in hyper.items()]
    grid_axes.append(axes.axis("batch_size", axes.split_list(str(flags.get("batch_size") or DEFAULT_BATCH_SIZE))))
    if flags.get("seeds") is not None and flags.get("seed") is not None:
        raise SpecError("give --seed N or --seeds K, not both")
    seeds = axes.parse_seeds(str(flags["seeds"])) if flags.get("seeds") is not None else [flags.get("seed") or 0]
    grid_axes.append(axes.axis("seed", seeds))
    scalars: dict[str, Any] = {"eval_every": flags.get("eval_every")}
    if flags.get("epochs") is None and flags.get("steps") is None:
        scalars["epochs"] = DEFAULT_EPOCHS
    else:
        scalars.update(epochs=flags.get("epochs"), steps=flags.get("steps"))
    for key in ("diverge_factor", "target"):
        if flags.get(key) is not None:
            scalars[key] = flags[key]
    return axes.expand(registry, axes.product(grid_axes), {k: v for k, v in scalars.items() if v is not None})


def check(plan: RunPlan, registry: Registry) -> None:
    """Build each distinct configuration once, so a configuration that cannot work is refused
    (:class:`SpecError`, naming the file and line of a benchmark file) before anything runs, and
    so is a ``--metric`` (``plan.by``) that none of the runs logs."""
    from suite.engine.loop import preflight

    logged: set[str] | None = set()
    for sec, specs in plan.sections:
        try:
            names = preflight(specs, registry)
        except SpecError as exc:
            raise SpecError(f"{plan.where[sec]}: {exc}" if plan.where.get(sec) else str(exc)) from None
        logged = None if names is None or logged is None else logged | names
    if logged and not {plan.by.metric, plan.by.averaged} & logged:
        raise SpecError(f"--metric {plan.by.metric!r}: the runs log no such metric; they log "
                        f"{', '.join(sorted(logged))}")


def write_plan_report(plan: RunPlan, tracking_uri: str, out_dir: str | Path | None = None, *,
                      studies: dict[str, list[str]] | None = None,
                      echo: Callable[[str], None] | None = None) -> Path:
    """The findings report of a benchmark file's runs (``reports/EXPERIMENT/report.html`` by
    default), also logged on its parent run; returns the HTML's path. ``studies``: the Optuna
    studies of its tuned experiments (:func:`suite.api.tuning.study_names`); ``echo``: handed the
    one-line claims summary."""
    from suite.report.build import write_report

    out = Path(out_dir) if out_dir is not None else report_dir(plan.experiment)
    return write_report(plan.experiment, tracking_uri, out, benchmark=plan.benchmark, by=plan.by, studies=studies,
                        echo=echo)


def report_dir(experiment: str) -> Path:
    """Where an experiment's report goes by default: ``reports/NAME``, the name made a single
    safe path component (:func:`suite.specs.naming.file_name`), so it stays under ``reports/``."""
    from suite.specs.naming import file_name

    return Path("reports") / file_name(experiment)


def run_local(plan: RunPlan, registry: Registry, devices: Sequence[str], *, tracking_uri: str | None = None,
              force: bool = False, quiet: bool = False, engine: str = "auto", stack_size: int | None = None,
              adaptive: bool = False):
    """Run the plan's specs not done yet on ``devices``; returns the
    :class:`suite.grids.local.GridOutcome` and the :class:`suite.tracking.tracker.Tracker`.
    ``adaptive``: run in this process while workers would not pay off (measured)."""
    from suite.exec.phases import CLOCK

    with CLOCK.phase("reporting"):  # matplotlib
        import suite.report.tables  # noqa: F401
    with CLOCK.phase("tracking"):  # importing MLflow is part of what tracking costs
        from suite.grids.local import run_grid
        from suite.tracking.tracker import Tracker

    tracker = Tracker(plan.experiment, tracking_uri)
    out = run_grid(plan.sections, tracker, registry, devices, name=plan.run_name, force=force, quiet=quiet,
                   parent=plan.wants_parent, parent_tags=plan.parent_tags, parent_params=plan.parent_params,
                   engine=engine, stack_size=stack_size, adaptive=adaptive, by=plan.by,
                   curves=plan.summary_curves)
    return out, tracker


@dataclass
class SharedOutcome:
    """What a shared grid's invocation did: the study, and (unless only submitted) the grid."""

    study: str
    created: bool
    storage: str  # for display (no password)
    worker_lines: list[str] = field(default_factory=list)
    outcome: Any = None  # suite.grids.local.GridOutcome, None with submit_only
    missing: list[RunSpec] = field(default_factory=list)  # specs without a finished run
    tracker: Any = None


def run_shared(plan: RunPlan, devices: Sequence[str], *, storage: str | None, tracking_uri: str | None = None,
               heartbeat: int | None = None, grace: int | None = None, study: str | None = None,
               submit_only: bool = False, quiet: bool = False, echo: Callable[[str], None] = print,
               engine: str = "auto", stack_size: int | None = None) -> SharedOutcome:
    """Enqueue the plan as a grid study in ``storage`` (or join it), work on it here with a
    storage worker per device entry, then summarize from MLflow."""
    import optuna

    from suite.api.work import work
    from suite.distributed.grid_study import submit_grid
    from suite.grids.local import GridOutcome, collect_rows, grid_axes, log_summary
    from suite.report import tables
    from suite.stores import DEFAULT_HEARTBEAT, HeartbeatPolicy, describe, normalize_storage, open_storage
    from suite.tracking import ui
    from suite.tracking.tracker import Tracker
    from suite.vocab import FAILED, STUDY_PARENT_RUN_ID

    check_name(study, "--study")
    url = normalize_storage(storage)
    specs = plan.specs
    name, created = submit_grid(specs, url, experiment=plan.experiment, tracking_uri=tracking_uri, study_name=study,
                                run_name=plan.run_name, parent_tags=plan.parent_tags,
                                parent_params={**grid_axes(plan.sections), **plan.parent_params})
    shared = SharedOutcome(name, created, describe(url))
    if submit_only:
        return shared
    policy = HeartbeatPolicy(heartbeat or DEFAULT_HEARTBEAT, grace)
    shared.worker_lines = work(url, [name], devices, quiet=quiet, policy=policy, echo=echo, engine=engine,
                               stack_size=stack_size)
    tracker = Tracker(plan.experiment, tracking_uri)
    done = tracker.done_runs()
    parent = optuna.load_study(study_name=name, storage=open_storage(url)).user_attrs.get(STUDY_PARENT_RUN_ID)
    out = GridOutcome(specs=list(specs), skipped={s.hash: done[s.hash] for s in specs if s.hash in done},
                      parent_run_id=parent)
    out.rows = collect_rows(plan.sections, out, tracker)
    out.stats = tables.config_stats(out.rows, plan.by)
    out.view = ui.share_view(tracker.set_experiment_tag, axes.varying_keys(specs))
    shared.missing = [s for s in specs if s.hash not in done]
    if parent:
        log_summary(tracker, out, curves=plan.summary_curves)
        if shared.missing:
            tracker.mark(parent, FAILED, f"{len(shared.missing)} run(s) failed or not done")
    shared.outcome, shared.tracker = out, tracker
    return shared
