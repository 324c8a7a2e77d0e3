"""suite.theory's exact optima of the tuned NQM methods: the moment recursion every method's steps
come from (against a Monte-Carlo simulation, an independent closed form and the engine's own NQM
runs), its special cases, and the optimum against a much finer brute-force search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from suite import theory as T
from suite.engine.loop import build, train
from tests.builtin_helpers import spec_of

D, B = 8, 4
H = 1 / np.arange(1, D + 1)
C = 1.5 * H
METHODS = {  # name -> (lr, moment_recursion keywords)
    "sgd": (0.6, {}),
    "precond p=0.5": (0.3, {"p": 0.5}),
    "momentum β=0.8": (0.15, {"momentum": 0.8}),
    "sgd + ema γ=0.9": (0.6, {"ema": 0.9}),
    "momentum + ema": (0.15, {"momentum": 0.8, "ema": 0.7}),
}


def simulate(lr: float, steps: int, chains: int, rng: np.random.Generator, p: float = 0.0, momentum: float = 0.0,
             ema: float | None = None) -> np.ndarray:
    """Per chain, the risk at steps 0..``steps`` of the NQM update written out as torch and the
    ``ema`` averager do it: m ← βm + g (m₀ = 0), θ ← θ − α H^{−p} m, θ̃ ← θ₁ at the first update,
    then θ̃ ← γθ̃ + (1−γ)θ. The risk read is the EMA's with ``ema``."""
    theta = rng.normal(size=(chains, D))
    m, avg = np.zeros_like(theta), theta.copy()
    read = avg if ema is not None else theta
    out = [0.5 * (H * read**2).sum(-1)]
    for t in range(1, steps + 1):
        g = H * theta + rng.normal(size=theta.shape) * np.sqrt(C / B)
        m = momentum * m + g
        theta = theta - lr * H**-p * m
        if ema is not None:
            avg = theta.copy() if t == 1 else ema * avg + (1 - ema) * theta
        read = avg if ema is not None else theta
        out.append(0.5 * (H * read**2).sum(-1))
    return np.stack(out, -1)


@pytest.mark.parametrize("name", METHODS)
def test_the_recursion_is_the_mean_of_a_monte_carlo_simulation(name):
    """20000 independent chains: at every step the mean risk is within 4.5 standard errors of the
    recursion (the bound holds for all 41 steps together with probability > 0.999)."""
    lr, kw = METHODS[name]
    sim = simulate(lr, 40, 20_000, np.random.default_rng(7), **kw)
    exact = T.moment_recursion([lr], H, C, B, **kw).risks(40)[0]
    mean, se = sim.mean(0), sim.std(0, ddof=1) / math.sqrt(len(sim))
    assert np.all(np.abs(mean - exact) < 4.5 * se), np.max(np.abs(mean - exact) / se)
    assert np.all(4.5 * se[5:] < 0.05 * exact[5:])  # the test resolves a 5% error after the first steps
    assert exact[-1] < 0.5 * exact[0]  # and the risk really moved


def test_special_cases_reduce_to_plain_sgd():
    s0 = np.linspace(0.5, 2, D)
    sgd = T.sgd_risk_trajectory([0.6] * 30, H, C, B, s0)
    for kw in ({}, {"momentum": 0.0}, {"p": 0.0}, {"ema": 0.0}):  # β = 0, p = 0, γ = 0: the last iterate of SGD
        assert T.moment_recursion([0.6], H, C, B, s0=s0, **kw).risks(30)[0] == pytest.approx(sgd, rel=1e-12)
    assert T.moment_recursion([0.6], H, C, B, s0=s0, momentum=0.0, ema=0.0).risks(30)[0] == pytest.approx(sgd)
    lrs = np.geomspace(0.01, 1.9, 25)
    want = T.steps_to_target(lrs, H, C, B, 0.2)
    assert np.isfinite(want).sum() > 10
    for kw in ({"momentum": 0.0}, {"ema": 0.0}, {"p": 0.0}):
        assert np.array_equal(T.steps_to_target(lrs, H, C, B, 0.2, **kw), want)
    # an EMA with γ near 1 barely moves: it needs more steps than the iterate at the same lr
    assert T.steps_to_target([0.6], H, C, B, 0.2, ema=0.99)[0] > T.steps_to_target([0.6], H, C, B, 0.2)[0]


