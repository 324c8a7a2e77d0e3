"""The kit's stacked check: stacks built as grids and tuning build them, each row compared with
its spec trained alone.

The checked component's rows differ in their hyperparameters and seeds: each hyperparameter
with a search space is drawn from it (a fixed seed per component, switchable spaces drawn
switched on), a numeric one without a space is its default in even rows and its default scaled
by :data:`UNSPACED_FACTOR` in odd rows (where that value is valid). A problem or sampler is shared
by every row of a stack, so its rows vary the built-in ``sgd``'s hyperparameters instead. Rows
whose run alone is unstable (:func:`suite.engine.exactness.loss_growth`) are outside the
exactness promise and left out, so the check is deterministic; at least :data:`ROWS` stable rows
are compared, in a stack of their own and mixed with a built-in partner's rows. The runs are the
kit's tiny ones (:func:`suite.conformance.tiny_spec`); a scheduler's run three epochs, so that
its schedule moves.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from suite.conformance import TINY_STEPS, metric_mismatch_advice, tiny_spec
from suite.engine.exactness import STACKED_REL_TOL, UNSTABLE_FACTOR, loss_growth
from suite.errors import StackCheckFailed, SuiteError
from suite.registry import Component, Registry, get_registry
from suite.specs.spec import RunSpec

ROWS = 4  # stable rows of the checked component in every stack
CANDIDATES = 10  # rows drawn at most to find them
PARTNER_ROWS = 2  # rows of the built-in partner in the mixed stack
UNSPACED_FACTOR = 0.5  # a hyperparameter without a space: its default times this, in odd rows
DRAW_SEED = 0
STEPS = {"scheduler": (24, 4)}  # (steps, eval every): a scheduler's rows train three epochs of the tiny problem
ABS_TOL = 1e-6
PARTNERS = {"optimizer": ("sgd", "precond"), "averager": ("none", "ema"), "scheduler": ("constant", "cosine")}
ENGINE_METRICS = ("lr", "epoch")  # logged by the engine from the spec: a broadcast does not change them
SHARED_FAMILIES = ("problem", "sampler")  # one per stack: its rows vary sgd's hyperparameters


@dataclass
class StackRow:
    """One row of a checked stack: its spec, its run alone, and the component whose
    hyperparameters it varies (``family``, ``name``)."""

    spec: RunSpec
    alone: Any
    family: str
    name: str

    def label(self) -> str:
        params = " ".join(f"{k}={_text(v)}" for k, v in self.spec.params_of(self.family).items())
        return f"{self.family} {self.name!r} {params} seed {self.spec.seed}".replace("  ", " ")


class _Draw:
    """An Optuna-like trial drawing from a seeded :class:`random.Random`, so that
    :meth:`suite.params.Space.suggest` draws exactly as tuning would (switchable spaces: on)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return True if name.endswith(".on") else self.rng.choice(list(choices))

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)


def drawn_params(comp: Component, count: int, seed: int = DRAW_SEED) -> list[dict[str, Any]]:
    """``count`` rows of hyperparameters of ``comp`` (``family.name`` keys), drawn as the module
    docstring says. A value a declared space yields that the parameter's range refuses raises
    :class:`StackCheckFailed`."""
    draw = _Draw(random.Random(f"{seed}:{comp.family}:{comp.name}"))
    rows = []
    for k in range(count):
        row = {}
        for p in comp.params:
            if p.space is not None:
                value = p.space.suggest(draw, p.name)
                try:
                    value = p.coerce(value, owner=comp.family)
                except SuiteError as exc:
                    raise StackCheckFailed(f"its search space {p.space.describe()} yields {exc}: keep the space inside "
                                      "the parameter's valid range") from None
            else:
                value = _scaled(p, k)
            row[f"{comp.family}.{p.name}"] = value
        rows.append(row)
    return rows


def _scaled(p: Any, k: int) -> Any:
    if k % 2 == 0 or p.default is None or isinstance(p.default, bool) or not isinstance(p.default, (int, float)):
        return p.default
    value = p.default * UNSPACED_FACTOR
    value = round(value) if isinstance(p.default, int) else value
    try:
        p.validate(value)
    except SuiteError:
        return p.default
    return value


def varied(comp: Component, registry: Registry) -> Component:
    """The component whose hyperparameters the checked rows vary: ``comp`` itself, or the
    built-in ``sgd`` for a problem or sampler (one per stack)."""
    return registry.get("optimizer", "sgd") if comp.family in SHARED_FAMILIES else comp


def partner(comp: Component, registry: Registry) -> Component:
    """The built-in whose rows the mixed stack adds: another component of the same family
    (optimizer, averager, scheduler), or the averager ``ema`` beside a problem's or sampler's
    rows (so the problem's metrics of averaged parameters are checked too)."""
    if comp.family in SHARED_FAMILIES:
        return registry.get("averager", "ema")
    first, second = PARTNERS[comp.family]
    return registry.get(comp.family, first if comp.name != first else second)


