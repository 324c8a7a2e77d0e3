"""The plugin contract, checked: what preflight (``suite run``) and the conformance kit both verify.

Each check returns a one-line description of the violation with what to fix, or ``None`` (or an
empty list) when the object honours the contract. Preflight turns a violation into a one-line
error naming the component and its distribution (exit code 2); the kit into a failed check.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

from suite.problem import Problem

WEIGHTED_BATCH = "(indices, weights)"


def article(word: str) -> str:
    """``word`` with its indefinite article: ``an optimizer``, ``a sampler``."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def where(comp: Any) -> str:
    """How messages name a component: ``sampler 'bad' from my-dist``."""
    return f"{comp.family} {comp.name!r} from {comp.distribution}"


# -- factories ------------------------------------------------------------------------------
def signature_violation(comp: Any) -> str | None:
    """Whether ``comp.factory`` accepts ``factory(ctx, **declared hyperparameters)``."""
    try:
        sig = inspect.signature(comp.factory)
    except (TypeError, ValueError):  # a C callable: nothing to tell from here
        return None
    try:
        sig.bind(object(), **{p.name: p.default for p in comp.params})
    except TypeError as exc:
        declared = ", ".join(p.name for p in comp.params) or "none"
        called = ", ".join(["ctx", *(f"{p.name}=..." for p in comp.params)])
        return (f"its factory{sig} does not match its declared hyperparameters ({declared}): the engine calls "
                f"factory({called}) ({exc}); give the factory one argument per declared Param after ctx")
    return None


# -- sampler batches ------------------------------------------------------------------------
def _is_sequence(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() == 1
    return isinstance(x, (list, tuple, range)) or (hasattr(x, "__len__") and hasattr(x, "dtype")
                                                     and getattr(x, "ndim", 0) == 1)


def split_batch(batch: Any) -> tuple[Any, Any | None]:
    """A sampler's batch as ``(indices, weights)``; ``weights`` is ``None`` for a plain index list.

    A weighted batch is a pair ``(indices, weights)`` of two equally long sequences."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(_is_sequence(b) for b in batch):
        return batch[0], batch[1]
    return batch, None


def batch_violation(batch: Any, n: int) -> str | None:
    """Whether one sampler batch is a non-empty list of indices in ``[0, n)``, or a pair
    ``(indices, weights)`` with one finite, non-negative weight per index."""
    if isinstance(batch, int) or (isinstance(batch, torch.Tensor) and batch.dim() == 0):
        return (f"yields single indices ({batch!r}) instead of mini-batches: yield a list of indices per "
                "mini-batch, e.g. wrap the index sampler in torch.utils.data.BatchSampler")
    indices, weights = split_batch(batch)
    try:
        idx = torch.as_tensor(indices)
    except (TypeError, ValueError, RuntimeError):
        return (f"yields {type(batch).__name__} batches: yield a list of integer indices per mini-batch, "
                f"or a pair {WEIGHTED_BATCH}")
    if idx.dim() != 1 or idx.numel() == 0:
        return f"yields a batch of shape {tuple(idx.shape)}: each batch must be a non-empty list of indices"
    if idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.is_complex():
        return f"yields {idx.dtype} indices: indices must be integers"
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= n:
        return f"yields index {lo if lo < 0 else hi}, outside the training set [0, {n}); draw from range(ctx.n)"
    if weights is not None:
        try:
            w = torch.as_tensor(weights, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return f"yields weights of type {type(weights).__name__}: give one float weight per index"
        if w.shape != idx.shape:
            return f"yields {w.numel()} weights for {idx.numel()} indices: give one weight per index"
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            return "yields weights that are negative, NaN or infinite: weights must be finite and >= 0"
    return None


# -- problems -------------------------------------------------------------------------------
def problem_violations(problem: Problem) -> list[str]:
    """What a built problem gets wrong about data, validation and its known optimum/curvature."""
    out: list[str] = []
    params = list(problem.model.parameters())
    if problem.n_train is not None:
        exact_risk = type(problem).val_loss is not Problem.val_loss
        if not exact_risk and (problem.X_val is None or problem.y_val is None or len(problem.X_val) == 0):
            out.append("a finite problem needs a validation set (val=(X_val, y_val)) or an exact val_loss")
        if problem.y_train is None or len(problem.X_train) != len(problem.y_train):
            out.append("X_train and y_train have different lengths (one target per training example)")
    for label, seq in (("curvature", problem.curvature), ("optimum", problem.optimum)):
        if seq is None:
            continue
        if len(seq) != len(params):
            out.append(f"{label} has {len(seq)} tensors for {len(params)} parameters: give one per tensor of "
                       "model.parameters(), in that order")
            continue
        for i, (t, p) in enumerate(zip(seq, params, strict=True)):
            if not isinstance(t, torch.Tensor) or t.shape != p.shape:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                out.append(f"{label}[{i}] has shape {shape}, its parameter {tuple(p.shape)}: give one tensor of "
                           "the parameter's shape per tensor of model.parameters(), in that order")
                break
    if problem.true_params is not None:
        learned = set(problem.learned_params(problem.model))
        if set(problem.true_params) != learned:
            out.append(f"true_params has keys {sorted(problem.true_params)} but the learned parameters are "
                       f"{sorted(learned)}: use model.named_parameters() names (or override learned_params)")
    return out


def loss_violation(problem: Problem, batch_size: int) -> str | None:
    """Whether the loss of a small batch is a differentiable scalar reaching every parameter."""
    n = problem.n_train or batch_size
    idx = torch.arange(min(batch_size, n), device=next(problem.model.parameters()).device)
    loss = problem.batch_loss(problem.model, idx, torch.Generator().manual_seed(0))
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad):
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        return (f"batch_loss must return a differentiable scalar tensor, got {got} (does the loss fit the "
                "model's outputs and targets?)")
    grads = torch.autograd.grad(loss, list(problem.model.parameters()), allow_unused=True)
    if any(g is None for g in grads):
        return "the loss does not reach every model parameter"
    val = problem.val_loss(problem.model)
    if not (isinstance(val, float) and math.isfinite(val)):
        return f"val_loss must return a finite float, got {val!r}"
    return None


def lr_cap_violation(problem: Any, optimizers: Sequence[Any]) -> str | None:
    """Whether a problem's declared ``lr_cap`` (registered ``lr_cap=fn``), called at the defaults
    of the problem and of each of ``optimizers``, gives a positive, finite lr or None."""
    declared = problem.extra.get("lr_cap")
    if declared is None:
        return None
    params = {p.name: p.default for p in problem.params}
    for opt in optimizers:
        try:
            cap = declared(params, opt.name, {p.name: p.default for p in opt.params})
        except Exception as exc:  # a plugin's code: report whatever it raised
            return (f"lr_cap(problem params, {opt.name!r}, its params) raised {type(exc).__name__}: {exc}; "
                    "return None for an optimizer it does not know")
        if cap is not None and not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
            return f"lr_cap gave {cap!r} for optimizer {opt.name!r}: give a positive, finite lr, or None"
    return None


def first_batches(sampler: Any, limit: int = 8) -> Sequence[Any]:
    """The first ``limit`` batches of one epoch of ``sampler`` (for checking)."""
    out = []
    for batch in sampler:
        out.append(batch)
        if len(out) >= limit:
            break
    return out
