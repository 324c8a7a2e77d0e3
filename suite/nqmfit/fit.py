"""``suite nqm fit`` as a library: train a checkpoint with the suite's engine, fit the NQM there,
predict, and log the fit and the prediction as an MLflow run.

The checkpoint: plain SGD (``lr``, ``batch_size``) after ``checkpoint_fraction`` of a reference run
of ``reference_steps`` steps (default 10% of 3000). Early enough that most of the loss decrease a
scaling study measures still lies ahead, late enough that the fast initial change of the spectrum
(the first few hundred steps, where the top eigenvalues rise towards the edge of stability) is
over. Curvature and noise are measured on ``examples`` training examples drawn with the seed; the
gradient (the start) on the whole training split.

The target: with ``target_loss`` X (a validation loss, what a measurement's ``--target`` is), the
fraction of the checkpoint's excess loss still left at X, f = (X − L*) / (L_ck − L*), L_ck the
checkpoint's validation loss and L* the attainable one, estimated as the lowest validation loss of
the whole reference run; the NQM's target is f times its risk at the start
(``target_mapping="fraction"``). With ``target_mapping="excess"`` the NQM's start is scaled so
that its risk is the measured excess L_ck − L* (the measured shape of the start kept), and the
target is X − L*, in loss units as the noise is. Without ``target_loss``, the target is
``target_fraction`` of the start's risk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from suite.errors import SpecError
from suite.nqmfit.functional import FlatLoss
from suite.nqmfit.noise import noise_in_basis
from suite.nqmfit.predict import METHODS, FittedNQM, Prediction, fit_nqm, predict
from suite.nqmfit.spectrum import deflated, lanczos, quadrature
from suite.registry import Registry

DEFAULT_BATCH_SIZES = tuple(2**i for i in range(3, 13))
KIND = "nqm_fit"
MAPPINGS = ("fraction", "excess")


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
    target_fraction: float | None = None  # default 0.1 when no target_loss
    target_loss: float | None = None
    target_mapping: str = "fraction"  # or "excess"
    quadrature_steps: int = 40
    probes: int = 4

    @property
    def checkpoint_steps(self) -> int:
        return max(1, round(self.checkpoint_fraction * self.reference_steps))

    def check(self) -> None:
        """One-line errors for values that cannot work."""
        if not 0 < self.checkpoint_fraction <= 1:
            raise SpecError(f"--checkpoint-fraction={self.checkpoint_fraction} is out of range: must be in (0, 1]")
        if self.target_fraction is not None and not 0 < self.target_fraction < 1:
            raise SpecError(f"--target-fraction={self.target_fraction} is out of range: must be in (0, 1)")
        if self.target_loss is not None and self.target_fraction is not None:
            raise SpecError("give --target-loss or --target-fraction, not both")
        if self.target_loss is not None and not math.isfinite(self.target_loss):
            raise SpecError(f"--target-loss={self.target_loss} is not a finite number: give the validation loss "
                            "to reach, e.g. --target-loss 1.45")
        if self.target_mapping not in MAPPINGS:
            raise SpecError(f"--target-mapping={self.target_mapping!r}: one of {', '.join(MAPPINGS)}")
        if self.target_mapping == "excess" and self.target_loss is None:
            raise SpecError("--target-mapping excess needs --target-loss (the validation loss to reach)")
        if self.quadrature_steps < 1 or self.probes < 1:
            raise SpecError("--quadrature-steps and --probes must be at least 1")
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
    checkpoint_loss: float  # training loss on the examples measured
    checkpoint_val_loss: float
    attainable_loss: float  # L*: the reference run's lowest validation loss
    eigenvalues: list[float]
    noise: list[float]
    gradient: list[float]  # the full-batch gradient along each top eigenvector
    hessian_trace: float  # Hutchinson's estimate (a check: the fit does not use it)
    quadratic_risk: float  # ½gᵀH⁻¹g over the positive curvature: the start's risk as measured, before any scaling
    noise_trace: float
    nqm: FittedNQM
    target_fraction: float
    target: float
    predictions: list[Prediction]

    def summary(self) -> dict[str, Any]:
        """Everything as plain JSON-able values."""
        n = self.nqm
        return {
            "request": {**asdict(self.request), "batch_sizes": list(self.request.batch_sizes),
                        "checkpoint_steps": self.request.checkpoint_steps},
            "parameters": self.dim, "checkpoint_train_loss": self.checkpoint_loss,
            "checkpoint_val_loss": self.checkpoint_val_loss, "attainable_val_loss": self.attainable_loss,
            "eigenvalues": self.eigenvalues, "noise": self.noise, "gradient": self.gradient,
            "curvature_tail": {"scale": n.curvature_tail.scale, "exponent": n.curvature_tail.exponent},
            "noise_exponent": n.noise_exponent, "noise_trace": self.noise_trace, "tail_noise": n.tail_noise,
            "hessian_trace_hutchinson": self.hessian_trace, "quadratic_risk": self.quadratic_risk,
            "dropped_gradient_share": n.dropped_gradient, "dropped_noise_share": n.dropped_noise,
            "atoms": {"h": n.h.tolist(), "c": n.c.tolist(), "s0": n.s0.tolist()},
            "initial_risk": n.initial_risk, "top_risk_share": n.top_risk_share,
            "target_fraction": self.target_fraction, "target_risk": self.target,
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


def train_reference(spec, req: FitRequest, registry: Registry):
    """(spec, result, L*): the whole reference run (the checkpoint run continued to
    ``reference_steps``, evaluated 100 times) and its lowest validation loss, the estimate of the
    attainable loss."""
    from suite.engine.loop import train

    ref = replace(spec, steps=req.reference_steps, eval_every=max(1, req.reference_steps // 100))
    result = train(ref, "cpu", registry)
    losses = [m["val_loss"] for _, m in result.history if math.isfinite(m.get("val_loss", math.nan))]
    if not losses:
        raise SpecError(f"the reference run {result.status} with no validation loss ({result.reason}); lower --lr")
    return ref, result, min(losses)


def hutchinson_trace(hvp, dim: int, probes: int = 16, seed: int = 0) -> float:
    """tr H ≈ mean of vᵀHv over Rademacher probes v."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(probes):
        v = torch.randint(0, 2, (dim,), generator=gen).double() * 2 - 1
        total += float(hvp(v).double() @ v)
    return total / probes


