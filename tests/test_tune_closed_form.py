"""The closed-form optimum the tuner is checked against (suite.theory.best_steps_to_target)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from suite import theory as T

H32 = 1 / np.arange(1, 33)


def test_steps_to_target_by_hand():
    # one dimension, h = c = B = 1, s0 = 1, α = 0.5: risk 0.5, 0.25, 0.1875, ... → 1/6
    assert T.steps_to_target([0.5], [1.0], [1.0], 1, 0.2)[0] == 2
    assert T.steps_to_target([0.5], [1.0], [1.0], 1, 0.5)[0] == 0
    assert T.steps_to_target([0.5], [1.0], [1.0], 1, 0.16)[0] == math.inf  # below the steady state 1/6
    assert T.steps_to_target([2.5], [1.0], [1.0], 1, 0.2)[0] == math.inf  # unstable
    # the precond closed form is the SGD one at p = 0, and the exact recursion at any p
    s0 = np.linspace(0.5, 2, 32)
    assert T.precond_risk(0.3, 0.0, H32, H32, 4, s0, 17) == pytest.approx(T.sgd_risk(0.3, H32, H32, 4, s0, 17))
    tracker = T.MomentTracker(H32, H32, 4, np.sqrt(s0), scale=H32**-0.5)
    for _ in range(17):
        tracker.step(0.3)
    assert tracker.risk() == pytest.approx(T.precond_risk(0.3, 0.5, H32, H32, 4, s0, 17).sum())


def test_steps_to_target_is_the_first_step_below_the_target():
    lrs = np.array([0.05, 0.14, 0.6, 1.9])
    steps = T.steps_to_target(lrs, H32, H32, 16, 0.05)
    for lr, t in zip(lrs, steps, strict=True):
        traj = T.sgd_risk_trajectory([lr] * 3000, H32, H32, 16, 1.0)
        below = np.flatnonzero(traj <= 0.05)
        assert t == (below[0] if len(below) else math.inf)


@pytest.mark.parametrize("p, expected", [(0.0, [281, 77, 28, 17, 14]), (0.5, [142, 37, 10, 4, 4])])
def test_best_steps_at_dim_32_are_the_issues_optima(p, expected):
    """The targets of issue 13 (nqm, problem.dim=32, target 0.05), from nqm.md's closed form."""
    got = [T.best_steps_to_target(H32, H32, b, 0.05, p=p)[0] for b in (4, 16, 64, 256, 1024)]
    assert got == expected


def test_best_steps_reproduce_the_papers_plateaus():
    """nqm.md: d = 10⁴, target 0.01: p = 0 plateaus near 7.3·10³ steps, p = ½ near 84; 1.5·10⁶ at B = 4.

    The exact p = 0 plateau is 6705 steps, 8% below nqm.md's figure: its best lr, 1.995, lies within
    0.3% of the stability cap 2, where a coarse lr grid (the one that gave 7.1·10³ here before) misses it."""
    h = 1 / np.arange(1, 10**4 + 1)
    steps, lr = T.best_steps_to_target(h, h, 2**21, 0.01)
    assert steps == 6705 and 1.99 < lr < 2
    assert T.sgd_risk(lr, h, h, 2**21, 1.0, 6704).sum() > 0.01 >= T.sgd_risk(lr, h, h, 2**21, 1.0, 6705).sum()
    fine = np.linspace(1.98, 2, 200, endpoint=False)  # nothing on a fine grid near the cap does better
    assert T.steps_to_target(fine, h, h, 2**21, 0.01).min() == 6705
    assert T.best_steps_to_target(h, h, 2**21, 0.01, p=0.5)[0] == pytest.approx(84, rel=0.05)
    assert T.best_steps_to_target(h, h, 4, 0.01)[0] == pytest.approx(1.5e6, rel=0.1)
