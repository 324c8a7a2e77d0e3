"""Run names that tell runs apart within their grid: the components, the hyperparameters that
vary in the grid in short form, the batch size and the seed, e.g. ``nqm sgd lr=0.5 β=0.9 b4 s0``.

The hash stays a run's identity; the name is for people reading MLflow's runs table.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from suite.specs.spec import DEFAULT_COMPONENTS, RunSpec

# The lecture's symbols for the optimizer's hyperparameters (α is written lr: everyone reads it).
SYMBOLS = {"optimizer.lr": "lr", "optimizer.momentum": "β", "optimizer.weight_decay": "λ"}
NO_SAMPLER = "none"
# Components shown only when they are not the default (or when they vary in the grid).
QUIET_DEFAULTS = {"scheduler": "constant", "averager": "none", "sampler": DEFAULT_COMPONENTS["sampler"]}
SHOWN_ELSEWHERE = ("batch_size", "seed", "problem", "optimizer", "scheduler", "averager", "sampler")
MAX_FILE_NAME = 100  # characters of a name made from a name (a file system allows 255 bytes)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_name(name: str) -> str:
    """``name`` (an experiment, a section, a figure's title) as one path component that stays
    where it is put: every run of characters other than ASCII letters, digits, ``_ . -`` becomes
    ``_`` (so no ``/``, NUL or blank), leading dots are dropped (no ``.``, ``..`` or hidden file),
    and a name longer than :data:`MAX_FILE_NAME` keeps its start and a hash of the whole.
    ``/tmp/x`` -> ``_tmp_x``; ``../../x`` -> ``_.._x``; ``loss curves b32`` -> ``loss_curves_b32``.
    The one rule for report directories, figure files and artifact paths."""
    safe = _UNSAFE.sub("_", name).lstrip(".") or "_"
    if len(safe) > MAX_FILE_NAME:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[: MAX_FILE_NAME - 9]}-{digest}"
    return safe


def value_text(value: Any, digits: int = 4) -> str:
    """A value as short as it reads, in ``digits`` significant digits: ``0.5``, ``1e-04``, ``64``;
    a value within 1% of ±1 (a momentum, β₂, a decay) keeps ``digits`` significant digits of its
    distance from 1 (``0.99985``, not ``0.9998``). Run names use 4 digits, tuning's tables 3."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or value == 0:
        return str(int(value))
    gap = 1 - abs(value)
    if 0 < gap < 0.01:
        return f"{value:.{digits - 1 - math.floor(math.log10(gap))}f}".rstrip("0")
    return f"{value:.{digits}g}"


def _labels(keys: Sequence[str]) -> dict[str, str]:
    """Short labels for hyperparameter keys: a symbol, else the parameter's own name, else
    ``family.param`` where two families share the parameter's name."""
    short = {k: SYMBOLS.get(k, k.rpartition(".")[2]) for k in keys}
    counts: dict[str, int] = {}
    for label in short.values():
        counts[label] = counts.get(label, 0) + 1
    return {k: (label if counts[label] == 1 else k) for k, label in short.items()}


def config_label(spec: RunSpec, varying: Iterable[str] = ()) -> str:
    """The configuration without its seed: ``nqm sgd lr=0.5 β=0.9 b4``."""
    varying = list(varying)
    parts = [spec.problem, spec.optimizer]
    for family in ("scheduler", "averager", "sampler"):
        name = spec.component(family)
        if family == "sampler" and name == NO_SAMPLER:
            continue  # a problem without a data set (nqm) takes no sampler
        if name != QUIET_DEFAULTS[family] or family in varying:
            parts.append(name)
    flat = spec.flat_params()
    keys = [k for k in varying if k not in SHOWN_ELSEWHERE and k in flat]
    labels = _labels(keys)
    parts += [f"{labels[k]}={value_text(flat[k])}" for k in keys]
    parts.append(f"b{spec.batch_size}")
    return " ".join(parts)


def run_name(spec: RunSpec, varying: Iterable[str] = ()) -> str:
    """The run's name in MLflow: :func:`config_label` and the seed, ``nqm sgd lr=0.5 β=0.9 b4 s0``."""
    return f"{config_label(spec, varying)} s{spec.seed}"


def config_tag(spec: RunSpec, varying: Iterable[str] = ()) -> str:
    """The ``suite.config`` tag: the configuration's label and the hash it shares with its other
    seeds, so runs of other grids that only look alike do not fall into one group."""
    return f"{config_label(spec, varying)} #{spec.with_seed(0).hash[:6]}"
