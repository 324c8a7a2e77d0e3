"""The NQM fitted to a network: Lanczos on Hessian-vector products, the noise in the eigenbasis,
the fitted NQM's predictions, and ``suite nqm fit`` end to end."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from suite.nqmfit.functional import FlatLoss
from suite.nqmfit.noise import noise_in_basis
from suite.nqmfit.predict import fit_nqm, predict
from suite.nqmfit.spectrum import PowerLaw, lanczos


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


def test_fitted_nqm_of_the_papers_nqm_predicts_its_closed_form():
    # the NQM paper's model (h_i = 1/i, c = h, d = 100), handed over as its top 20 directions, the trace
    # of C and the gradient of θ₀ = 1: the tail law is exact, so the prediction is the closed form's
    d = 100
    h = 1.0 / np.arange(1, d + 1)
    nqm = fit_nqm(h[:20], h[:20], d, float(h.sum()), float((h**2).sum()), bins=80)
    assert nqm.sigma2 == pytest.approx(1.0, rel=0.01) and nqm.noise_exponent == pytest.approx(1.0)
    assert nqm.curvature_tail.exponent == pytest.approx(1.0)
    from suite.report.scaling import closed_form_steps
    from suite.theory import best_steps_to_target

    target = 0.05
    (sgd, mom, adam) = predict(nqm, [4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096], target)
    for b, steps in zip(sgd.batch_sizes, sgd.steps, strict=True):
        assert steps == pytest.approx(best_steps_to_target(h, h, b, target)[0], rel=0.05)
    for b, steps in zip(mom.batch_sizes, mom.steps, strict=True):  # the fitted (binned) NQM against the exact one
        if b in (32, 256, 4096):
            assert steps == pytest.approx(closed_form_steps("momentum β=0.9", b, d, 1.0, target, 20000)[0], rel=0.1)
    assert 4 < sgd.critical < 4096
    assert adam.critical > sgd.critical  # preconditioning extends perfect scaling
    assert mom.steps[-1] < 0.8 * sgd.steps[-1]  # momentum helps at large B


# -- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_nqm_fit_end_to_end_logs_the_fit_and_the_prediction(cli, mlflow_client):
    import json

    from tests.conftest import runs_of

    res = cli("nqm", "fit", "--problem", "mnist1d_mlp", "--set", "problem.width=8", "--reference-steps", "30",
              "--examples", "64", "--top-k", "4", "--batch-sizes", "8,64,512", "--experiment", "fit")
    assert "B*" in res.output and "SGD" in res.output
    (run,) = runs_of(mlflow_client, "fit", "tags.`suite.kind` = 'nqm_fit'")
    assert run.info.status == "FINISHED" and run.data.params["problem"] == "mnist1d_mlp"
    eig = [m.value for m in mlflow_client.get_metric_history(run.info.run_id, "nqm.eigenvalue")]
    assert len(eig) == 4 and eig == sorted(eig, reverse=True)
    steps = {m.step: m.value for m in mlflow_client.get_metric_history(run.info.run_id, "pred.steps.SGD")}
    assert sorted(steps) == [8, 64, 512] and steps[8] > steps[64] > 0
    summary = json.loads(open(mlflow_client.download_artifacts(run.info.run_id, "nqm_fit.json")).read())
    assert summary["request"]["checkpoint_steps"] == 3 and summary["parameters"] < 1000  # width 8
    assert [p["method"] for p in summary["predictions"]][0] == "SGD"
    (checkpoint,) = runs_of(mlflow_client, "fit", "tags.`suite.nqm_fit` = 'checkpoint'")
    assert checkpoint.info.run_id == run.data.params["checkpoint_run"]


def test_nqm_fit_refuses_bad_input_in_one_line(cli, workdir):
    for args, needle in ((["--problem", "mnist1d_mlp", "--set", "optimizer.lr=1"], "problem hyperparameters only"),
                         (["--problem", "mnist1d_mlp", "--batch-sizes", "64,8"], "--batch-sizes"),
                         (["--problem", "mnist1d_mlp", "--target-fraction", "2"], "--target-fraction"),
                         (["--problem", "mnist1d_mlp", "--top-k", "8", "--lanczos-iters", "4"], "--lanczos-iters"),
                         (["--problem", "mnist1d_mlp", "--set", "problem.width=-3"], "problem.width"),
                         (["--problem", "digits", "--batch-size", "100000"], "--batch-size"),
                         (["--problem", "digits", "--batch-sizes", "8,4096"], "training examples"),
                         (["--problem", "no_such_problem"], "no_such_problem")):
        res = cli("nqm", "fit", *args, ok=False)
        assert res.exit_code == 2, res.output
        assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (workdir / "mlflow.db").exists()  # refused before anything was logged
