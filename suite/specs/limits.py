"""Limits that keep the work of any input bounded, each overridable by an environment variable.

- :data:`MAX_RUNS` (10,000; env ``SUITE_MAX_RUNS``): the runs one grid or benchmark file may
  expand to. The cross product is counted before any spec is built, so ``--lr``, ``--momentum``
  and ``--weight-decay`` with 1,000 values each are refused at once (``--dry-run`` included),
  not after memory runs out. Every distinct configuration is also built once to be checked
  before anything runs (:func:`suite.engine.loop.preflight`): a few milliseconds each, so the
  limit also bounds that check to a minute or two on a busy machine.
- The YAML files' limits: :mod:`suite.specs.yamlfile`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sized

from suite.errors import SpecError

MAX_RUNS = 10_000
MAX_RUNS_ENV = "SUITE_MAX_RUNS"


def env_limit(name: str, default: int) -> int:
    """The positive integer in environment variable ``name``, else ``default``; a malformed
    value is a one-line :class:`SpecError`."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip())
        if value < 1:
            raise ValueError
    except ValueError:
        raise SpecError(f"{name}={text!r} is malformed: give a positive integer (default {default})") from None
    return value


def max_runs() -> int:
    """The most runs one grid may expand to: :data:`MAX_RUNS`, or ``SUITE_MAX_RUNS``."""
    return env_limit(MAX_RUNS_ENV, MAX_RUNS)


def check_runs(count: int, where: str = "the grid") -> None:
    """Refuse ``count`` runs past :func:`max_runs` (one line: how many, the limit, what to do)."""
    limit = max_runs()
    if count > limit:
        raise SpecError(f"{where} expands to {count:,} runs, more than the limit of {limit:,}: use fewer values, "
                        f"or set {MAX_RUNS_ENV} to a larger number")


def product_size(axes: Iterable[Sized]) -> int:
    """How many points the cross product of ``axes`` has (an empty axis is skipped), without
    building them."""
    return math.prod(len(a) for a in axes if len(a))
