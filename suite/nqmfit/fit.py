"""``suite nqm fit`` as a library: train a checkpoint with the suite's engine, fit the NQM there,
predict, and log the fit and the prediction as an MLflow run.

The checkpoint: plain SGD (``lr``, ``batch_size``) after ``checkpoint_fraction`` of a reference run
of ``reference_steps`` steps (default 10% of 3000). Early enough that most of the loss decrease a
scaling study measures still lies ahead, late enough that the fast initial change of the spectrum
(the first few hundred steps, where the top eigenvalues rise towards the edge of stability) is
over. Curvature and noise are measured on ``examples`` training examples drawn with the seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from suite.errors import SpecError
from suite.nqmfit.functional import FlatLoss
from suite.nqmfit.noise import noise_in_basis
from suite.nqmfit.predict import METHODS, FittedNQM, Prediction, fit_nqm, predict
from suite.nqmfit.spectrum import lanczos
from suite.registry import Registry

DEFAULT_BATCH_SIZES = tuple(2**i for i in range(3, 13))
KIND = "nqm_fit"


@dataclass
class FitRequest:
    """What ``suite nqm fit`` fits and predicts."""

    problem: str
    problem_params: Mapping[str, Any] = field(default_factory=dict)
    lr: float = 0.1
    batch_size: int = 32
    reference_steps: int = 3000
    checkpoint_fraction: float = 0.1
    seed: int = 0
    top_k: int = 20
    lanczos_iters: int | None = None
    examples: int = 1024
    batch_sizes: Sequence[int] | None = None  # default: DEFAULT_BATCH_SIZES up to the training set's size
    target_fraction: float = 0.1

    @property
    def checkpoint_steps(self) -> int:
        return max(1, round(self.checkpoint_fraction * self.reference_steps))

    def check(self) -> None:
        """One-line errors for values that cannot work."""
        if not 0 < self.checkpoint_fraction <= 1:
            raise SpecError(f"--checkpoint-fraction={self.checkpoint_fraction} is out of range: must be in (0, 1]")
        if not 0 < self.target_fraction < 1:
            raise SpecError(f"--target-fraction={self.target_fraction} is out of range: must be in (0, 1)")
        if self.top_k < 2:
            raise SpecError(f"--top-k={self.top_k} is out of range: must be at least 2 (the tail fit needs two)")
        if self.lanczos_iters is not None and self.lanczos_iters < self.top_k:
            raise SpecError(f"--lanczos-iters={self.lanczos_iters} is out of range: must be at least --top-k "
                            f"({self.top_k})")
        if self.examples < 2:
            raise SpecError(f"--examples={self.examples} is out of range: must be at least 2")
        sizes = list(self.batch_sizes if self.batch_sizes is not None else DEFAULT_BATCH_SIZES)
        if len(sizes) < 2 or sizes != sorted(set(sizes)) or sizes[0] < 1:
            raise SpecError("--batch-sizes must be at least two increasing positive integers, e.g. 8,16,32")


@dataclass
class FitResult:
    """The fit at the checkpoint and the predictions from it."""

    request: FitRequest
    dim: int
    checkpoint_loss: float
    eigenvalues: list[float]
    noise: list[float]
    hessian_trace: float  # Hutchinson's estimate, against the fitted spectrum's sum
    noise_trace: float
    nqm: FittedNQM
    target: float
    predictions: list[Prediction]

    def summary(self) -> dict[str, Any]:
        """Everything as plain JSON-able values."""
        n = self.nqm
        return {
            "request": {**asdict(self.request), "batch_sizes": list(self.request.batch_sizes),
                        "checkpoint_steps": self.request.checkpoint_steps},
            "parameters": self.dim, "checkpoint_train_loss": self.checkpoint_loss,
            "eigenvalues": self.eigenvalues, "noise": self.noise,
            "curvature_tail": {"scale": n.curvature_tail.scale, "exponent": n.curvature_tail.exponent},
            "noise_exponent": n.noise_exponent, "noise_trace": self.noise_trace, "tail_noise": n.tail_noise,
            "hessian_trace_hutchinson": self.hessian_trace, "hessian_trace_fitted": float(n.h @ (n.s0 / n.sigma2)),
            "sigma2": n.sigma2, "initial_risk": n.initial_risk, "target_risk": self.target,
            "predictions": [asdict(p) for p in self.predictions],
        }


def checkpoint_spec(req: FitRequest, registry: Registry):
    """The checkpoint run's spec (plain SGD), checked and built once (:func:`suite.engine.loop.preflight`):
    a configuration that cannot work is a one-line error before anything is logged."""
    from suite.engine.loop import build, preflight
    from suite.specs.spec import resolve_spec

    overrides = {f"problem.{k}": v for k, v in req.problem_params.items()}
    overrides["optimizer.lr"] = req.lr
    spec = resolve_spec(registry, components={"problem": req.problem, "optimizer": "sgd"}, overrides=overrides,
                        batch_size=req.batch_size, seed=req.seed, steps=req.checkpoint_steps)
    preflight([spec], registry)
    n_train = build(spec, "cpu", registry).problem.n_train  # built once already: its data are cached
    if n_train is None:
        raise SpecError(f"problem {req.problem!r} has no finite data set; nqm fit needs one (a network on data)")
    if req.batch_sizes is None:
        req.batch_sizes = [b for b in DEFAULT_BATCH_SIZES if b <= n_train]
    elif max(req.batch_sizes) > n_train:
        raise SpecError(f"--batch-sizes: {max(req.batch_sizes)} exceeds the {n_train} training examples of "
                        f"{req.problem!r}; give batch sizes up to {n_train}")
    req.check()
    return spec


def train_checkpoint(req: FitRequest, registry: Registry):
    """(spec, result, problem with the checkpoint's parameters): SGD for the checkpoint's steps, by
    the suite's loop engine."""
    from suite.engine.loop import build, train

    spec = checkpoint_spec(req, registry)
    result = train(spec, "cpu", registry)
    if result.status != "completed":
        raise SpecError(f"the checkpoint run {result.status} ({result.reason}); lower --lr or change the problem")
    problem = build(spec, "cpu", registry).problem
    learned = result.final_params["learned"]
    with torch.no_grad():
        for name, p in problem.model.named_parameters():
            p.copy_(torch.tensor(learned[name], dtype=p.dtype).reshape(p.shape))
    return spec, result, problem


def hutchinson_trace(hvp, dim: int, probes: int = 16, seed: int = 0) -> float:
    """tr H ≈ mean of vᵀHv over Rademacher probes v."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(probes):
        v = torch.randint(0, 2, (dim,), generator=gen).double() * 2 - 1
        total += float(hvp(v).double() @ v)
    return total / probes


def fit(req: FitRequest, registry: Registry) -> tuple[Any, FitResult]:
    """Train the checkpoint, fit the NQM there and predict: (the checkpoint's run result, the fit)."""
    req.check()
    spec, result, problem = train_checkpoint(req, registry)
    model = problem.model
    model.eval()
    gen = torch.Generator().manual_seed(req.seed)
    n = min(req.examples, problem.n_train)
    idx = torch.randperm(problem.n_train, generator=gen)[:n]
    X, y = problem.X_train[idx], problem.y_train[idx]
    flat = FlatLoss(model, problem.loss_fn)
    if req.top_k > flat.dim:
        raise SpecError(f"--top-k={req.top_k} is out of range: the model has {flat.dim} parameters")
    hvp = flat.hvp(X, y)
    vals, vecs = lanczos(hvp, flat.dim, req.top_k, req.lanczos_iters, seed=req.seed)
    grads = flat.example_gradients(X, y)
    c, trace = noise_in_basis(grads, vecs)
    g = grads.double().mean(0)
    nqm = fit_nqm(vals, c, flat.dim, trace, float(g @ g))
    target = req.target_fraction * nqm.initial_risk
    preds = predict(nqm, list(req.batch_sizes), target, METHODS)
    with torch.no_grad():
        loss = float(flat.loss(flat.theta, X, y))
    out = FitResult(req, flat.dim, loss, vals.tolist(), c.tolist(), hutchinson_trace(hvp, flat.dim, seed=req.seed),
                    trace, nqm, target, preds)
    return (spec, result), out


def table(res: FitResult) -> str:
    """The prediction as a plain-text table: steps per method against B, and critical batch sizes."""
    preds = res.predictions
    head = f"{'B':>6} " + " ".join(f"{p.method:>24}" for p in preds)
    rows = [head]
    for i, b in enumerate(preds[0].batch_sizes):
        rows.append(f"{b:>6.0f} " + " ".join(f"{_num(p.steps[i]):>24}" for p in preds))
    rows.append(f"{'B*':>6} " + " ".join(f"{_crit(p.critical, preds[0].batch_sizes[-1]):>24}" for p in preds))
    return "\n".join(rows)


def _num(x: float) -> str:
    return "never" if not math.isfinite(x) else f"{x:.0f}"


def _crit(x: float | None, largest: float) -> str:
    if x is None:
        return "undefined"
    return f"> {largest:.0f}" if math.isinf(x) else f"{x:.0f}"


def log_fit(tracker: Any, checkpoint: tuple[Any, Any], res: FitResult) -> str:
    """Log the checkpoint run (as any run) and the fit as a run of kind ``nqm_fit``: eigenvalues
    and noise per direction (step = the direction's rank), predicted steps per method (step = B),
    the critical batch sizes, the exponents, and ``nqm_fit.json`` and ``prediction.txt``."""
    from suite.vocab import TAG_KIND, TAG_NQM_FIT, TAG_STATUS

    spec, result = checkpoint
    from suite.registry import get_registry

    ck_id = tracker.start_run(spec, get_registry(), tags={TAG_NQM_FIT: "checkpoint"})
    for step, metrics in result.history:
        tracker.log_metrics(ck_id, step, metrics)
    tracker.finish(ck_id, result)
    summary = res.summary()
    params = {"problem": res.request.problem, "checkpoint_run": ck_id, "parameters": str(res.dim),
              **{k: str(v) for k, v in summary["request"].items()}}
    run_id = tracker.create_run({"mlflow.runName": f"nqm-fit {res.request.problem}", TAG_KIND: KIND,
                                 TAG_STATUS: "running"}, params)
    for i, (h, c) in enumerate(zip(res.eigenvalues, res.noise, strict=True), start=1):
        tracker.log_metrics(run_id, i, {"nqm.eigenvalue": h, "nqm.noise": c})
    scalars = {"nqm.curvature_exponent": res.nqm.curvature_tail.exponent, "nqm.noise_exponent": res.nqm.noise_exponent,
               "nqm.noise_trace": res.noise_trace, "nqm.hessian_trace": res.hessian_trace,
               "nqm.hessian_trace_fitted": summary["hessian_trace_fitted"], "nqm.sigma2": res.nqm.sigma2,
               "nqm.target_risk": res.target, "checkpoint.train_loss": res.checkpoint_loss}
    for p in res.predictions:
        key = _key(p.method)
        if p.critical is not None and math.isfinite(p.critical):
            scalars[f"pred.critical_batch_size.{key}"] = p.critical
        for b, s in zip(p.batch_sizes, p.steps, strict=True):
            if math.isfinite(s):
                tracker.log_metrics(run_id, int(b), {f"pred.steps.{key}": s})
    tracker.log_metrics(run_id, 0, scalars)
    tracker.log_text(run_id, json.dumps(summary, indent=1, default=_json_default), "nqm_fit.json")
    tracker.log_text(run_id, table(res) + "\n", "prediction.txt")
    tracker.mark(run_id, "completed")
    return run_id


def _key(method: str) -> str:
    """A metric-safe name of a method: ``momentum β=0.9`` → ``momentum_beta0.9``."""
    return method.replace("β=", "beta").replace("p=", "p").replace(" ", "_")


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)