def measure_nqm(flat: FlatLoss, X, y, gradient: torch.Tensor, top_k: int, lanczos_iters: int | None,
                quadrature_steps: int, probes: int, seed: int = 0):
    """(fitted NQM, top eigenvalues, their noise, the gradient along them, tr Σ): the NQM of
    :func:`suite.nqmfit.predict.fit_nqm` measured at ``flat``'s parameters, curvature and noise on
    (X, y), the start from ``gradient`` (the full-batch gradient)."""
    hvp = flat.hvp(X, y)
    vals, vecs = lanczos(hvp, flat.dim, top_k, lanczos_iters, seed=seed)
    grads = flat.example_gradients(X, y).detach().double()
    c, trace = noise_in_basis(grads, vecs)
    g = gradient.detach().double().reshape(-1)
    top_g = vecs.T @ g.numpy()
    rest, project = deflated(hvp, vecs)
    rest_gradient = quadrature(rest, project(g), quadrature_steps)
    centred = grads - grads.mean(0)
    gen = torch.Generator().manual_seed(seed + 1)
    nodes, weights = [], []
    for _ in range(probes):  # random combinations of the centred example gradients: covariance Σ
        rho = torch.randint(0, 2, (len(centred),), generator=gen).double() * 2 - 1
        x, w = quadrature(rest, project(centred.T @ rho / math.sqrt(len(centred) - 1)), quadrature_steps)
        nodes.append(x)
        weights.append(w / probes)
    nqm = fit_nqm(vals, c, top_g, rest_gradient, (np.concatenate(nodes), np.concatenate(weights)), trace)
    return nqm, vals, c, top_g, trace, hvp


def target_fraction(req: FitRequest, checkpoint_val_loss: float, attainable: float) -> float:
    """The fraction of the NQM's start risk that is the target (module docstring); a target loss
    the checkpoint already meets, or at or below the attainable loss, is a one-line error."""
    if req.target_loss is None:
        return req.target_fraction if req.target_fraction is not None else 0.1
    x = req.target_loss
    if x >= checkpoint_val_loss:
        raise SpecError(f"--target-loss={x:g} is already reached at the checkpoint (validation loss "
                        f"{checkpoint_val_loss:.4g}): give a lower target, or an earlier --checkpoint-fraction")
    if x <= attainable:
        raise SpecError(f"--target-loss={x:g} is at or below the attainable validation loss {attainable:.4g} (the "
                        f"reference run's lowest): give a target above it, or more --reference-steps")
    return (x - attainable) / (checkpoint_val_loss - attainable)


def mapped_target(nqm: FittedNQM, mapping: str, fraction: float, excess: float) -> tuple[FittedNQM, float]:
    """(the NQM to predict with, its target risk): ``fraction`` of its start risk; with mapping
    ``excess``, the start first scaled so that its risk is the measured ``excess`` L_ck − L*."""
    if mapping == "excess":
        nqm = replace(nqm, s0=nqm.s0 * excess / nqm.initial_risk)
    return nqm, fraction * nqm.initial_risk


