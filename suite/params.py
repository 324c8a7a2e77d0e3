"""Hyperparameters of components: their defaults, valid ranges and tuning spaces."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from suite.errors import ParamError

SpaceKind = Literal["log", "uniform", "int", "choice"]


@dataclass(frozen=True)
class Space:
    """Where tuning searches a hyperparameter.

    ``kind`` is one of ``log`` (log-uniform float), ``uniform``, ``int`` or ``choice``.
    ``transform="one_minus"`` searches ``1 - value`` instead of the value (momentum is tuned
    through 1-β on a log scale). ``off`` is a value that tuning may pick instead of searching
    the range at all (weight decay can be switched off with ``off=0.0``).
    """

    kind: SpaceKind
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    transform: Literal["identity", "one_minus"] = "identity"
    off: Any = None

    @classmethod
    def log(cls, low: float, high: float, **kw: Any) -> Space:
        return cls("log", float(low), float(high), **kw)

    @classmethod
    def uniform(cls, low: float, high: float, **kw: Any) -> Space:
        return cls("uniform", float(low), float(high), **kw)

    @classmethod
    def int(cls, low: int, high: int, **kw: Any) -> Space:
        return cls("int", low, high, **kw)

    @classmethod
    def choice(cls, *choices: Any, **kw: Any) -> Space:
        return cls("choice", choices=tuple(choices), **kw)

    def __post_init__(self) -> None:
        if self.kind == "choice":
            if not self.choices:
                raise ParamError("a choice space needs at least one choice")
            return
        if self.kind not in ("log", "uniform", "int"):
            raise ParamError(f"unknown space kind {self.kind!r}: use log, uniform, int or choice")
        if any(b is not None and not math.isfinite(b) for b in (self.low, self.high)):
            raise ParamError(f"a {self.kind} space needs finite bounds, got {self.low}:{self.high}")
        if self.low is None or self.high is None or not self.low < self.high:
            article = "an" if self.kind == "int" else "a"
            raise ParamError(f"{article} {self.kind} space needs LOW < HIGH, got {self.low}:{self.high}")
        if self.kind == "log" and self.low <= 0:
            raise ParamError(f"a log space needs LOW > 0, got {self.low}")

    @classmethod
    def parse(cls, text: str, *, like: Space | None = None) -> Space:
        """Parse ``log:LOW:HIGH``, ``uniform:LOW:HIGH``, ``int:LOW:HIGH`` or ``choice:a,b``.

        ``like`` carries the declared space's ``transform`` over, so ``--space
        optimizer.momentum=log:0.01:0.5`` keeps searching 1-β.
        """
        kind, _, rest = text.partition(":")
        transform = like.transform if like is not None else "identity"
        try:
            if kind == "choice":
                if not rest:
                    raise ValueError
                return cls("choice", choices=tuple(_parse_scalar(c) for c in rest.split(",")))
            low, high = rest.split(":")
            if kind == "int":
                return cls("int", to_number(low, int), to_number(high, int), transform=transform)
            if kind in ("log", "uniform"):
                return cls(kind, to_number(low), to_number(high), transform=transform)  # type: ignore[arg-type]
        except ParamError:
            raise
        except ValueError:
            pass
        raise ParamError(
            f"malformed space {text!r}: use log:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or choice:a,b"
        )

    def to_value(self, x: Any) -> Any:
        """Map a point of the search space to the hyperparameter's value."""
        return 1.0 - x if self.transform == "one_minus" else x

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask an Optuna trial for a value of hyperparameter ``name`` in this space."""
        if self.off is not None:
            if not trial.suggest_categorical(f"{name}.on", [True, False]):
                return self.off
        key = f"{name}.one_minus" if self.transform == "one_minus" else name
        if self.kind == "choice":
            return trial.suggest_categorical(key, list(self.choices))
        if self.kind == "int":
            return self.to_value(trial.suggest_int(key, int(self.low), int(self.high)))
        return self.to_value(
            trial.suggest_float(key, float(self.low), float(self.high), log=self.kind == "log")
        )

    def contains(self, value: Any) -> bool:
        """Whether ``value`` can be produced by this space (used to check defaults)."""
        if value is None or (self.off is not None and value == self.off):
            return True
        if self.kind == "choice":
            return value in self.choices
        x = 1.0 - value if self.transform == "one_minus" else value
        return self.low - 1e-12 <= x <= self.high + 1e-12

    def describe(self) -> str:
        if self.kind == "choice":
            text = "choice{" + ",".join(map(str, self.choices)) + "}"
        else:
            text = f"{self.kind}[{self.low:g}, {self.high:g}]"
        if self.transform == "one_minus":
            text = f"1-x in {text}"
        if self.off is not None:
            text += f" or off={self.off}"
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Space:
        """The inverse of :meth:`to_dict`."""
        return cls(d["kind"], d.get("low"), d.get("high"), tuple(d.get("choices", ())),
                   d.get("transform", "identity"), d.get("off"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "choice":
            d["choices"] = list(self.choices)
        else:
            d["low"], d["high"] = self.low, self.high
        if self.transform != "identity":
            d["transform"] = self.transform
        if self.off is not None:
            d["off"] = self.off
        return d


def to_number(text: str, kind: type = float) -> Any:
    """``kind(text)`` (``int`` or ``float``) for a number as people write it: Python's own
    conversions also accept ``1_0`` (as 10) and digits of other scripts (``١٠``), which are
    refused here (``ValueError``), as any other malformed number."""
    if not text.isascii() or "_" in text:
        raise ValueError(f"{text!r} is not a plain number")
    return kind(text)


def _parse_scalar(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return to_number(t, conv)
        except ValueError:
            pass
    return t


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a component.

    ``type`` is inferred from ``default`` unless given (give it when the default is ``None``,
    e.g. a cosine schedule's ``T_max`` that defaults to the run's length). ``low``/``high``
    bound valid values (inclusive unless ``low_inclusive``/``high_inclusive`` say otherwise);
    ``choices`` restricts to a set; ``space`` is where tuning searches, or ``None`` if the
    parameter is not worth tuning.
    """

    name: str
    default: Any
    help: str = ""
    type: type | None = None
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[Any, ...] = ()
    space: Space | None = None
    nullable: bool = field(default=False)

    def __post_init__(self) -> None:
        if self.type is None:
            if self.default is None:
                raise ParamError(f"param {self.name!r}: give type= when the default is None")
            object.__setattr__(self, "type", type(self.default))
        if self.default is None:
            object.__setattr__(self, "nullable", True)
        # a default outside the range is refused where the component registers (the registry names it)

    @property
    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is None and self.high is None:
            return "any " + self.type.__name__
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "[" if self.low is not None and self.low_inclusive else "("
        right = "]" if self.high is not None and self.high_inclusive else ")"
        return f"{left}{lo}, {hi}{right}"

    def coerce(self, raw: Any, *, owner: str = "") -> Any:
        """Turn ``raw`` (a string from the command line or YAML, or a value) into a valid value.

        Raises :class:`ParamError` with a one-line message naming ``owner.name``.
        """
        label = f"{owner}.{self.name}" if owner else self.name
        value = _parse_scalar(raw) if isinstance(raw, str) else raw
        if value is None:
            if self.nullable:
                return None
            raise ParamError(f"{label} cannot be none")
        try:
            if self.type is bool:
                if not isinstance(value, bool):
                    raise ValueError
            elif self.type in (int, float) and isinstance(value, str):  # _parse_scalar found no number in it
                raise ValueError
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
            elif self.type is str:
                value = str(value)
        except (TypeError, ValueError):
            raise ParamError(
                f"{label}={raw!r} is not a valid {self.type.__name__}"
            ) from None
        self.validate(value, label=label)
        return value

    def validate(self, value: Any, *, label: str | None = None) -> None:
        label = label or self.name
        if self.choices and value not in self.choices:
            raise ParamError(f"{label}={value!r} is not allowed: must be {self.range_text}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                raise ParamError(f"{label} is NaN")
            if isinstance(value, float) and math.isinf(value):
                raise ParamError(f"{label}={value!r} is not finite: give a finite number")
            bad = (
                (self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)))
                or (self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)))
            )
            if bad:
                raise ParamError(f"{label}={value!r} is out of range: must be in {self.range_text}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.default,
            "type": self.type.__name__,
            "range": self.range_text,
            "space": self.space.to_dict() if self.space else None,
            "help": self.help,
        }


DATA_SEED = Param(
    "data_seed", None, "seed of the data set (none: the run seed, so the data follows --seed)", type=int, low=0,
)
"""The problem hyperparameter ``problem.data_seed``: a problem that declares it draws its data set
from it when set, so runs with different seeds share one data set (paired comparisons)."""
