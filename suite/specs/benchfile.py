"""Benchmark files (``benchmarks/*.yaml``): a documented schema, validated whole before anything
runs. Every error is one line naming the file, the line and the key.

Schema (every key optional except ``experiments``)::

    name: lecture            # MLflow experiment (default: the file's stem)
    description: text
    defaults:                # merged under every experiment (an experiment's budget or seeds replace them)
      <experiment keys>
    experiments:
      <experiment name>:     # one named comparison; its runs form one section of the summary
        description: text
        problem | sampler | optimizer | scheduler | averager:
          NAME                         # one component
          [NAME, NAME]                 # an axis of components
          {NAME: {param: V or [V, ..]}, NAME: {}}   # an axis with a grid per component
        batch_size: N or [N, ...]
        seeds: K (0..K-1) or "A-B" or [S, ...]     # or seed: S
        epochs: N  |  steps: N                      # the budget: exactly one
        eval_every: N                               # in steps (default: once per epoch)
        diverge_factor: F                           # stop as diverged past F x the initial loss
        target: X                                   # log steps_to_target: the first step at loss <= X
        params: {family.param: V or [V, ...]}       # hyperparameter axes
        tie:                                        # values that move together instead of crossing
          - {batch_size: [8, 64], optimizer.lr: [0.01, 0.08]}
          - {batch_size: [32, 1024], steps: [1000, 200], eval_every: [40, 8]}   # a budget per batch size

All axes of an experiment are crossed; each mapping under ``tie`` is one axis whose lists are
zipped. A key may be given in one place only (an axis, a component grid, or a tie).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.errors import BenchFileError, SpecError, SuiteError
from suite.registry import FAMILIES, Registry
from suite.specs import axes, limits, yamlfile
from suite.specs.spec import RunSpec
from suite.stores import check_experiment_name as check_name_length
from suite.stores import check_name

TOP_KEYS = ("name", "description", "defaults", "experiments")
EXPERIMENT_KEYS = (
    "description", *FAMILIES, "batch_size", "seeds", "seed", "epochs", "steps", "eval_every",
    "diverge_factor", "target", "params", "tie", "tune",
)
TUNE_KEYS = ("objective", "trials", "budget", "space", "reevaluate", "reevaluate_top", "population", "pruner",
             "study_seed", "eval_every", "studies")
TUNE_INTS = ("trials", "reevaluate", "reevaluate_top", "population", "study_seed", "eval_every", "studies")
TUNE_PRUNERS = ("median", "hyperband", "none")
TIE_SCALARS = ("batch_size", "seed", "steps", "eval_every")  # a budget may follow the batch size


@dataclass(frozen=True)
class TuneSettings:
    """A tuned experiment: what ``suite tune`` would be asked, as its options' values (checked
    further, with the registry and Optuna, by :func:`suite.api.tuning.plan_benchmark`)."""

    problems: tuple[str, ...]
    choices: tuple[tuple[str, tuple[str, ...]], ...]  # family -> component names (the variants' axes)
    batch_sizes: tuple[int, ...]
    sets: tuple[str, ...]  # pinned values, "family.param=value"
    spaces: tuple[str, ...]  # space overrides, "family.param=SPACE"
    objective: str = "final"
    trials: int = 30
    budget: str | None = None
    seeds: int | None = None
    reevaluate: int | None = None
    reevaluate_top: int = 3
    population: int | None = None
    pruner: str = "median"
    study_seed: int | None = None
    eval_every: int | None = None
    studies: int = 1  # independent studies per (variant, batch size), each with its own sampler seed

    def session_key(self) -> tuple:
        """What one tuning session shares: tuned experiments with equal keys run in one session."""
        return (self.objective, self.trials, self.pruner, self.study_seed, self.reevaluate, self.reevaluate_top,
                self.population)


@dataclass
class Section:
    """One named experiment of a benchmark file and the specs it expands to (none for a tuned
    experiment, whose trials Optuna chooses: see :attr:`tune`)."""

    name: str
    description: str
    specs: list[RunSpec]
    line: int = 0  # where the experiment starts in the file
    tune: TuneSettings | None = None

    def where(self, path: Path | str) -> str:
        """``file:line: experiments.NAME`` for error messages about this experiment."""
        return f"{path}:{self.line}: experiments.{self.name}"


@dataclass
class Benchmark:
    """A validated benchmark file."""

    path: Path
    name: str
    description: str
    sections: list[Section] = field(default_factory=list)

    @property
    def tuned(self) -> list[Section]:
        """The experiments tuned by Optuna (``tune:``)."""
        return [s for s in self.sections if s.tune is not None]

    @property
    def specs(self) -> list[RunSpec]:
        """Every distinct spec of every section, in order (a spec in two sections runs once)."""
        seen: dict[str, RunSpec] = {}
        for section in self.sections:
            for spec in section.specs:
                seen.setdefault(spec.hash, spec)
        return list(seen.values())


# -- YAML with line numbers ----------------------------------------------------------------
_Node = yamlfile.Node


def load_yaml(path: Path) -> _Node:
    """Parse ``path`` into nodes that remember their lines, within :mod:`suite.specs.yamlfile`'s
    limits; malformed YAML is a one-line error."""
    return yamlfile.read(path, "benchmark file", needs="an 'experiments' mapping")


# -- validation and expansion ----------------------------------------------------------------
class _Checker:
    def __init__(self, file: str, registry: Registry) -> None:
        self.file, self.registry = file, registry
        self.runs = 0  # the runs of the experiments expanded so far (bounded by limits.max_runs)

    def fail(self, node: _Node, message: str) -> BenchFileError:
        return BenchFileError(f"{self.file}:{node.line}: {node.path or 'top level'}: {message}")

    def mapping(self, node: _Node, allowed: tuple[str, ...] | None = None) -> dict[str, _Node]:
        if not isinstance(node.value, dict):
            raise self.fail(node, f"expected a mapping, got {_kind(node.value)}")
        if allowed is not None:
            for key, child in node.value.items():
                if key not in allowed:
                    match = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                    hint = f" (did you mean {match[0]!r}?)" if match else ""
                    raise self.fail(child, f"unknown key {key!r}{hint}; known keys: {', '.join(allowed)}")
        return node.value

    def values(self, node: _Node) -> list[Any]:
        """A scalar or a list of scalars, as a list."""
        items = node.value if isinstance(node.value, list) else [node]
        out = []
        for item in items:
            if isinstance(item.value, dict | list):
                raise self.fail(item, f"expected a value or a list of values, got {_kind(item.value)}")
            out.append(item.value)
        if not out:
            raise self.fail(node, "the list is empty")
        return out

    def integer(self, node: _Node, least: int = 1, what: str | None = None) -> int:
        """``node``'s value as an integer ≥ ``least`` (``what``: the message when it is not)."""
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise self.fail(node, what or f"expected an integer ≥ {least}, got {_kind(v)}")
        return v

    def component(self, family: str, name: Any, node: _Node):
        try:
            return self.registry.get(family, str(name))
        except SuiteError as exc:
            raise self.fail(node, str(exc)) from None

    def check_param(self, family: str, comp_names: list[str], param: str, node: _Node) -> None:
        for name in comp_names:
            comp = self.component(family, name, node)
            try:
                p = comp.param(param)
                for v in self.values(node):
                    p.coerce(v, owner=family)
            except SuiteError as exc:
                raise self.fail(node, str(exc)) from None


