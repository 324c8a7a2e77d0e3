"""Problems: seeding, known optima and curvature against autograd, NQM's noise model."""

from __future__ import annotations

import pytest
import torch

from suite.context import BuildContext
from suite.registry import get_registry
from tests.builtin_helpers import built, full_grad


def problem(name, seed=0, **params):
    comp = get_registry().get("problem", name)
    ctx = BuildContext(seed=seed, device=torch.device("cpu"), batch_size=8)
    return comp.build(ctx, comp.resolve(params))


def hessian_diag(prob, model):
    """Diagonal of the training loss's Hessian, per parameter tensor, by autograd."""
    params = list(model.parameters())
    idx = torch.arange(prob.n_train)
    flat = torch.cat([p.reshape(-1) for p in params]).detach()

    def loss_of(v):
        offset, new = 0, []
        for p in params:
            new.append(v[offset:offset + p.numel()].reshape(p.shape))
            offset += p.numel()
        return _loss(prob, model, new, idx)

    H = torch.autograd.functional.hessian(loss_of, flat)
    diag, offset = [], 0
    for p in params:
        diag.append(torch.diagonal(H)[offset:offset + p.numel()].reshape(p.shape))
        offset += p.numel()
    return diag


def _loss(prob, model, new, idx):
    names = [n for n, _ in model.named_parameters()]
    out = torch.func.functional_call(model, dict(zip(names, new, strict=True)), (prob.X_train[idx],))
    return prob.loss_fn(out, prob.y_train[idx])


def set_params(model, values):
    with torch.no_grad():
        for p, v in zip(model.parameters(), values, strict=True):
            p.copy_(v)


@pytest.mark.parametrize("name", ["linreg", "logistic"])
def test_closed_form_optimum_has_zero_gradient_and_curvature_matches_autograd(name):
    prob = problem(name)
    assert prob.optimum is not None and prob.curvature is not None
    set_params(prob.model, prob.optimum)
    grads = full_grad(prob, prob.model)
    assert max(float(g.abs().max()) for g in grads) < 1e-4
    assert prob.dist_to_opt(prob.model) == pytest.approx(0.0, abs=1e-6)
    # linreg's Hessian is constant; logistic's curvature is its Hessian at the optimum
    for got, want in zip(prob.curvature, hessian_diag(prob, prob.model), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_logistic_without_label_noise_is_separable_and_has_no_optimum():
    prob = problem("logistic", label_noise=0.0)
    assert prob.optimum is None and prob.dist_to_opt(prob.model) is None
    assert prob.curvature is not None  # at w = 0: ¼ diag(AᵀA)/n
    assert float(prob.curvature[1]) == pytest.approx(0.25)


def test_mean_knows_its_population_risk_and_sample_optimum():
    prob = problem("mean", n=500, d=3, sigma=2.0)
    mu, x = prob.true_params["w"], prob.X_train
    torch.testing.assert_close(prob.optimum[0], x.mean(dim=0))
    with torch.no_grad():
        prob.model.w.copy_(mu + torch.tensor([1.0, 0.0, -2.0]))
    assert prob.val_loss(prob.model) == pytest.approx(0.5 * 5.0 + 0.5 * 3 * 4.0, rel=1e-6)
    # the training loss is ½‖w−x‖² averaged: its gradient is w − x̄
    (g,) = full_grad(prob, prob.model)
    torch.testing.assert_close(g, prob.model.w.detach() - x.mean(dim=0))


@pytest.mark.parametrize("name", ["mean", "logistic", "mlp", "nqm"])
def test_data_and_init_come_from_the_seed_on_separate_streams(name):
    a, b, c = problem(name, seed=1), problem(name, seed=1), problem(name, seed=2)
    pa, pb, pc = (torch.cat([p.detach().reshape(-1) for p in x.model.parameters()]) for x in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    if a.X_train is not None:
        assert torch.equal(a.X_train, b.X_train) and not torch.equal(a.X_train, c.X_train)
        assert a.X_val is not None or name == "mean"
        # the initialisation is not the first draw of the data stream
        assert not torch.equal(pa[:4], a.X_train.reshape(-1)[:4])


def test_mlp_shapes_for_both_tasks():
    cls = problem("mlp", depth=3, width=8, classes=4)
    assert sum(isinstance(m, torch.nn.Linear) for m in cls.model) == 4
    assert cls.model(cls.X_val).shape == (len(cls.X_val), 4)
    assert set(cls.y_train.tolist()) <= {0, 1, 2, 3} and len(set(cls.y_train.tolist())) > 1
    assert "val_acc" in cls.model_metrics(cls.model)
    reg = problem("mlp", task="regression")
    assert reg.model(reg.X_val).shape == reg.y_val.shape
    assert reg.val_loss(reg.model) > 0


def test_nqm_gradient_is_h_theta_plus_noise_of_covariance_c_over_b():
    prob = problem("nqm", dim=5, noise=2.0)
    assert prob.n_train is None
    h = prob.curvature[0]
    torch.testing.assert_close(h, 1.0 / torch.arange(1, 6, dtype=torch.float32))
    theta = prob.model.theta.detach().clone()
    assert prob.val_loss(prob.model) == pytest.approx(float(0.5 * (h * theta**2).sum()), rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    B, draws = 4, 4000
    grads = []
    for _ in range(draws):
        prob.model.zero_grad()
        prob.batch_loss(prob.model, torch.arange(B), gen).backward()
        grads.append(prob.model.theta.grad.clone())
    G = torch.stack(grads).double()
    se = (2.0 * h.double() / B).sqrt() / draws**0.5
    assert ((G.mean(0) - (h * theta).double()).abs() < 4 * se).all()
    torch.testing.assert_close(G.var(0), 2.0 * h.double() / B, rtol=0.1, atol=0)


def test_nqm_needs_a_step_budget():
    from suite.errors import SpecError

    with pytest.raises(SpecError, match="--steps"):
        built({"problem": "nqm"}, epochs=1)


@pytest.mark.parametrize("data_seed", [None, 3])
def test_linreg_kept_data_sets_build_the_problem_a_fresh_draw_builds(monkeypatch, data_seed):
    """linreg keeps its data sets per process (suite.builtin.problem_factories._linreg_data): a run
    built from a kept one equals one drawn afresh (SUITE_DATA_CACHE=0), its model's initialisation
    included (the lecture's stream goes on from the data to the model), and owns its tensors."""
    from suite.builtin import problem_factories

    params = {"n": 500, "d": 4} | ({} if data_seed is None else {"data_seed": data_seed})

    def tensors(prob):
        return [prob.X_train, prob.y_train, prob.X_val, prob.y_val, *prob.optimum, *prob.curvature,
                *prob.true_params.values(),
                *[p.detach() for p in prob.model.parameters()]]

    problem_factories._LINREG_KEPT.clear()
    first = problem("linreg", seed=7, **params)
    kept = problem("linreg", seed=7, **params)  # from the kept data set
    assert len(problem_factories._LINREG_KEPT) == 1
    first.X_train.mul_(0)  # a run that changes its data changes no other run's, nor the kept data set
    again = problem("linreg", seed=7, **params)
    assert torch.equal(again.X_train, kept.X_train) and not torch.equal(first.X_train, kept.X_train)
    first = again
    monkeypatch.setenv(problem_factories.DATA_CACHE_ENV, "0")
    fresh = problem("linreg", seed=7, **params)
    for a, b, c in zip(tensors(first), tensors(kept), tensors(fresh), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    other = problem("linreg", seed=8, **params)
    assert torch.equal(other.X_train, fresh.X_train) == (data_seed is not None)  # data_seed: the same data
