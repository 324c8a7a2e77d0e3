"""The NQM fitted to a network: Lanczos on Hessian-vector products, the noise in the eigenbasis,
the fitted NQM's predictions, and ``suite nqm fit`` end to end."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from suite.critical import critical_batch_size
from suite.errors import SpecError
from suite.nqmfit.fit import FitRequest, mapped_target, measure_nqm, target_fraction
from suite.nqmfit.functional import FlatLoss
from suite.nqmfit.measure import crossing, measured_curve, steps_between
from suite.nqmfit.noise import noise_in_basis
from suite.nqmfit.predict import FittedNQM, fit_nqm, predict
from suite.nqmfit.spectrum import PowerLaw, deflated, lanczos, quadrature


class Quadratic(nn.Module):
    """Outputs ½ θᵀAθ whatever the input: its loss's Hessian is exactly A."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = A
        self.theta = nn.Parameter(torch.randn(len(A), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.theta @ self.A @ self.theta + 0 * x.sum()


def test_lanczos_recovers_the_spectrum_of_a_known_quadratic():
    gen = torch.Generator().manual_seed(0)
    d = 60
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eig = 1.0 / torch.arange(1, d + 1, dtype=torch.float64) ** 1.5  # a power law, exponent 1.5
    A = U @ torch.diag(eig) @ U.T
    flat = FlatLoss(Quadratic(A), lambda out, y: out)
    x = torch.zeros(1, 1, dtype=torch.float64)
    hvp = flat.hvp(x, None)
    vals, vecs = lanczos(hvp, flat.dim, k=5, iters=40)
    assert np.allclose(vals, eig[:5].numpy(), rtol=1e-8)
    for i in range(5):  # eigenvectors up to sign
        assert abs(float(np.dot(vecs[:, i], U[:, i].numpy()))) == pytest.approx(1.0, abs=1e-6)
    full, _ = lanczos(hvp, flat.dim, k=d, iters=d)  # a full run: every eigenvalue
    assert np.allclose(np.sort(full), np.sort(eig.numpy()), rtol=1e-6, atol=1e-12)
    law = PowerLaw.fit(vals)
    assert law.exponent == pytest.approx(1.5, rel=1e-6) and law.scale == pytest.approx(1.0, rel=1e-6)


def test_noise_estimate_matches_linear_regression_with_known_covariance():
    # y = xᵀw* + ε, x ~ N(0, diag(s²)), ε ~ N(0, σ²): at w = w*, one example's gradient of ½(xᵀw − y)²
    # is −xε, whose covariance is σ² diag(s²); along a unit vector u, c = σ² Σ u_j² s_j²
    gen = torch.Generator().manual_seed(1)
    n, s, sigma = 40_000, torch.tensor([1.0, 2.0, 0.5]), 0.7
    X = torch.randn(n, 3, generator=gen) * s
    w_star = torch.tensor([0.3, -1.0, 2.0])
    y = X @ w_star + sigma * torch.randn(n, generator=gen)
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_star[None])
    flat = FlatLoss(model, lambda out, t: 0.5 * ((out.squeeze(-1) - t) ** 2).mean())
    G = flat.example_gradients(X, y)
    basis = np.eye(3)[:, [0, 1]]
    rot = np.array([[1.0], [1.0], [0.0]]) / math.sqrt(2)
    c, trace = noise_in_basis(G, np.hstack([basis, rot]))
    truth = sigma**2 * (s**2).numpy()
    assert c == pytest.approx([truth[0], truth[1], (truth[0] + truth[1]) / 2], rel=0.03)
    assert trace == pytest.approx(truth.sum(), rel=0.03)


def test_quadrature_and_deflation_recover_a_vectors_spectral_measure_exactly():
    # H with 6 distinct eigenvalues; v lies in all of them: 6 Lanczos steps exhaust its Krylov space
    gen = torch.Generator().manual_seed(2)
    d = 10
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eig = torch.tensor([5.0, 3.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.2, 0.2, -0.1], dtype=torch.float64)
    A = U @ torch.diag(eig) @ U.T
    coef = torch.arange(1, d + 1, dtype=torch.float64)
    v = U @ coef
    nodes, weights = quadrature(lambda x: A @ x, v, 20)
    for lam in eig.unique():
        mass = float((coef[eig == lam] ** 2).sum())
        near = np.isclose(nodes, float(lam), atol=1e-8)
        assert near.sum() == 1 and weights[near][0] == pytest.approx(mass, rel=1e-8)
    assert weights.sum() == pytest.approx(float(v @ v))
    rest, project = deflated(lambda x: A @ x, U[:, :2].numpy())  # the top two projected out
    nodes, weights = quadrature(rest, project(v), 20)
    assert not np.isclose(nodes, 5.0).any() and not np.isclose(nodes, 3.0).any()
    assert weights.sum() == pytest.approx(float((coef[2:] ** 2).sum()))
    assert quadrature(rest, torch.zeros(d, dtype=torch.float64), 5)[0].size == 0


class Bowl(nn.Module):
    """Every example's prediction is θ itself (the loss below makes each example a quadratic bowl)."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta.expand(len(x), -1)


def known_quadratic(seed: int = 3):
    """Examples with losses ½(θ − z_e)ᵀA(θ − z_e): Hessian A = U diag(h) Uᵀ, gradient A(θ − z̄),
    one example's gradient covariance Σ = A Cov(z) A = U diag(h² v) Uᵀ, with Cov(z) exact.
    Returns (FlatLoss, Z, h, c = h²v, s0 = (uᵢᵀ(θ − z̄))²) of that NQM."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.tensor([4.0, 3.0, 2.0, 1.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.02, 0.02], dtype=torch.float64)
    v = torch.tensor([0.3, 0.5, 0.2, 0.4, 1.0, 1.0, 1.0, 0, 0, 0, 0, 0], dtype=torch.float64)  # rest: one group
    d, n = len(h), 64
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    A = U @ torch.diag(h) @ U.T
    Z0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    Z0 -= Z0.mean(0)
    Z0 = Z0 @ torch.linalg.inv(torch.linalg.cholesky(Z0.T @ Z0 / (n - 1))).T  # sample covariance exactly I
    zbar = torch.randn(d, generator=gen, dtype=torch.float64)
    Z = Z0 @ torch.diag(v.sqrt()) @ U.T + zbar
    theta = torch.zeros(d, dtype=torch.float64)

    def loss(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r = out - z
        return 0.5 * ((r @ A) * r).sum(-1).mean()

    s0 = (U.T @ (theta - zbar)) ** 2
    return FlatLoss(Bowl(theta), loss), Z, h.numpy(), (h**2 * v).numpy(), s0.numpy()


def test_fitted_nqm_of_a_known_quadratic_is_that_nqm():
    # top 4 by Lanczos, the rest by quadratures: the same risk, noise and predictions as the exact NQM
    flat, Z, h, c, s0 = known_quadratic()
    X = torch.zeros(len(Z), 1, dtype=torch.float64)
    nqm, vals, top_c, top_g, trace, _ = measure_nqm(flat, X, Z, flat.gradient(X, Z), top_k=4, lanczos_iters=12,
                                                    quadrature_steps=12, probes=2)
    assert np.allclose(vals, h[:4], rtol=1e-8) and np.allclose(top_c, c[:4], rtol=1e-8)
    assert np.allclose(top_g**2, h[:4] ** 2 * s0[:4], rtol=1e-8)
    assert trace == pytest.approx(c.sum(), rel=1e-8) and nqm.tail_noise == pytest.approx(c[4:].sum(), rel=1e-8)
    assert nqm.initial_risk == pytest.approx(0.5 * (h * s0).sum(), rel=1e-8)
    assert nqm.top_risk_share == pytest.approx((h[:4] * s0[:4]).sum() / (h * s0).sum(), rel=1e-8)
    assert nqm.dropped_gradient == 0 and nqm.dropped_noise == 0
    target = 0.2 * nqm.initial_risk
    exact = FittedNQM(h, c, s0, nqm.curvature_tail, nqm.noise_exponent, 0.0)
    sizes = [1, 4, 16, 64, 256]
    for fitted, truth in zip(predict(nqm, sizes, target), predict(exact, sizes, target), strict=True):
        assert fitted.steps == pytest.approx(truth.steps, rel=1e-6), fitted.method
        assert fitted.critical == pytest.approx(truth.critical, rel=1e-6)


def test_momentum_with_beta_tuned_is_predicted_no_worse_than_sgd_or_beta_09_and_better_at_large_b():
    # the networks benchmark tunes β with the lr: its prediction is the NQM's optimum over both
    h = 1.0 / np.arange(1, 31)
    nqm = FittedNQM(h, h.copy(), np.ones_like(h), None, float("nan"), 0.0)
    sizes = [4, 64, 1024]
    by = {p.method: p for p in predict(nqm, sizes, 0.1 * nqm.initial_risk)}
    tuned, sgd, fixed = by["momentum β tuned"], by["SGD"], by["momentum β=0.9"]
    for i, b in enumerate(sizes):
        assert tuned.steps[i] <= 1.01 * min(sgd.steps[i], fixed.steps[i]) + 1, b
    assert tuned.steps[-1] < 0.8 * sgd.steps[-1]  # at large B momentum pays, and the tuned β finds it


def test_fitted_nqm_leaves_out_non_positive_curvature_and_says_how_much():
    # top: h = 2 (c 1, g 2) and h = −1 (c 3, g 1); rest: gradient energy 1 at 0.5 and 4 at −0.2; tr Σ = 5
    nqm = fit_nqm(np.array([2.0, -1.0]), np.array([1.0, 3.0]), np.array([2.0, 1.0]),
                  (np.array([0.5, -0.2]), np.array([1.0, 4.0])), (np.array([0.5]), np.array([7.0])), 5.0)
    assert nqm.dropped_gradient == pytest.approx((1 + 4) / (4 + 1 + 1 + 4))
    assert nqm.dropped_noise == pytest.approx(3 / 5)
    assert nqm.tail_noise == pytest.approx(1.0)  # tr Σ − Σ c_top; the probe's weight 7 is scaled to it
    assert sorted(nqm.c) == pytest.approx([0.0, 1.0, 1.0])
    assert nqm.initial_risk == pytest.approx(0.5 * (2 * (2 / 2) ** 2 + 0.5 * (1 / 0.5**2)))


def test_target_fraction_maps_a_validation_loss_onto_the_excess_left():
    req = FitRequest("mnist1d_mlp", target_loss=1.45)
    assert target_fraction(req, 1.65, 1.25) == pytest.approx(0.5)
    assert target_fraction(FitRequest("mnist1d_mlp"), 1.65, 1.25) == 0.1
    assert target_fraction(FitRequest("mnist1d_mlp", target_fraction=0.3), 1.65, 1.25) == 0.3
    for x, needle in ((1.7, "already reached at the checkpoint"), (1.2, "at or below the attainable")):
        with pytest.raises(SpecError, match=needle):
            target_fraction(FitRequest("mnist1d_mlp", target_loss=x), 1.65, 1.25)


def test_excess_mapping_scales_the_start_to_the_measured_excess_and_keeps_its_shape():
    nqm = fit_nqm(np.array([2.0, 1.0]), np.array([1.0, 1.0]), np.array([2.0, 1.0]), (np.zeros(0), np.zeros(0)),
                  (np.zeros(0), np.zeros(0)), 2.0)  # start risk ½(2·1 + 1·1) = 1.5
    same, target = mapped_target(nqm, "fraction", 0.4, 0.3)
    assert same is nqm and target == pytest.approx(0.4 * 1.5)
    scaled, target = mapped_target(nqm, "excess", 0.4, 0.3)
    assert scaled.initial_risk == pytest.approx(0.3) and target == pytest.approx(0.4 * 0.3)  # X − L* = f·(L_ck − L*)
    assert scaled.s0 == pytest.approx(nqm.s0 * 0.2) and np.array_equal(scaled.c, nqm.c)


def test_measured_steps_count_from_the_start_level_with_interpolated_crossings():
    hist = [(0, 2.0), (10, 1.6), (20, 1.4), (30, 1.0)]
    assert crossing(hist, 1.5) == pytest.approx(15.0) and crossing(hist, 2.5) == 0.0
    assert crossing(hist, 0.5) == math.inf
    assert steps_between(hist, 1.8, 1.2) == pytest.approx(25.0 - 5.0)
    assert steps_between(hist, 3.0, 0.5) == steps_between([(0, 4.0), (10, 5.0)], 3.0, 0.5) == math.inf
    with pytest.raises(ValueError):
        steps_between(hist, 1.2, 1.8)
    # two seeds, two lrs: per B the lr with the fewest mean steps; B* where the work doubles
    def run(b, lr, seed, steps):  # a history crossing 1.8 at step 0 and 1.2 after ``steps``
        return (b, lr, seed, [(0, 1.8), (steps, 1.2)])

    runs = [run(8, 0.1, 0, 800), run(8, 0.1, 1, 1000), run(8, 0.2, 0, 700), run(8, 0.2, 1, 1500),
            run(16, 0.2, 0, 450), run(16, 0.2, 1, 450), run(32, 0.2, 0, 450), run(32, 0.2, 1, 450)]
    curve = measured_curve(runs, 1.8, 1.2)
    assert curve.steps == [900.0, 450.0, 450.0] and curve.lrs == [0.1, 0.2, 0.2]
    assert curve.critical == pytest.approx(critical_batch_size([8, 16, 32], [900, 450, 450]))
    assert curve.per_seed_critical == [critical_batch_size([8, 16, 32], [700, 450, 450]),
                                       critical_batch_size([8, 16, 32], [1000, 450, 450])]
    # one seed dips below the target early and comes back: the mean loss crosses later
    noisy = [(8, 0.1, 0, [(0, 1.8), (10, 1.1), (20, 1.5), (30, 1.1)]), (8, 0.1, 1, [(0, 1.8), (10, 1.5), (20, 1.5),
                                                                                   (30, 1.1)])]
    assert measured_curve(noisy, 1.8, 1.2).steps == [pytest.approx((10 * 0.6 / 0.7 + 27.5) / 2)]
    by_loss = measured_curve(noisy, 1.8, 1.2, average="loss")
    assert by_loss.steps == [pytest.approx(27.5)] and by_loss.per_seed_critical == [math.inf, math.inf]  # one B


# -- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_nqm_fit_end_to_end_logs_the_fit_and_the_prediction(cli, mlflow_client):
    import json

    from tests.conftest import runs_of

    res = cli("nqm", "fit", "--problem", "mnist1d_mlp", "--set", "problem.width=8", "--reference-steps", "30",
              "--examples", "64", "--top-k", "4", "--batch-sizes", "32,128,512", "--experiment", "fit")
    assert "B*" in res.output and "SGD" in res.output
    (run,) = runs_of(mlflow_client, "fit", "tags.`suite.kind` = 'nqm_fit'")
    assert run.info.status == "FINISHED" and run.data.params["problem"] == "mnist1d_mlp"
    eig = [m.value for m in mlflow_client.get_metric_history(run.info.run_id, "nqm.eigenvalue")]
    assert len(eig) == 4 and eig == sorted(eig, reverse=True)
    steps = {m.step: m.value for m in mlflow_client.get_metric_history(run.info.run_id, "pred.steps.SGD")}
    assert sorted(steps) == [32, 128, 512] and steps[32] > steps[128] > 0
    summary = json.loads(open(mlflow_client.download_artifacts(run.info.run_id, "nqm_fit.json")).read())
    assert summary["request"]["checkpoint_steps"] == 3 and summary["parameters"] < 1000  # width 8
    assert [p["method"] for p in summary["predictions"]][0] == "SGD"
    (checkpoint,) = runs_of(mlflow_client, "fit", "tags.`suite.nqm_fit` = 'checkpoint'")
    assert checkpoint.info.run_id == run.data.params["checkpoint_run"]
    (reference,) = runs_of(mlflow_client, "fit", "tags.`suite.nqm_fit` = 'reference'")
    assert reference.data.params["steps"] == "30"
    assert summary["attainable_val_loss"] == pytest.approx(reference.data.metrics["best_val_loss"])
    assert summary["target_fraction"] == 0.1 and summary["initial_risk"] > 0
    res = cli("nqm", "compare", "--fit-run", run.info.run_id, "--experiment", "fit", ok=False)
    assert res.exit_code == 2 and "no --target-loss" in res.output


def test_nqm_fit_refuses_bad_input_in_one_line(cli, workdir):
    for args, needle in ((["--problem", "mnist1d_mlp", "--set", "optimizer.lr=1"], "problem hyperparameters only"),
                         (["--problem", "mnist1d_mlp", "--batch-sizes", "64,8"], "--batch-sizes"),
                         (["--problem", "mnist1d_mlp", "--target-fraction", "2"], "--target-fraction"),
                         (["--problem", "mnist1d_mlp", "--target-loss", "nan"], "--target-loss"),
                         (["--problem", "mnist1d_mlp", "--target-loss", "1.4", "--target-fraction", "0.5"],
                          "not both"),
                         (["--problem", "mnist1d_mlp", "--target-mapping", "excess"], "needs --target-loss"),
                         (["--problem", "mnist1d_mlp", "--top-k", "8", "--lanczos-iters", "4"], "--lanczos-iters"),
                         (["--problem", "mnist1d_mlp", "--set", "problem.width=-3"], "problem.width"),
                         (["--problem", "digits", "--batch-size", "100000"], "--batch-size"),
                         (["--problem", "digits", "--batch-sizes", "8,4096"], "training examples"),
                         (["--problem", "no_such_problem"], "no_such_problem")):
        res = cli("nqm", "fit", *args, ok=False)
        assert res.exit_code == 2, res.output
        assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (workdir / "mlflow.db").exists()  # refused before anything was logged


def test_nqm_compare_puts_the_measured_curve_beside_the_prediction(cli, mlflow_client):
    # a fit run and a grid as `suite nqm fit` and `suite run` log them (only what compare reads)
    fit_exp = mlflow_client.create_experiment("fit")
    fit = mlflow_client.create_run(fit_exp, tags={"suite.kind": "nqm_fit"}).info.run_id
    for k, v in {"problem": "digits", "target_loss": "0.5"}.items():
        mlflow_client.log_param(fit, k, v)
    mlflow_client.log_metric(fit, "checkpoint.val_loss", 1.0)
    mlflow_client.log_metric(fit, "pred.critical_batch_size.SGD", 64.0)
    for b, s in ((8, 800), (16, 400), (32, 200), (64, 200)):
        mlflow_client.log_metric(fit, "pred.steps.SGD", s, step=b)
    grid = mlflow_client.create_experiment("grid")
    for b, s in ((8, 400), (16, 300), (32, 300), (64, 300)):  # efficiency 1, 0.67, 0.33, 0.17
        for lr, extra in ((0.1, 0), (0.2, 100)):
            run = mlflow_client.create_run(grid).info.run_id
            for k, v in {"problem": "digits", "optimizer": "sgd", "batch_size": b, "optimizer.lr": lr, "seed": 0,
                         "optimizer.momentum": 0.0}.items():
                mlflow_client.log_param(run, k, v)
            for step, loss in ((0, 2.0), (100, 1.0), (100 + s + extra, 0.5)):
                mlflow_client.log_metric(run, "val_loss", loss, step=step)
    res = cli("nqm", "compare", "--fit-run", fit, "--experiment", "grid", "--optimizers", "sgd")
    crit = critical_batch_size([8, 16, 32, 64], [400, 300, 300, 300])
    assert "| 8 | 400 (0.1) | 800 |" in res.output
    assert f"**{crit:.0f}** (seeds: {crit:.0f})" in res.output and f"({64 / crit:.2g}×)" in res.output
    for args, needle in ((["--optimizers", "lbfgs"], "no NQM model"), (["--experiment", "none"], "no sgd runs")):
        res = cli("nqm", "compare", "--fit-run", fit, "--experiment", "grid", *args, ok=False)
        assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
