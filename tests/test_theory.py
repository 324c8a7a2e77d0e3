"""suite.theory: closed forms on hand-computed cases, and against real NQM runs of the engine."""

from __future__ import annotations

import numpy as np
import pytest

from suite import theory as T
from suite.engine.loop import build, train
from tests.builtin_helpers import spec_of

# -- closed forms ---------------------------------------------------------------------------


def test_sgd_recursion_by_hand():
    # h = c = B = 1, α = 0.5, s₀ = 1: s₁ = 0.25·1 + 0.25 = 0.5, s₂ = 0.25·0.5 + 0.25 = 0.375
    traj = T.sgd_risk_trajectory([0.5, 0.5], 1.0 * np.ones(1), np.ones(1), 1, 1.0)
    assert traj == pytest.approx([0.5, 0.25, 0.1875])
    assert T.sgd_risk(0.5, 1.0, 1.0, 1, 1.0, 2) == pytest.approx(0.1875)
    assert T.sgd_steady_risk(0.5, 1.0, 1.0, 1) == pytest.approx(1 / 6)  # s∞ = 1/3


def test_closed_forms_are_the_limits_of_the_exact_recursions():
    rng = np.random.default_rng(0)
    h = 1 / np.arange(1, 31)
    c, B, lr = 2 * h, 4, 0.7
    theta0 = rng.normal(size=30)
    s0 = theta0**2
    # constant-lr trajectory = the recursion; the steady state is its limit
    assert T.sgd_risk(lr, h, c, B, s0, 40).sum() == pytest.approx(T.sgd_risk_trajectory([lr] * 40, h, c, B, s0)[-1])
    assert T.sgd_risk(lr, h, c, B, s0, 10**5).sum() == pytest.approx(T.sgd_steady_risk(lr, h, c, B).sum())
    # momentum: the 3x3 transient, the tracker and the steady state agree
    tr = T.MomentTracker(h, c, B, theta0, momentum=0.8)
    for _ in range(60):
        tr.step(lr)
    assert tr.risk() == pytest.approx(T.momentum_risk(lr, 0.8, h, c, B, s0, 60).sum(), rel=1e-10)
    assert T.momentum_risk(lr, 0.8, h, c, B, s0, 10**5).sum() == pytest.approx(
        T.momentum_steady_risk(lr, 0.8, h, c, B).sum(), rel=1e-9)
    # preconditioning and EMA: the tracker's fixed point is the closed form
    pre = T.MomentTracker(h, c, B, theta0, scale=h**-0.5)
    ema = T.MomentTracker(h, c, B, theta0, average=True)
    for t in range(5000):
        pre.step(0.5)
        ema.step(lr, 0.0 if t == 0 else 0.9)
    assert pre.risk() == pytest.approx(T.precond_steady_risk(0.5, 0.5, h, c, B).sum(), rel=1e-9)
    assert ema.average_risk() == pytest.approx(T.ema_steady_risk(0.9, lr, h, c, B).sum(), rel=1e-9)
    assert ema.risk() == pytest.approx(T.sgd_steady_risk(lr, h, c, B).sum(), rel=1e-9)


def test_weight_decay_adds_to_the_curvature_of_the_dynamics_only():
    # one dimension, h = 1, λ = 1, α = 0.25, no noise: θ₁ = (1 − 0.5)θ₀; risk ½·h·θ₁²
    tr = T.MomentTracker([1.0], [0.0], 1, [2.0], weight_decay=1.0)
    tr.step(0.25)
    assert tr.risk() == pytest.approx(0.5 * 1.0**2)


def test_ema_factor_and_steps_bound_by_hand():
    # γ = 0.5, r = 1 − αh = 0.5: (0.5·1.25) / (1.5·0.75) = 5/9
    assert T.ema_factor(0.5, 0.5, 1.0) == pytest.approx(5 / 9)
    assert T.ema_factor(0.0, 0.5, 1.0) == pytest.approx(1.0)  # no averaging
    assert T.steps_lower_bound(100, 0.5, 2) == pytest.approx(50.0)
    # the paper's setting: its tuned SGD needs ~1.5e6 steps at B = 4, above the bound
    assert T.steps_lower_bound(10_000, 0.01, 4) == pytest.approx(1.25e5)


# -- against the engine -----------------------------------------------------------------------
DIM, B, LR = 20, 4, 0.5
H = 1 / np.arange(1, DIM + 1)  # c = h (problem.noise = 1)
BURN_IN = 300  # the slowest mode relaxes as (1 − αh_d)^{2t} = 0.975^{2t}