def load(path: str | Path, registry: Registry) -> Benchmark:
    """Read, validate and expand a benchmark file. Raises :class:`BenchFileError` (one line)."""
    path = Path(path)
    file = str(path)
    root = load_yaml(path)
    ck = _Checker(file, registry)
    top = ck.mapping(root, TOP_KEYS)
    if "experiments" not in top:
        raise ck.fail(root, "missing key 'experiments' (a mapping of named experiments)")
    name = top.get("name")
    if name is not None:
        check_experiment_name(ck, name)
    bench = Benchmark(
        path=path,
        name=str(name.value) if name is not None and name.value else path.stem,
        description=str(top["description"].value) if "description" in top else "",
    )
    defaults = ck.mapping(top["defaults"], EXPERIMENT_KEYS) if "defaults" in top else {}
    experiments = ck.mapping(top["experiments"])
    if not experiments:
        raise ck.fail(top["experiments"], "no experiments given")
    for exp_name, exp_node in experiments.items():
        body = ck.mapping(exp_node, EXPERIMENT_KEYS)
        merged = dict(defaults)
        if "epochs" in body or "steps" in body:
            merged.pop("epochs", None)
            merged.pop("steps", None)
        if "seed" in body or "seeds" in body or _ties_seed(body):
            merged.pop("seed", None)
            merged.pop("seeds", None)
        merged.update(body)
        if "params" in defaults and "params" in body:
            params = {**ck.mapping(defaults["params"]), **ck.mapping(body["params"])}
            merged["params"] = _Node(params, body["params"].line, body["params"].path)
        desc = merged.get("description")
        desc_text = str(desc.value) if desc is not None else ""
        if "tune" in body:
            if "tune" in defaults:
                raise ck.fail(defaults["tune"], "tune is given per experiment, not under defaults")
            tune = _tune_settings(ck, exp_node, merged)
            bench.sections.append(Section(exp_name, desc_text, [], exp_node.line, tune))
            continue
        if "tune" in defaults:
            raise ck.fail(defaults["tune"], "tune is given per experiment, not under defaults")
        specs = _expand_experiment(ck, exp_name, exp_node, merged)
        bench.sections.append(Section(exp_name, desc_text, specs, exp_node.line))
    return bench


