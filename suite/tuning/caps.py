"""The lr search space a problem's stability cap calls for.

A problem may declare the largest stable learning rate of an optimizer configuration with its
registration: ``register(..., lr_cap=fn)``, ``fn(problem_params, optimizer_name,
optimizer_params) -> float | None`` (None: not known for that optimizer; the NQM's is
:func:`suite.builtin.stability.nqm_lr_cap`). The optimum can lie just below the cap, so the
declared lr space's top becomes :data:`CAP_FACTOR` × the cap: a winner just below the cap is
then not at the space's edge (:mod:`suite.tuning.edges`), and the trials above it diverge. The
lower end stays (unless it is not below the new top: then it moves to :data:`SPAN` below it).
An lr that ``--set`` pins or ``--space`` gives is left alone.

Where other optimizer hyperparameters are tuned too (momentum with the lr), the cap is taken at
each end of their spaces (and their ``off`` value) and the largest one counts, so the space
reaches the optimum of every configuration the study can try.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from suite.errors import TuneError
from suite.params import Space

LR = "optimizer.lr"
CAP_FACTOR = 2.0
SPAN = 1e4  # a lower end moved down sits this factor below the top


def _corners(space: Space) -> list[Any]:
    """The values a space's ends (and its ``off``) give the hyperparameter."""
    ends = list(space.choices) if space.kind == "choice" else [space.to_value(space.low), space.to_value(space.high)]
    return ends + ([space.off] if space.off is not None else [])


def lr_cap(registry: Any, components: Mapping[str, str], fixed: Mapping[str, Any],
           space: Mapping[str, Space]) -> float | None:
    """The problem's declared lr cap for the study's optimizer (None where it declares none):
    the hyperparameters ``fixed`` pins, the defaults otherwise, and the largest cap over the ends
    of the other tuned optimizer hyperparameters' ``space``."""
    problem = registry.get("problem", components["problem"])
    declared = problem.extra.get("lr_cap")
    if declared is None:
        return None
    optimizer = registry.get("optimizer", components["optimizer"])
    problem_params = problem.resolve({k.partition(".")[2]: v for k, v in fixed.items() if k.startswith("problem.")})
    base = optimizer.resolve({k.partition(".")[2]: v for k, v in fixed.items() if k.startswith("optimizer.")})
    tuned = {k.partition(".")[2]: _corners(s) for k, s in space.items() if k.startswith("optimizer.") and k != LR}
    caps = []
    for combo in itertools.product(*tuned.values()):
        try:
            cap = declared(problem_params, optimizer.name, {**base, **dict(zip(tuned, combo, strict=True))})
        except Exception as exc:  # a plugin's declaration: name it, in one line
            raise TuneError(f"problem {problem.name!r} from {problem.distribution}: its lr_cap failed for optimizer "
                            f"{optimizer.name!r} ({type(exc).__name__}: {exc}); fix the plugin, or give "
                            f"--space {LR}=log:LOW:HIGH") from None
        if cap is not None and math.isfinite(cap) and cap > 0:
            caps.append(float(cap))
    return max(caps) if caps else None


def capped(registry: Any, components: Mapping[str, str], fixed: Mapping[str, Any], space: dict[str, Space],
           overrides: Mapping[str, str]) -> dict[str, Space]:
    """``space`` with the declared log lr space's top at :data:`CAP_FACTOR` × the problem's cap
    (:func:`lr_cap`); unchanged where the lr is not tuned, ``--space`` gives it, the space is
    not a log space, or the problem declares no cap."""
    lr = space.get(LR)
    if lr is None or LR in overrides or lr.kind != "log":
        return space
    cap = lr_cap(registry, components, fixed, space)
    if cap is None:
        return space
    high = CAP_FACTOR * cap
    low = lr.low if lr.low < high else high / SPAN
    return {**space, LR: Space("log", low, high, transform=lr.transform, off=lr.off)}