def steady_state(overrides, averager=None, seeds=(0, 1, 2), steps=2300, every=4):
    """Measured risk (and averaged-model risk) after burn-in, over steps and seeds, from the
    real engine, with the logged theory_risk alongside."""
    comps = {"problem": "nqm"} | ({"averager": averager} if averager else {})
    rows = []
    for seed in seeds:
        spec = spec_of(comps, {"problem.dim": DIM, "optimizer.lr": LR, **overrides}, batch_size=B, steps=steps,
                       eval_every=every, seed=seed)
        result = train(spec)
        assert result.status == "completed", result.reason
        rows += [m for step, m in result.history if step >= BURN_IN]
    return {k: float(np.mean([m[k] for m in rows])) for k in rows[0]}


def test_sgd_steady_state_risk_matches_the_closed_form():
    got = steady_state({})
    want = T.sgd_steady_risk(LR, H, H, B).sum()
    assert got["val_loss"] == pytest.approx(want, rel=0.1)
    assert got["theory_risk"] == pytest.approx(want, rel=1e-4)


def test_momentum_steady_state_risk_matches_the_closed_form():
    got = steady_state({"optimizer.momentum": 0.9})
    want = T.momentum_steady_risk(LR, 0.9, H, H, B).sum()
    assert want > 5 * T.sgd_steady_risk(LR, H, H, B).sum()  # at equal α, momentum amplifies noise
    assert got["val_loss"] == pytest.approx(want, rel=0.1)
    assert got["theory_risk"] == pytest.approx(want, rel=1e-4)


def test_ema_lowers_the_steady_state_risk_by_its_factor():
    got = steady_state({"averager.decay": 0.9}, averager="ema")
    sgd = T.sgd_steady_risk(LR, H, H, B)
    want = (sgd * T.ema_factor(0.9, LR, H)).sum()
    assert want < 0.5 * sgd.sum()
    assert got["avg_val_loss"] == pytest.approx(want, rel=0.1)
    assert got["val_loss"] == pytest.approx(sgd.sum(), rel=0.1)
    assert got["theory_avg_risk"] == pytest.approx(want, rel=1e-4)


def test_theory_risk_follows_the_runs_lr_schedule():
    spec = spec_of({"problem": "nqm", "scheduler": "step"},
                   {"problem.dim": DIM, "optimizer.lr": LR, "scheduler.step_size": 2, "scheduler.gamma": 0.5},
                   batch_size=B, steps=600)
    result = train(spec)
    assert result.status == "completed", result.reason
    window = result.history[1][0]  # one "epoch" = one evaluation window
    lrs = [m["lr"] for _, m in result.history[1:] for _ in range(window)]
    problem = build(spec).problem  # its own h (float32 1/i) and θ₀
    h = problem.h_cpu.numpy()
    traj = T.sgd_risk_trajectory(lrs, h, h, B, problem.theta0.numpy() ** 2)
    for step, m in result.history:
        assert m["theory_risk"] == pytest.approx(traj[step], rel=1e-9)
    assert result.history[-1][1]["lr"] < LR / 100  # the schedule really decayed


def test_theory_risk_tracks_a_run_with_every_ingredient():
    """precond + momentum + weight decay + a decaying schedule + SWA: per seed, the measured
    risks (time-averaged) minus the logged predictions average to zero within 3 standard errors."""
    overrides = {"problem.dim": DIM, "optimizer.lr": 0.3, "optimizer.p": 0.5, "optimizer.momentum": 0.5,
                 "optimizer.weight_decay": 0.01, "averager.start": 0.3, "scheduler.gamma": 0.99}
    comps = {"problem": "nqm", "optimizer": "precond", "averager": "swa", "scheduler": "exponential"}
    pairs = {"val_loss": "theory_risk", "avg_val_loss": "theory_avg_risk"}
    diffs: dict[str, list[float]] = {k: [] for k in pairs}
    predicted: dict[str, list[float]] = {k: [] for k in pairs}
    for seed in range(16):
        result = train(spec_of(comps, overrides, batch_size=B, steps=400, eval_every=4, seed=seed))
        assert result.status == "completed", result.reason
        rows = [m for step, m in result.history if step >= 150]
        for measured, theory in pairs.items():
            diffs[measured].append(np.mean([m[measured] - m[theory] for m in rows]))
            predicted[measured].append(np.mean([m[theory] for m in rows]))
    for k in pairs:
        mean, se = np.mean(diffs[k]), np.std(diffs[k], ddof=1) / np.sqrt(len(diffs[k]))
        assert 3 * se < 0.25 * np.mean(predicted[k]), (k, se)  # the test can see a 25% error
        assert abs(mean) < 3 * se, (k, mean, se)