def test_momentum_steps_are_the_first_crossing_of_the_matrix_power_closed_form():
    """Underdamped momentum: the risk is not monotone; the steps are the first t at or below the
    target of :func:`suite.theory.momentum_risk` (M^t by matrix powers), found by brute force."""
    lrs, beta, target = np.array([0.3, 1.0, 2.5, 3.5]), 0.8, 0.12
    got = T.steps_to_target(lrs, H, C, B, target, momentum=beta)
    for lr, steps in zip(lrs, got, strict=True):
        risk = np.array([T.momentum_risk(lr, beta, H, C, B, 1.0, t).sum() for t in range(150)])
        below = np.flatnonzero(risk <= target)
        assert steps == (below[0] if len(below) else math.inf)
    assert np.isinf(got[-1])  # α h_max = 3.5 > 2(1 + β): unstable
    risk = T.moment_recursion([2.5], H, C, B, momentum=beta).risks(40)[0]
    assert np.any(np.diff(risk) > 0)  # it does oscillate


def test_the_closed_form_stability_is_that_of_the_moment_maps_eigenvalues():
    """:func:`suite.theory.moment_recursion`'s spectral radius of A in closed form decides
    stability exactly as the eigenvalues of the second-moment map M do (M's are A's products),
    for SGD, momentum, the EMA and both, preconditioned or not, across the stability edge."""
    from dataclasses import replace

    rng = np.random.default_rng(3)
    edge = 0
    for momentum, ema, p in [(0.0, None, 0.0), (0.9, None, 0.0), (0.5, None, 0.5), (0.0, 0.95, 0.0),
                             (0.99, 0.9, 0.0), (0.3, 0.5, 0.5)]:
        cap = 2 * (1 + momentum) / float(np.max(H ** (1 - p)))
        lrs = cap * np.concatenate([10 ** rng.uniform(-3, 0.5, 60), [0.999999, 1.000001]])
        rec = T.moment_recursion(lrs, H, C, B, p=p, momentum=momentum, ema=ema)
        assert rec.radius is not None
        by_eigenvalues = replace(rec, radius=None).stable()
        assert np.array_equal(rec.stable(), by_eigenvalues)
        assert np.array_equal(rec.rows(np.arange(0, 62, 2)).stable(), by_eigenvalues[::2])
        edge += by_eigenvalues.any() and not by_eigenvalues.all()
    assert edge == 6  # every case has settings on both sides of the edge
    undamped = T.moment_recursion([0.1, 1.0], H, C, B, p=1.0, momentum=1.0)  # β = 1: |eigenvalues| = 1
    assert not undamped.stable().any() and not replace(undamped, radius=None).stable().any()


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"ema": 0.95}], ids=["sgd", "momentum", "ema"])
def test_the_engines_nqm_runs_follow_the_recursion(kw):
    """The suite's own NQM problem, trained by the engine: its logged theory risk (its own moment
    tracker, from the run's θ₀) is the recursion's at every step, and its measured risk minus the
    recursion averages to zero over 12 seeds within 3 standard errors."""
    comps = {"problem": "nqm"} | ({"averager": "ema"} if "ema" in kw else {})
    over = {"problem.dim": 20, "optimizer.lr": 0.2, "optimizer.momentum": kw.get("momentum", 0.0)}
    over |= {"averager.decay": kw["ema"]} if "ema" in kw else {}
    measured, theory = ("avg_val_loss", "theory_avg_risk") if "ema" in kw else ("val_loss", "theory_risk")
    diffs, scale = [], []
    for seed in range(12):
        spec = spec_of(comps, over, batch_size=8, steps=60, eval_every=1, seed=seed)
        result = train(spec)
        assert result.status == "completed", result.reason
        problem = build(spec).problem
        h = problem.h_cpu.numpy()
        rec = T.moment_recursion([0.2], h, h, 8, s0=problem.theta0.numpy() ** 2, **kw)
        exact = rec.risks(60)[0]
        steps = [s for s, _ in result.history]
        assert [m[theory] for _, m in result.history] == pytest.approx(exact[steps], rel=1e-9)
        diffs.append(np.mean([m[measured] - exact[s] for s, m in result.history if s >= 20]))
        scale.append(np.mean(exact[20:]))
    mean, se = np.mean(diffs), np.std(diffs, ddof=1) / math.sqrt(len(diffs))
    assert 3 * se < 0.3 * np.mean(scale)  # it can see a 30% error
    assert abs(mean) < 3 * se, (mean, se)