def stable_rows(comp: Component, vary: Component, want: int, train: Callable[[RunSpec], Any],
                partners: dict[str, str] | None = None, registry: Registry | None = None) -> list[StackRow]:
    """The first ``want`` drawn rows of ``vary`` (within the tiny run of ``comp``) whose runs alone
    are stable. Raises :class:`StackCheckFailed` where a run alone fails or too few are stable."""
    registry = registry or get_registry()
    rows: list[StackRow] = []
    left_out: list[str] = []
    steps, every = STEPS.get(comp.family, (TINY_STEPS, 2))
    for k, params in enumerate(drawn_params(vary, CANDIDATES)):
        spec = tiny_spec(comp, seed=k, registry=registry, partners={**(partners or {}), vary.family: vary.name},
                         params=params, steps=steps, eval_every=every)
        row = StackRow(spec, train(spec), vary.family, vary.name)
        if row.alone.status == "failed":
            raise StackCheckFailed(f"{row.label()}: a run alone failed ({row.alone.error}); every value of the "
                              "declared search spaces must train: fix the component or narrow its spaces")
        why = row.alone.reason if row.alone.status == "diverged" else loss_growth(row.alone.history)
        if why:
            left_out.append(f"{row.label()}: {why}")
            continue
        rows.append(row)
        if len(rows) == want:
            return rows
    raise StackCheckFailed(
        f"only {len(rows)} of {CANDIDATES} rows drawn from the search spaces train stably for {steps} steps "
        f"on the tiny problem (loss below {UNSTABLE_FACTOR:g}x its start), the check needs {want}: "
        f"{'; '.join(left_out[:3])}; narrow the search spaces toward values that train")


def mismatch(got: Any, ref: Any, ignore: Sequence[str] = ()) -> str | None:
    """Where a stacked row's result differs from its run alone (status, evaluated steps, logged
    metrics, or a value beyond the promise's tolerance; metrics ``ignore`` aside), or ``None``."""
    if got.status != ref.status:
        return f"ended {got.status} ({got.reason}), alone it ended {ref.status} ({ref.reason})"
    if [s for s, _ in got.history] != [s for s, _ in ref.history]:
        return "evaluated at other steps than alone"
    pairs = [(s, a, b) for (s, a), (_, b) in zip(got.history, ref.history, strict=True)]
    pairs.append((pairs[-1][0] if pairs else 0, got.final_metrics, ref.final_metrics))  # reported once, at the end
    for step, a, b in pairs:
        if a.keys() != b.keys():
            return f"logs {sorted(a)} at step {step}, alone {sorted(b)}; " + metric_mismatch_advice(set(a), set(b))
        for key, value in a.items():
            if key in ignore:
                continue
            if not (math.isclose(value, b[key], rel_tol=STACKED_REL_TOL, abs_tol=ABS_TOL)
                    or (math.isnan(value) and math.isnan(b[key]))):
                return (f"step {step}: {key} = {value!r} stacked vs {b[key]!r} alone (tolerance "
                        f"{STACKED_REL_TOL:g} relative)")
    return None


def broadcast(row: StackRow, got: Any, others: Sequence[StackRow], train: Callable[[RunSpec], Any]) -> str | None:
    """Whether stacked ``row`` trained with another row's values: a set of its hyperparameters
    (and its seed: its data, initialisation and noise) that, taken from one of ``others``, gives
    its stacked numbers alone (grown one key at a time, the key that brings the run alone
    nearest to the stacked one first); as a sentence, or ``None`` where no other row explains them.
    The ``lr`` metric is the engine's (the schedule's), not the adapter's: it is not compared."""
    own = row.spec.params_of(row.family)
    for other in others:
        theirs = other.spec.params_of(row.family)
        keys = [k for k in own if own[k] != theirs[k]] + (["seed"] if row.spec.seed != other.spec.seed else [])
        taken: list[str] = []
        best = distance(got, row.alone)
        while keys:
            tried = {k: distance(got, train(_as_if(row, other, [*taken, k]))) for k in keys}
            key = min(tried, key=tried.__getitem__)
            if not tried[key] < best:
                break
            taken.append(key)
            keys.remove(key)
            best = tried[key]
            if mismatch(got, train(_as_if(row, other, taken)), ignore=ENGINE_METRICS) is None:
                shown = ", ".join(("seed" if k == "seed" else f"{row.family}.{k}") + f"={_text(_value(other, k))} "
                                  f"instead of its own {_text(_value(row, k))}" for k in taken)
                return (f"it trains as if {shown} (the values of the row with {other.label()}): the adapter gives "
                        f"one row's {', '.join(taken)} to every row; read each row's own values, from "
                        "stack.hyper(family, name) (a K-vector over the rows it serves) or from each row's own "
                        "object, and each row's data and noise from its own ctx.generator")
    return None


def distance(got: Any, ref: Any) -> float:
    """How far a stacked row's evaluations lie from a run alone: the sum of the relative
    differences of every metric both log at every evaluation (infinite at other steps)."""
    if [s for s, _ in got.history] != [s for s, _ in ref.history]:
        return math.inf
    total = 0.0
    for (_, a), (_, b) in zip(got.history, ref.history, strict=True):
        for key in a.keys() & b.keys() - set(ENGINE_METRICS):
            diff = abs(a[key] - b[key]) / (abs(b[key]) + ABS_TOL)
            total += diff if math.isfinite(diff) else 1.0
    return total


def _value(row: StackRow, key: str) -> Any:
    return row.spec.seed if key == "seed" else row.spec.params_of(row.family)[key]


def _as_if(row: StackRow, other: StackRow, keys: Sequence[str]) -> RunSpec:
    spec = row.spec.with_seed(other.spec.seed) if "seed" in keys else row.spec
    params = dict(spec.params)
    params.update({f"{row.family}.{k}": _value(other, k) for k in keys if k != "seed"})
    return replace(spec, params=tuple(sorted(params.items())))


def _text(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