def fit(req: FitRequest, registry: Registry) -> tuple[Any, FitResult]:
    """Train the checkpoint and the reference run, fit the NQM at the checkpoint and predict:
    ((checkpoint spec, result), (reference spec, result)), the fit."""
    req.check()
    spec, result, problem = train_checkpoint(req, registry)
    ref_spec, ref_result, attainable = train_reference(spec, req, registry)
    model = problem.model
    model.eval()
    with torch.no_grad():
        val_loss = problem.val_loss(model)
    fraction = target_fraction(req, val_loss, attainable)
    gen = torch.Generator().manual_seed(req.seed)
    n = min(req.examples, problem.n_train)
    idx = torch.randperm(problem.n_train, generator=gen)[:n]
    X, y = problem.X_train[idx], problem.y_train[idx]
    flat = FlatLoss(model, problem.loss_fn)
    if req.top_k > flat.dim:
        raise SpecError(f"--top-k={req.top_k} is out of range: the model has {flat.dim} parameters")
    g = flat.gradient(problem.X_train, problem.y_train)
    nqm, vals, c, top_g, trace, hvp = measure_nqm(flat, X, y, g, req.top_k, req.lanczos_iters,
                                                  req.quadrature_steps, req.probes, seed=req.seed)
    quadratic_risk = nqm.initial_risk
    nqm, target = mapped_target(nqm, req.target_mapping, fraction, val_loss - attainable)
    preds = predict(nqm, list(req.batch_sizes), target, METHODS)
    with torch.no_grad():
        loss = float(flat.loss(flat.theta, X, y))
    out = FitResult(req, flat.dim, loss, val_loss, attainable, vals.tolist(), c.tolist(), top_g.tolist(),
                    hutchinson_trace(hvp, flat.dim, seed=req.seed), quadratic_risk, trace, nqm, fraction, target, preds)
    return ((spec, result), (ref_spec, ref_result)), out


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


def log_fit(tracker: Any, runs: tuple[tuple[Any, Any], tuple[Any, Any]], res: FitResult) -> str:
    """Log the checkpoint run and the reference run (as any runs, tagged ``suite.nqm_fit`` =
    ``checkpoint`` / ``reference``) and the fit as a run of kind ``nqm_fit``: eigenvalues, noise
    and gradient per top direction (step = the direction's rank), predicted steps per method
    (step = B), the critical batch sizes, the target's mapping, and ``nqm_fit.json`` and
    ``prediction.txt``."""
    from suite.registry import get_registry
    from suite.vocab import TAG_KIND, TAG_NQM_FIT, TAG_STATUS

    ids = {}
    for role, (spec, result) in zip(("checkpoint", "reference"), runs, strict=True):
        ids[role] = tracker.start_run(spec, get_registry(), tags={TAG_NQM_FIT: role})
        for step, metrics in result.history:
            tracker.log_metrics(ids[role], step, metrics)
        tracker.finish(ids[role], result)
    summary = res.summary()
    params = {"problem": res.request.problem, "checkpoint_run": ids["checkpoint"], "reference_run": ids["reference"],
              "parameters": str(res.dim), **{k: str(v) for k, v in summary["request"].items()}}
    run_id = tracker.create_run({"mlflow.runName": f"nqm-fit {res.request.problem}", TAG_KIND: KIND,
                                 TAG_STATUS: "running"}, params)
    for i, (h, c, g) in enumerate(zip(res.eigenvalues, res.noise, res.gradient, strict=True), start=1):
        tracker.log_metrics(run_id, i, {"nqm.eigenvalue": h, "nqm.noise": c, "nqm.gradient": g})
    n = res.nqm
    scalars = {"nqm.curvature_exponent": n.curvature_tail.exponent, "nqm.noise_exponent": n.noise_exponent,
               "nqm.noise_trace": res.noise_trace, "nqm.hessian_trace": res.hessian_trace,
               "nqm.initial_risk": n.initial_risk, "nqm.quadratic_risk": res.quadratic_risk,
               "nqm.top_risk_share": n.top_risk_share,
               "nqm.dropped_gradient_share": n.dropped_gradient, "nqm.dropped_noise_share": n.dropped_noise,
               "nqm.target_fraction": res.target_fraction, "nqm.target_risk": res.target,
               "checkpoint.train_loss": res.checkpoint_loss, "checkpoint.val_loss": res.checkpoint_val_loss,
               "reference.attainable_val_loss": res.attainable_loss}
    scalars = {k: v for k, v in scalars.items() if math.isfinite(v)}
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
    """A metric-safe name of a method: ``momentum β=0.9`` → ``momentum_beta0.9``, ``momentum β
    tuned`` → ``momentum_beta_tuned``."""
    return method.replace("β=", "beta").replace("β", "beta").replace("p=", "p").replace(" ", "_")


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)