def _ties_seed(body: dict[str, _Node]) -> bool:
    """Whether an experiment gives its seeds in a ``tie`` (they then replace the defaults' too)."""
    ties = body["tie"].value if "tie" in body else None
    return isinstance(ties, list) and any(isinstance(t.value, dict) and "seed" in t.value for t in ties)


def check_experiment_name(ck: _Checker, node: _Node) -> None:
    """The file's ``name`` (its MLflow experiment, and its report directory's name): plain text,
    not blank, without control characters, within MLflow's length limit
    (:func:`suite.stores.check_experiment_name`)."""
    v = node.value
    if v is None:
        return
    if isinstance(v, dict | list | bool):
        raise ck.fail(node, f"expected a name, got {_kind(v)}")
    text = str(v)
    try:
        check_name(text, "the name")
        check_name_length(text, "the name")
    except SuiteError as exc:
        raise ck.fail(node, str(exc)) from None


def _tune_settings(ck: _Checker, node: _Node, body: dict[str, _Node]) -> TuneSettings:
    """A tuned experiment's tune settings: components (names, or names with pinned single values),
    ``params`` pinned, batch sizes, ``seeds: K`` per trial, and the ``tune`` mapping."""
    tune = ck.mapping(body["tune"], TUNE_KEYS)
    for key in ("tie", "seed", "diverge_factor", "target"):
        if key in body:
            raise ck.fail(body[key], f"{key!r} has no meaning in a tuned experiment (one with 'tune'); remove it")
    choices: dict[str, tuple[str, ...]] = {}
    sets: dict[str, tuple[Any, _Node]] = {}

    def pin(family: str, param: str, names: list[str], where: _Node) -> None:
        """Pin ``family.param`` (of components ``names``) to ``where``'s single value."""
        if isinstance(where.value, list | dict):
            what = "split the experiment into one per value" if family == "problem" else "give a range under tune.space"
            raise ck.fail(where, f"a tuned experiment pins single values; Optuna searches the rest ({what})")
        ck.check_param(family, names, param, where)
        key, value = f"{family}.{param}", where.value
        if key in sets and sets[key][0] != value:
            raise ck.fail(where, f"{key} is pinned to {sets[key][0]!r} at line {sets[key][1].line} and to {value!r} "
                                 "here; a tuned experiment pins one value per key (split it into two experiments)")
        sets[key] = (value, where)

    for family in FAMILIES:
        if family not in body:
            continue
        fnode = body[family]
        if isinstance(fnode.value, dict):
            names = []
            for comp_name, sub in fnode.value.items():
                comp = ck.component(family, comp_name, sub)
                names.append(comp.name)
                for param, pnode in (ck.mapping(sub) if sub.value is not None else {}).items():
                    pin(family, param, [comp.name], pnode)
        else:
            names = [ck.component(family, n, fnode).name for n in ck.values(fnode)]
        choices[family] = tuple(names)
    for key, pnode in (ck.mapping(body["params"]).items() if "params" in body else ()):
        family, _, param = key.partition(".")
        if family not in FAMILIES or not param:
            raise ck.fail(pnode, f"malformed hyperparameter key {key!r}: write family.param, "
                                 f"family one of {', '.join(FAMILIES)}")
        pin(family, param, list(choices.get(family) or [_default_component(family)]), pnode)
    sizes = ck.values(body["batch_size"]) if "batch_size" in body else [32]
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes):
        raise ck.fail(body["batch_size"], f"batch sizes must be positive integers, got {sizes!r}")
    seeds = None
    if "seeds" in body:
        seeds = ck.integer(body["seeds"], what="in a tuned experiment seeds is K, the seeds each trial's value is "
                                                "averaged over (a positive integer)")
    kwargs: dict[str, Any] = {}
    for key in TUNE_INTS:
        if key in tune:
            kwargs[key] = ck.integer(tune[key], 0 if key in ("reevaluate", "study_seed") else 1)
    examples = {"objective": "steps-to-target:0.05", "budget": "steps:auto", "pruner": "median"}
    for key, example in examples.items():
        if key in tune:
            v = tune[key].value
            if not isinstance(v, str) or not v.strip():
                raise ck.fail(tune[key], f"expected text such as {example}, got {_kind(v)}")
            kwargs[key] = v.strip()
    if kwargs.get("pruner", "median") not in TUNE_PRUNERS:
        raise ck.fail(tune["pruner"], f"unknown pruner {kwargs['pruner']!r}; one of {', '.join(TUNE_PRUNERS)}")
    given_budget = [k for k in ("epochs", "steps") if k in body]
    if len(given_budget) == 2:
        raise ck.fail(node, "give exactly one budget: epochs: N or steps: N (here or under defaults), or tune.budget")
    if "budget" not in kwargs and given_budget:
        kwargs["budget"] = f"{given_budget[0]}:{ck.integer(body[given_budget[0]])}"
    spaces = []
    for key, snode in (ck.mapping(tune["space"]).items() if "space" in tune else ()):
        if key in sets:
            raise ck.fail(snode, f"{key} is pinned (line {sets[key][1].line}) and searched here: pin it or search it")
        if isinstance(snode.value, dict | list) or snode.value is None:
            raise ck.fail(snode, "expected a space such as log:0.001:1, uniform:0:1, int:1:8 or choice:a,b")
        spaces.append(f"{key}={snode.value}")
    if "eval_every" in body and "eval_every" not in kwargs:
        kwargs["eval_every"] = ck.integer(body["eval_every"])
    problems = choices.pop("problem", None) or (_default_component("problem"),)
    return TuneSettings(problems=tuple(problems), choices=tuple(choices.items()),
                        batch_sizes=tuple(dict.fromkeys(sizes)), sets=tuple(f"{k}={v}" for k, (v, _) in sets.items()),
                        spaces=tuple(spaces), seeds=seeds, **kwargs)


