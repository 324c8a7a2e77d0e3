"""Grids: expand axes of values into a list of RunSpecs (the cross product, with ties).

A grid is a list of *axes*. Each axis is a list of *points*; a point is a dict of assignments
(``"optimizer": "sgd"``, ``"optimizer.lr": 0.1``, ``"batch_size": 64``, ``"seed": 0``,
``"epochs": 5``, ...). The grid is the cross product of its axes: one merged point per
combination. This one model covers every way of writing a grid:

- a plain axis ``--lr 0.01,0.1`` is ``[{"optimizer.lr": 0.01}, {"optimizer.lr": 0.1}]``;
- a tied axis (values that move together, e.g. lr tied to batch size) is
  ``[{"batch_size": 8, "optimizer.lr": 0.01}, {"batch_size": 64, "optimizer.lr": 0.08}]``;
- a per-component grid (momentum only crossed with sgd) is a component axis whose points carry
  their own sub-grid: ``[{"optimizer": "sgd", "optimizer.momentum": 0}, {"optimizer": "sgd",
  "optimizer.momentum": 0.9}, {"optimizer": "adam"}]``.

Every merged point is resolved through :func:`suite.specs.spec.resolve_spec`, so every name and value
is validated before anything runs; specs that resolve identically are kept once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from suite.errors import SpecError
from suite.params import to_number
from suite.registry import FAMILIES, Registry
from suite.specs import limits
from suite.specs.spec import DEFAULT_DIVERGE_FACTOR, RunSpec, resolve_spec

Point = dict[str, Any]
Axis = list[Point]
MAX_SEEDS = 100_000
SCALAR_KEYS = ("batch_size", "seed", "epochs", "steps", "eval_every", "diverge_factor", "target")


def split_list(text: str | None) -> list[str]:
    """``"0.01, 0.1"`` -> ``["0.01", "0.1"]``; ``None`` -> ``[]``. Empty items are an error."""
    if text is None:
        return []
    items = [t.strip() for t in str(text).split(",")]
    if any(not t for t in items):
        raise SpecError(f"malformed list {text!r}: write comma-separated values such as 0.01,0.1")
    return items


def parse_seeds(text: str | None) -> list[int]:
    """``--seeds K`` -> ``0..K-1``; ``--seeds A-B`` -> ``A..B`` (inclusive); ``"1,5,9"`` -> a list."""
    if text is None:
        return []
    t = str(text).strip()
    try:
        if "," in t:
            seeds = [to_number(s, int) for s in split_list(t)]
        elif "-" in t[1:]:
            a, b = (to_number(x.strip(), int) for x in t.split("-", 1))
            if not a <= b or b - a >= MAX_SEEDS:
                raise ValueError
            seeds = list(range(a, b + 1))
        else:
            k = to_number(t, int)
            if not 1 <= k <= MAX_SEEDS:
                raise ValueError
            seeds = list(range(k))
    except ValueError:
        raise SpecError(
            f"--seeds {text!r} is malformed: write K (seeds 0..K-1), A-B (a range, A <= B) or a list 1,5,9, "
            f"at most {MAX_SEEDS} seeds"
        ) from None
    if any(s < 0 for s in seeds):
        raise SpecError(f"--seeds {text!r}: seeds must be non-negative")
    return seeds


def axis(key: str, values: Iterable[Any]) -> Axis:
    """A plain axis: one point per value of ``key``."""
    return [{key: v} for v in values]


def tied_axis(values: Mapping[str, Sequence[Any]], *, where: str = "tie") -> Axis:
    """Values that move together: the i-th point takes the i-th value of every key."""
    lengths = {k: len(v) for k, v in values.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise SpecError(f"{where}: tied lists must have the same length ({detail})")
    n = next(iter(lengths.values()), 0)
    return [{k: v[i] for k, v in values.items()} for i in range(n)]


def product(axes: Sequence[Axis]) -> list[Point]:
    """The cross product of axes: one merged point per combination (an empty axis is skipped).
    Counted first: past :func:`suite.specs.limits.max_runs` points it is refused before any is built."""
    limits.check_runs(limits.product_size(axes))
    merged = []
    for combo in itertools.product(*[a for a in axes if a]):
        point: Point = {}
        for part in combo:
            point.update(part)
        merged.append(point)
    return merged


def expand(registry: Registry, points: Iterable[Point], defaults: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """Resolve each point (over ``defaults``) into a validated RunSpec, keeping the first of
    identical specs. Keys: the five family names, ``family.param`` hyperparameters and
    :data:`SCALAR_KEYS`."""
    specs: dict[str, RunSpec] = {}
    for point in points:
        spec = point_to_spec(registry, {**(defaults or {}), **point})
        specs.setdefault(spec.hash, spec)
    return list(specs.values())


def point_to_spec(registry: Registry, point: Mapping[str, Any]) -> RunSpec:
    """One merged point -> RunSpec (see :func:`expand` for the keys)."""
    components = {f: point[f] for f in FAMILIES if f in point}
    overrides = {k: v for k, v in point.items() if "." in k}
    unknown = [k for k in point if k not in FAMILIES and k not in SCALAR_KEYS and "." not in k]
    if unknown:
        raise SpecError(f"unknown grid key {unknown[0]!r}")
    epochs, steps = point.get("epochs"), point.get("steps")
    return resolve_spec(
        registry,
        components=components,
        overrides=overrides,
        batch_size=_int(point.get("batch_size", 32), "batch-size"),
        seed=_int(point.get("seed", 0), "seed"),
        epochs=None if epochs is None else _int(epochs, "epochs"),
        steps=None if steps is None else _int(steps, "steps"),
        eval_every=None if point.get("eval_every") is None else _int(point["eval_every"], "eval-every"),
        diverge_factor=_float(point.get("diverge_factor", DEFAULT_DIVERGE_FACTOR), "diverge-factor"),
        target=None if point.get("target") is None else _float(point["target"], "target"),
    )


def _int(value: Any, label: str) -> int:
    if isinstance(value, bool):
        raise SpecError(f"--{label}={value!r} is malformed: expected an integer")
    try:
        f = to_number(value.strip()) if isinstance(value, str) else float(value)
        if f != int(f):
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"--{label}={value!r} is malformed: expected an integer") from None


def _float(value: Any, label: str) -> float:
    try:
        return to_number(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise SpecError(f"--{label}={value!r} is malformed: expected a number") from None


def config_key(spec: RunSpec) -> str:
    """What seeds of one configuration share: the hash of the spec with seed 0."""
    return spec.with_seed(0).hash


def varying_keys(specs: Iterable[RunSpec], *, skip: Sequence[str] = ("seed",)) -> list[str]:
    """The ``flat_params`` keys whose value differs between ``specs`` (see :func:`varying_in`)."""
    return varying_in([s.flat_params() for s in specs], skip=skip)


def varying_in(params: Sequence[Mapping[str, Any]], *, skip: Sequence[str] = ()) -> list[str]:
    """The keys whose value differs between the ``params`` mappings, in first-seen order. A
    hyperparameter that only some components have counts only where it differs between the
    mappings that have it (the component name already tells the others apart)."""
    keys = list(dict.fromkeys(k for f in params for k in f if k not in skip))
    return [k for k in keys if len({repr(f[k]) for f in params if k in f}) > 1]