# -- the optimum against brute force ---------------------------------------------------------------
H20 = 1 / np.arange(1, 21)
TARGET = 0.05


def brute(batch_size: int, **kw) -> float:
    """The fewest exact steps over a log grid of 3000 lrs (50× the optimum's first grid) below the cap."""
    beta = kw.get("momentum", 0.0)
    lrs = 2 * (1 + beta) * np.geomspace(1e-6, 1, 3000, endpoint=False)
    return float(T.first_steps(T.moment_recursion(lrs, H20, H20, batch_size, **kw), TARGET, 10**5,
                               near=0.0)[0].min())


@pytest.mark.parametrize("batch_size", [4, 64, 1024])
@pytest.mark.parametrize("kw", [{}, {"p": 0.5}, {"momentum": 0.9}, {"ema": 0.95}], ids=["sgd", "precond", "momentum",
                                                                                      "ema"])
def test_the_optimum_over_the_lr_is_within_one_percent_of_brute_force(kw, batch_size):
    best = T.optimum(H20, H20, batch_size, TARGET, **kw)
    assert math.isfinite(best.steps)
    assert best.steps <= 1.01 * brute(batch_size, **kw)
    # and it is what its own lr gets
    assert T.steps_to_target([best.lr], H20, H20, batch_size, TARGET, **kw)[0] == best.steps


@pytest.mark.parametrize("batch_size", [8, 256])
def test_the_optimum_over_lr_and_momentum_is_within_one_percent_of_brute_force(batch_size):
    best = T.optimum(H20, H20, batch_size, TARGET, tune_momentum=True)
    betas = 1 - np.geomspace(1e-3, 1, 120)  # 1 − β: 40 per decade (10× the first grid)
    x = np.geomspace(1e-4, 1, 200, endpoint=False)  # lr / cap: 50 per decade (10× the first grid)
    lrs = (2 * (1 + betas)[:, None] * x[None, :]).ravel()
    rec = T.moment_recursion(lrs, H20, H20, batch_size, momentum=np.repeat(betas, len(x)))
    brute_min = T.first_steps(rec, TARGET, 10**5, near=0.0)[0].min()
    assert best.steps <= 1.01 * brute_min
    assert T.steps_to_target([best.lr], H20, H20, batch_size, TARGET, momentum=best.momentum)[0] == best.steps
    # β tuned is at least as good as any fixed β
    assert best.steps <= min(T.optimum(H20, H20, batch_size, TARGET, momentum=b).steps for b in (0.0, 0.5, 0.9))


def test_the_issues_optima_at_dim_100():
    """Issue 25's independent recursion at d = 100, target 0.02: SGD 98 and EMA (γ = 0.95) 82 steps at
    B = 256, SGD 60 at B = 4096; momentum β = 0.9 / SGD at B = 32 is 0.915, EMA / SGD at B = 4096 is 1.33."""
    h = 1 / np.arange(1, 101)

    def opt(b, **kw):
        return T.optimum(h, h, b, 0.02, **kw).steps

    assert (opt(256), opt(256, ema=0.95), opt(4096)) == (98, 82, 60)
    assert opt(32, momentum=0.9) / opt(32) == pytest.approx(0.915, abs=0.001)
    assert opt(4096, ema=0.95) / opt(4096) == pytest.approx(1.33, abs=0.005)