def _expand_experiment(ck: _Checker, name: str, node: _Node, body: dict[str, _Node]) -> list[RunSpec]:
    grid_axes: list[axes.Axis] = []
    scalars: dict[str, Any] = {}
    given: dict[str, _Node] = {}  # every key set by an axis, a component grid or a tie
    comp_names: dict[str, list[str]] = {}

    def claim(key: str, where: _Node) -> None:
        if key in given:
            first, second = sorted([given[key], where], key=lambda n: n.line)
            raise ck.fail(second, f"{key!r} is already given at line {first.line}; give each key in one place")
        given[key] = where

    for family in FAMILIES:
        if family not in body:
            continue
        fnode = body[family]
        claim(family, fnode)
        if isinstance(fnode.value, dict):
            points: axes.Axis = []
            names = []
            for comp_name, sub in fnode.value.items():
                comp = ck.component(family, comp_name, sub)
                names.append(comp.name)
                sub_axes = []
                if sub.value is not None:
                    for param, pnode in ck.mapping(sub).items():
                        ck.check_param(family, [comp.name], param, pnode)
                        sub_axes.append(axes.axis(f"{family}.{param}", ck.values(pnode)))
                try:
                    sub_points = axes.product(sub_axes)
                except SpecError as exc:
                    raise ck.fail(sub, str(exc)) from None
                points += [{family: comp.name, **pt} for pt in sub_points] or [{family: comp.name}]
            grid_axes.append(points)
        else:
            names = [ck.component(family, n, fnode).name for n in ck.values(fnode)]
            grid_axes.append(axes.axis(family, names))
        comp_names[family] = names

    def family_names(family: str) -> list[str]:
        return comp_names.get(family) or [_default_component(family)]

    if "params" in body:
        for key, pnode in ck.mapping(body["params"]).items():
            family, _, param = key.partition(".")
            if family not in FAMILIES or not param:
                raise ck.fail(pnode, f"malformed hyperparameter key {key!r}: write family.param, "
                                     f"family one of {', '.join(FAMILIES)}")
            claim(key, pnode)
            ck.check_param(family, family_names(family), param, pnode)
            grid_axes.append(axes.axis(key, ck.values(pnode)))

    if "tie" in body:
        tnode = body["tie"]
        ties = tnode.value if isinstance(tnode.value, list) else None
        if not ties:
            raise ck.fail(tnode, "expected a list of mappings, e.g. - {batch_size: [8, 64], optimizer.lr: [0.01, 0.1]}")
        for t in ties:
            tied = {}
            for key, knode in ck.mapping(t).items():
                if key in FAMILIES:
                    [ck.component(key, n, knode) for n in ck.values(knode)]
                elif key in TIE_SCALARS:
                    pass
                else:
                    family, _, param = key.partition(".")
                    if family not in FAMILIES or not param:
                        raise ck.fail(knode, f"cannot tie {key!r}: tie batch_size, seed, steps, eval_every, "
                                             "a family or family.param")
                    ck.check_param(family, family_names(family), param, knode)
                claim(key, knode)
                if not isinstance(knode.value, list):
                    raise ck.fail(knode, "a tied key needs a list of values")
                tied[key] = ck.values(knode)
            try:
                grid_axes.append(axes.tied_axis(tied))
            except SpecError as exc:
                raise ck.fail(t, str(exc).removeprefix("tie: ")) from None

    if "batch_size" in body:
        claim("batch_size", body["batch_size"])
        grid_axes.append(axes.axis("batch_size", ck.values(body["batch_size"])))
    if "seeds" in body and "seed" in body:
        raise ck.fail(body["seed"], "give seeds or seed, not both")
    if "seeds" in body:
        snode = body["seeds"]
        claim("seed", snode)
        try:
            seeds = (
                [axes._int(v, "seeds") for v in ck.values(snode)] if isinstance(snode.value, list)
                else axes.parse_seeds(str(snode.value))
            )
        except SpecError as exc:
            raise ck.fail(snode, str(exc)) from None
        grid_axes.append(axes.axis("seed", seeds))
    elif "seed" in body:
        claim("seed", body["seed"])
        scalars["seed"] = body["seed"].value

    if ("epochs" in body) == ("steps" in body):
        raise ck.fail(node, "give exactly one budget: epochs: N or steps: N (here or under defaults)")
    for key in ("epochs", "steps", "eval_every", "diverge_factor", "target"):
        if key in body:
            if isinstance(body[key].value, dict | list | bool) or body[key].value is None:
                raise ck.fail(body[key], f"expected a number, got {_kind(body[key].value)}")
            scalars[key] = body[key].value

    try:
        limits.check_runs(ck.runs + limits.product_size(grid_axes),
                          f"the file's experiments up to {name!r}" if ck.runs else "the experiment")
        specs = axes.expand(ck.registry, axes.product(grid_axes), scalars)
    except SuiteError as exc:
        raise ck.fail(node, str(exc)) from None
    ck.runs += len(specs)
    return specs


def _default_component(family: str) -> str:
    from suite.specs.spec import DEFAULT_COMPONENTS

    return DEFAULT_COMPONENTS[family]


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"

