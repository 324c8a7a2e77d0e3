"""RunSpec: the single, frozen description of one run. Its hash names the run everywhere."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import yaml

from suite.errors import SpecError
from suite.hookspecs import FAMILIES  # the families, in order (a dict: their docs)

if TYPE_CHECKING:
    from suite.registry import Registry

DEFAULT_COMPONENTS: dict[str, str] = {
    "problem": "linreg",
    "sampler": "shuffle",
    "optimizer": "sgd",
    "scheduler": "constant",
    "averager": "none",
}
DEFAULT_DIVERGE_FACTOR = 1e3
NO_SAMPLER = "none"  # the sampler of a problem registered with dataset=False (e.g. nqm): not applicable
MAX_BUDGET = 10**9  # epochs or steps: more is a typo, not a run
MAX_SEED = 2**32 - 1  # what every random generator (torch, numpy) accepts


@dataclass(frozen=True)
class RunSpec:
    """A fully resolved run: component names, every hyperparameter, budget and seed.

    ``params`` holds every hyperparameter of every component as sorted ``("family.param",
    value)`` pairs, defaults included, so two specs that run the same thing compare equal and
    hash the same. Exactly one of ``epochs`` and ``steps`` is set. ``eval_every`` is in steps;
    ``None`` means once per epoch. ``eval_growth`` g (optional) evaluates on a geometric schedule
    instead: step 0, then every max(1, ⌊g · last evaluated step⌋) steps (at most ``eval_every``
    apart when that is set), so any step is known to within a fraction g. A run whose validation
    loss grows past ``diverge_factor`` times its initial value (or becomes NaN/inf) stops as diverged.
    ``target`` (optional) is a loss to reach: the run then logs ``steps_to_target``, the first
    evaluated step at which it did (:mod:`suite.engine.target`); training is the same.
    """

    problem: str
    sampler: str
    optimizer: str
    scheduler: str
    averager: str
    batch_size: int
    seed: int
    epochs: int | None = None
    steps: int | None = None
    eval_every: int | None = None
    diverge_factor: float = DEFAULT_DIVERGE_FACTOR
    params: tuple[tuple[str, Any], ...] = field(default=())
    eval_growth: float | None = None
    target: float | None = None

    # -- identity -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # its values are plain: no deep copy
        d["params"] = dict(self.params)
        for key in ("eval_growth", "target"):
            if d[key] is None:  # absent, so the specs of before they were added keep their hash
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        d = dict(d)
        d["params"] = tuple(sorted(dict(d.get("params") or {}).items()))
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml_text(self.yaml_data())

    def yaml_data(self) -> dict[str, Any]:
        """What :meth:`to_yaml` writes (the run's ``spec.yaml``): the hash, then the spec."""
        return {"spec_hash": self.hash, **self.to_dict()}

    @functools.cached_property
    def hash(self) -> str:
        """A stable 16-hex-digit hash of the resolved spec (MLflow tag ``suite.spec_hash``;
        computed once: a grid asks each spec for it a few dozen times)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    # -- views ----------------------------------------------------------------------------
    def component(self, family: str) -> str:
        return getattr(self, family)

    def params_of(self, family: str) -> dict[str, Any]:
        prefix = family + "."
        return {k[len(prefix):]: v for k, v in self.params if k.startswith(prefix)}

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    @property
    def budget_text(self) -> str:
        return f"{self.epochs} epochs" if self.epochs is not None else f"{self.steps} steps"

    @property
    def name(self) -> str:
        """A short human-readable run name (not unique: the hash is)."""
        parts = [self.problem, self.optimizer, self.scheduler]
        if self.averager != "none":
            parts.append(self.averager)
        if self.sampler not in (DEFAULT_COMPONENTS["sampler"], NO_SAMPLER):
            parts.append(self.sampler)
        return "-".join(parts) + f"-b{self.batch_size}-s{self.seed}"

    def flat_params(self) -> dict[str, Any]:
        """What MLflow logs as params: components, budget, seed and every ``family.param``."""
        out: dict[str, Any] = {f: self.component(f) for f in FAMILIES}
        out["batch_size"] = self.batch_size
        if self.epochs is not None:
            out["epochs"] = self.epochs
        if self.steps is not None:
            out["steps"] = self.steps
        out["seed"] = self.seed
        out["eval_every"] = self.eval_every if self.eval_every is not None else "epoch"
        if self.eval_growth is not None:
            out["eval_growth"] = self.eval_growth
        if self.target is not None:
            out["target"] = self.target
        out["diverge_factor"] = self.diverge_factor
        out.update(dict(self.params))
        return out

    def with_seed(self, seed: int) -> RunSpec:
        return replace(self, seed=seed)


def parse_assignment(text: str) -> tuple[str, str, str]:
    """Split ``family.param=value`` into its three parts, or raise a one-line SpecError."""
    key, eq, value = text.partition("=")
    family, dot, param = key.strip().partition(".")
    if not eq or not dot or not family or not param or value.strip() == "":
        raise SpecError(
            f"malformed --set {text!r}: write family.param=value, e.g. --set scheduler.eta_min=0.001"
        )
    if family not in FAMILIES:
        raise SpecError(
            f"malformed --set {text!r}: unknown family {family!r}; families: {', '.join(FAMILIES)}"
        )
    return family, param.strip(), value.strip()


def _sampler_for(registry: Registry, problem: str, sampler: str) -> str:
    """A problem without a data set (registered ``dataset=False``) takes no sampler: its runs
    record sampler ``none``, and any sampler but the default is refused rather than ignored."""
    has_data = registry.get("problem", problem).extra.get("dataset", True) is not False
    if has_data and sampler == NO_SAMPLER:
        raise SpecError(f"sampler {NO_SAMPLER!r} is for problems without a data set (such as nqm); "
                        f"problem {problem!r} has one: choose a sampler (suite list sampler)")
    if not has_data and sampler not in (DEFAULT_COMPONENTS["sampler"], NO_SAMPLER):
        raise SpecError(f"sampler {sampler!r} does not apply to problem {problem!r}: it has no data set (the "
                        f"problem draws its own gradient noise); leave --sampler out (its runs record sampler "
                        f"{NO_SAMPLER!r})")
    return NO_SAMPLER if not has_data else sampler


def loss_target_ok(target: float) -> bool:
    """Whether ``target`` is a loss a run can be asked to reach (``suite run --target``,
    ``suite tune --objective steps-to-target:X``): finite and > 0 (a loss is never below 0)."""
    return math.isfinite(target) and target > 0


def resolve_spec(
    registry: Registry,
    *,
    components: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    batch_size: int,
    seed: int = 0,
    epochs: int | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
    diverge_factor: float = DEFAULT_DIVERGE_FACTOR,
    eval_growth: float | None = None,
    target: float | None = None,
) -> RunSpec:
    """Build a validated RunSpec from component names and ``family.param`` overrides.

    Checks names, hyperparameter values and the budget; does not look at the data (the
    batch size against the training-set size is checked by :func:`suite.engine.loop.preflight`).
    """
    comps = {**DEFAULT_COMPONENTS, **{k: v for k, v in (components or {}).items() if v is not None}}
    comps["sampler"] = _sampler_for(registry, comps["problem"], comps["sampler"])
    per_family: dict[str, dict[str, Any]] = {f: {} for f in FAMILIES}
    for key, value in (overrides or {}).items():
        family, _, param = key.partition(".")
        if family not in per_family or not param:
            raise SpecError(f"malformed hyperparameter key {key!r}: write family.param")
        per_family[family][param] = value
    params: dict[str, Any] = {}
    for family in FAMILIES:
        comp = registry.get(family, comps[family])
        for k, v in comp.resolve(per_family[family]).items():
            params[f"{family}.{k}"] = v
    if (epochs is None) == (steps is None):
        raise SpecError("give exactly one budget: --epochs N or --steps N")
    for label, value in (("epochs", epochs), ("steps", steps), ("eval-every", eval_every)):
        if value is not None and not 1 <= value <= MAX_BUDGET:
            raise SpecError(f"--{label}={value} is out of range: must be in [1, {MAX_BUDGET}]")
    if not 0 <= seed <= MAX_SEED:
        raise SpecError(f"--seed={seed} is out of range: must be in [0, {MAX_SEED}]")
    if batch_size < 1:
        raise SpecError(f"--batch-size={batch_size} is out of range: must be at least 1")
    if eval_growth is not None and not 0 < eval_growth < 1e6:
        raise SpecError(f"eval growth {eval_growth} is out of range: must be > 0")
    if target is not None and not loss_target_ok(target):
        raise SpecError(f"--target {target} is out of range: must be a finite number > 0 (a loss to reach)")
    if not 1 < diverge_factor < float("inf"):
        raise SpecError(f"--diverge-factor: diverge factor {diverge_factor} is out of range: must be > 1 and finite")
    return RunSpec(
        batch_size=int(batch_size),
        seed=int(seed),
        epochs=epochs,
        steps=steps,
        eval_every=eval_every,
        diverge_factor=float(diverge_factor),
        params=tuple(sorted(params.items())),
        eval_growth=None if eval_growth is None else float(eval_growth),
        target=None if target is None else float(target),
        **comps,
    )


def yaml_text(data: Mapping[str, Any]) -> str:
    """``data`` as a spec's YAML text, in its order (libyaml's dumper where PyYAML has it: the
    same text, 20x faster, and there is one per run)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(dict(data), Dumper=dumper, sort_keys=False)


def check_representable(spec: RunSpec, dtype: Any) -> None:
    """Refuse a hyperparameter (of the optimizer, scheduler, averager or sampler) that the dtype
    of the parameters it acts on cannot hold: past its largest value (``--lr 1e308`` on float32
    parameters), or a non-zero value that rounds to zero. ``dtype``: a ``torch.dtype``, whatever the
    built problem's parameters hold (float32 for the built-in problems). One line, :class:`SpecError`."""
    import torch

    if not dtype.is_floating_point:
        return
    info = torch.finfo(dtype)
    name = str(dtype).removeprefix("torch.")
    for key, value in spec.params:
        if key.startswith("problem.") or not isinstance(value, float) or not math.isfinite(value):
            continue
        if abs(value) > info.max:
            raise SpecError(f"{key}={value!r} is beyond {name} (largest {info.max:.4g}), the dtype of the parameters "
                            f"of problem {spec.problem!r}: give a value within it")
        if value != 0 and float(torch.tensor(value, dtype=dtype)) == 0:
            raise SpecError(f"{key}={value!r} rounds to 0 in {name} (smallest {info.tiny:.4g}), the dtype of the "
                            f"parameters of problem {spec.problem!r}: give a larger value")
