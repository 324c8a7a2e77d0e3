"""Optimizers against the lecture's update rules, each on a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

from suite.builtin.optimizers import DiagonalPreconditioned
from suite.errors import SpecError
from tests.builtin_helpers import built


def step_with(opt, param, grad):
    param.grad = torch.as_tensor(grad, dtype=param.dtype).reshape(param.shape).clone()
    opt.step()
    return param.detach().clone()


def mean_run(optimizer="sgd", **overrides):
    b = built({"problem": "mean", "optimizer": optimizer},
              {f"optimizer.{k}": v for k, v in overrides.items()})
    w = b.problem.model.w
    with torch.no_grad():
        w.fill_(1.0)
    return b.optimizer, w


def test_one_heavy_ball_momentum_step():
    # m ← βm + g, w ← w − αm; α = 0.1, β = 0.9, w₀ = 1
    opt, w = mean_run(lr=0.1, momentum=0.9)
    assert float(step_with(opt, w, [2.0])) == pytest.approx(0.8)   # m = 2, w = 1 − 0.2
    assert float(step_with(opt, w, [-1.0])) == pytest.approx(0.72)  # m = 1.8 − 1 = 0.8, w = 0.8 − 0.08


def test_weight_decay_is_a_shrink_then_a_gradient_step():
    # w ← (1 − αλ)w − α∇L; α = 0.1, λ = 0.5, w₀ = 2, ∇L = 1  →  0.95·2 − 0.1 = 1.8
    opt, w = mean_run(lr=0.1, weight_decay=0.5)
    with torch.no_grad():
        w.fill_(2.0)
    assert float(step_with(opt, w, [1.0])) == pytest.approx(1.8)


def test_one_preconditioned_step():
    # nqm dim 3: h = (1, 1/2, 1/3), P⁻¹ = h^{−1/2} = (1, √2, √3); θ₀ = 1, g = 0.5, α = 0.1
    b = built({"problem": "nqm", "optimizer": "precond"}, {"problem.dim": 3, "optimizer.lr": 0.1,
                                                           "optimizer.p": 0.5}, steps=1)
    theta = b.problem.model.theta
    with torch.no_grad():
        theta.fill_(1.0)
    got = step_with(b.optimizer, theta, [0.5, 0.5, 0.5])
    want = torch.tensor([1 - 0.05, 1 - 0.05 * math.sqrt(2), 1 - 0.05 * math.sqrt(3)])
    torch.testing.assert_close(got, want)


def test_precond_with_p_1_solves_a_noiseless_quadratic_in_one_step():
    b = built({"problem": "nqm", "optimizer": "precond"},
              {"problem.dim": 50, "problem.noise": 0.0, "optimizer.lr": 1.0, "optimizer.p": 1.0}, steps=1)
    model = b.problem.model
    b.problem.batch_loss(model, torch.arange(8), b.ctx.generator).backward()
    b.optimizer.step()
    assert float(model.theta.detach().abs().max()) < 1e-6


def test_precond_with_p_0_is_torch_sgd_with_momentum_and_weight_decay():
    x1 = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    x2 = torch.nn.Parameter(x1.detach().clone())
    ours = DiagonalPreconditioned([x1], [torch.tensor([1.0, 4.0, 9.0])], lr=0.1, p=0.0, momentum=0.9,
                                  weight_decay=0.01)
    ref = torch.optim.SGD([x2], lr=0.1, momentum=0.9, weight_decay=0.01)
    for k in range(5):
        g = torch.tensor([0.3, -1.0, 2.0]) * (k + 1)
        torch.testing.assert_close(step_with(ours, x1, g), step_with(ref, x2, g))


def test_precond_momentum_accumulates_the_preconditioned_gradient():
    # h = 4, p = 1: u = g/4; m₁ = u₁, m₂ = βm₁ + u₂
    x = torch.nn.Parameter(torch.tensor([1.0]))
    opt = DiagonalPreconditioned([x], [torch.tensor([4.0])], lr=0.5, p=1.0, momentum=0.5)
    assert float(step_with(opt, x, [2.0])) == pytest.approx(1 - 0.5 * 0.5)
    assert float(step_with(opt, x, [4.0])) == pytest.approx(0.75 - 0.5 * (0.25 + 1.0))


def test_precond_refuses_a_problem_without_curvature():
    with pytest.raises(SpecError, match="needs the problem's curvature.*'mlp' has none"):
        built({"problem": "mlp", "optimizer": "precond"})


def test_precond_refuses_non_positive_curvature():
    x = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(SpecError, match="entries <= 0"):
        DiagonalPreconditioned([x], [torch.tensor([1.0, 0.0])], p=0.5)
    with pytest.raises(SpecError, match="does not match"):
        DiagonalPreconditioned([x], [torch.ones(3)], p=0.5)
