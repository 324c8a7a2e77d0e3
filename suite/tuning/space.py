"""What a study compares and searches: variants (one component per family but the problem,
:class:`Variant`) and the search space of their tunable hyperparameters (:func:`search_space`,
``--space`` overrides, the problem's lr cap from :mod:`suite.tuning.caps`).

Imports: the registry and the parameter spaces, :mod:`suite.tuning.caps`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from suite.errors import SuiteError, TuneError
from suite.params import Space
from suite.registry import FAMILIES, Registry
from suite.tuning import caps

VARIANT_FAMILIES = ("optimizer", "scheduler", "averager", "sampler")
TUNED_FAMILIES = tuple(f for f in FAMILIES if f != "problem")  # the problem is fixed


@dataclass(frozen=True)
class Variant:
    """One combination of components compared across batch sizes."""

    optimizer: str
    scheduler: str
    averager: str
    sampler: str

    @property
    def name(self) -> str:
        return "-".join(getattr(self, f) for f in VARIANT_FAMILIES)

    def components(self, problem: str) -> dict[str, str]:
        return {"problem": problem, **{f: getattr(self, f) for f in VARIANT_FAMILIES}}


def variants(choices: Mapping[str, Sequence[str]]) -> list[Variant]:
    """The cross product of the component lists, in the order given."""
    lists = [list(dict.fromkeys(choices[f])) for f in VARIANT_FAMILIES]
    return [Variant(*combo) for combo in itertools.product(*lists)]


def parse_space_option(text: str) -> tuple[str, str]:
    """Split ``family.param=TRIAL_SPEC`` into its key and spec text, or raise a one-line TuneError."""
    key, eq, spec = text.partition("=")
    family, dot, param = key.strip().partition(".")
    if not eq or not dot or not param or not spec.strip():
        raise TuneError(
            f"malformed --space {text!r}: write family.param=log:LOW:HIGH|uniform:LOW:HIGH|int:LOW:HIGH|choice:a,b"
        )
    if family not in TUNED_FAMILIES:
        why = "the problem is fixed while tuning (use --set problem.x=V)" if family == "problem" else (
            f"unknown family {family!r}")
        raise TuneError(f"malformed --space {text!r}: {why}; tunable families: {', '.join(TUNED_FAMILIES)}")
    return f"{family}.{param.strip()}", spec.strip()


def search_space(
    registry: Registry,
    components: Mapping[str, str],
    fixed: Mapping[str, Any] = (),
    overrides: Mapping[str, str] = (),
) -> dict[str, Space]:
    """``family.param -> Space`` for every tunable hyperparameter of ``components``.

    A parameter is tuned when its registration declares a space (or ``overrides`` gives one)
    and ``fixed`` (``--set``) does not pin it. The problem's parameters are never tuned.
    ``overrides`` are ``--space`` texts; they keep the declared transform (1-β for momentum).
    A problem that declares an lr stability cap sets the top of a declared lr space
    (:mod:`suite.tuning.caps`).
    """
    fixed = dict(fixed)
    overrides = dict(overrides)
    space: dict[str, Space] = {}
    for family in TUNED_FAMILIES:
        comp = registry.get(family, components[family])
        for p in comp.params:
            key = f"{family}.{p.name}"
            if key in fixed:
                continue
            s = p.space
            if key in overrides:
                try:
                    s = Space.parse(overrides[key], like=p.space)
                    _check_space_values(s, p, key)
                except SuiteError as exc:
                    raise TuneError(f"malformed --space {key}={overrides[key]}: {exc}") from None
            if s is not None:
                space[key] = s
    return caps.capped(registry, components, fixed, space, overrides)  # the problem's lr stability cap


def _check_space_values(space: Space, param: Any, key: str) -> None:
    """Every value the space can produce must be valid for the parameter."""
    if space.kind == "choice":
        for c in space.choices:
            param.coerce(c, owner=key.partition(".")[0])
        return
    for end in (space.low, space.high):
        x = int(end) if space.kind == "int" else float(end)
        param.coerce(space.to_value(x), owner=key.partition(".")[0])


def check_space_overrides(registry: Registry, all_components: Iterable[Mapping[str, str]],
                          overrides: Mapping[str, str]) -> None:
    """Each ``--space`` key must name a hyperparameter of at least one chosen component."""
    all_components = list(all_components)
    for key in overrides:
        family, _, name = key.partition(".")
        comps = {c[family] for c in all_components}
        if not any(name in {p.name for p in registry.get(family, c).params} for c in comps):
            # let the registry produce its "did you mean" message for the first component
            try:
                registry.get(family, sorted(comps)[0]).param(name)
            except SuiteError as exc:
                raise TuneError(f"--space {key}: {exc}") from None
