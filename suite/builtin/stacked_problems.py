"""Stacked implementations of the built-in problems (:mod:`suite.stacked`).

``linreg`` and ``logistic`` run as batched matrix products (``baddbmm``), ``mean`` and ``nqm``
in closed form, ``mlp`` through ``torch.func`` (:class:`suite.stacked.ModuleStack`). Each row
keeps its own data (rows sharing a seed share it), initialisation and noise generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.stacked import ModuleStack, StackContext, StackedProblem, learned_through_model, stack_rows
from suite.theory import MomentTracker


def stack_optima(problems: Sequence[Any], device: torch.device) -> tuple[list[Tensor] | None, set[int]]:
    """Each row's optimum stacked (rows without one hold another row's, and are listed as missing)."""
    optima = [p.optimum for p in problems]
    missing = {r for r, o in enumerate(optima) if o is None}
    known = [o for o in optima if o is not None]
    if not known:
        return None, missing
    fill = known[0]
    return [stack_rows([(o if o is not None else fill)[i] for o in optima], device) for i in range(len(fill))], missing


def dist_rows(params: Sequence[Tensor], optimum: Sequence[Tensor] | None) -> Tensor | None:
    """Each row's Euclidean distance to its optimum (per-parameter sums in float32, as the loop)."""
    if optimum is None:
        return None
    sq = sum(((p - o) ** 2).reshape(len(p), -1).sum(1).double() for p, o in zip(params, optimum, strict=True))
    return sq.sqrt()


def accuracy_rows(out: Tensor, y: Tensor) -> Tensor:
    """Each row's classification accuracy (one logit: binary at 0; else the arg-max)."""
    pred = (out > 0).to(y.dtype) if out.shape[-1] == 1 else out.argmax(dim=-1)
    return (pred == y).float().reshape(len(out), -1).mean(1)


class ModuleProblemStack(ModuleStack):
    """The built-in ``nn.Module`` problems (``mlp``): :class:`ModuleStack` plus ``val_acc`` for
    classification problems."""

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        super().__init__(problems, stack)
        self.classify = getattr(problems[0], "is_classifier", False)

    def model_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        if not self.classify:
            return {}
        return {"val_acc": accuracy_rows(self.outputs(params, self.X_val[self.data_row]), self.y_val[self.data_row])}


class LinearStack(ModuleProblemStack):
    """``linreg`` and ``logistic``: K linear models ``nn.Linear(d, 1)`` as one ``baddbmm``."""

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        super().__init__(problems, stack)
        loss = problems[0].loss_fn
        if isinstance(loss, nn.MSELoss):
            self.elementwise = F.mse_loss
        elif isinstance(loss, nn.BCEWithLogitsLoss):
            self.elementwise = F.binary_cross_entropy_with_logits
        else:
            raise TypeError(f"LinearStack stacks MSE or BCE-with-logits problems, not {type(loss).__name__}")
        n = self.X.shape[1]
        self.X_flat, self.y_flat = self.X.reshape(-1, self.X.shape[-1]), self.y.reshape(len(self.y) * n, -1)
        self.row_offset = (self.data_row * n)[:, None]
        self.X_val_rows, self.y_val_rows = self.X_val[self.data_row], self.y_val[self.data_row]

    def outputs(self, params: Sequence[Tensor], X: Tensor) -> Tensor:
        weight, bias = params  # [K, 1, d], [K, 1]; X: [K, N, d]
        return torch.bmm(X, weight.transpose(1, 2)) + bias[:, None, :]

    def _linear_loss(self, params: Sequence[Tensor], X: Tensor, y: Tensor) -> Tensor:
        out = self.outputs(params, X)
        return self.elementwise(out, y, reduction="none").reshape(len(out), -1).mean(1)

    def _batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        flat = (indices + self.row_offset).reshape(-1)  # index_select: far cheaper than 2-d advanced indexing
        K, B = indices.shape
        return self.X_flat.index_select(0, flat).view(K, B, -1), self.y_flat.index_select(0, flat).view(K, B, -1)

    def batch_loss(self, params: Sequence[Tensor], indices: Tensor) -> Tensor:
        return self._linear_loss(params, *self._batch(indices))

    @torch.no_grad()
    def loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """In closed form (no autograd): d loss / d out is 2(out − y)/N (MSE) or (σ(out) − y)/N (BCE)."""
        X, y = self._batch(indices)
        out = self.outputs(params, X)
        loss = self.elementwise(out, y, reduction="none").reshape(len(out), -1).mean(1)
        n = out[0].numel()
        g = (out - y) * (2 / n) if self.elementwise is F.mse_loss else (torch.sigmoid(out) - y) / n
        return loss, [torch.bmm(g.transpose(1, 2), X), g.sum(1)]

    def val_loss(self, params: Sequence[Tensor]) -> Tensor:
        return self._linear_loss(params, self.X_val_rows, self.y_val_rows)


def linear_stack(problems: Sequence[Any], stack: StackContext) -> StackedProblem:
    """Stacked ``linreg`` / ``logistic``."""
    return LinearStack(problems, stack)


def module_problem_stack(problems: Sequence[Any], stack: StackContext) -> StackedProblem:
    """Stacked ``mlp``."""
    return ModuleProblemStack(problems, stack)


class MeanStack(StackedProblem):
    """``mean``: ½‖w − x‖² per row; the validation loss is each row's exact population risk."""

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        super().__init__()
        device = stack.device
        self.problems = list(problems)
        self.names = ["w"]
        self.params = [stack_rows([p.model.w for p in problems], device)]
        reps, self.data_row = stack.data_rows()
        self.X = stack_rows([problems[r].X_train for r in reps], device)
        self.mu = stack_rows([p.true_params["w"] for p in problems], device)
        self.noise_risk = 0.5 * self.mu.shape[1] * problems[0].sigma ** 2
        self.optimum, self.missing["dist_to_opt"] = stack_optima(problems, device)

    def batch_loss(self, params: Sequence[Tensor], indices: Tensor) -> Tensor:
        (w,) = params
        x = self.X[self.data_row[:, None], indices]
        return 0.5 * ((w[:, None, :] - x) ** 2).sum(-1).mean(-1)

    def val_loss(self, params: Sequence[Tensor]) -> Tensor:
        (w,) = params
        return (0.5 * ((w - self.mu) ** 2).sum(-1)).double() + self.noise_risk

    def dist_to_opt(self, params: Sequence[Tensor]) -> Tensor | None:
        return dist_rows(params, self.optimum)

    def learned_params(self, params: Sequence[Tensor], row: int) -> dict[str, Tensor]:
        return learned_through_model(self.problems[row], params, row)


def mean_stack(problems: Sequence[Any], stack: StackContext) -> StackedProblem:
    """Stacked ``mean``."""
    return MeanStack(problems, stack)


class NQMStack(StackedProblem):
    """``nqm``: θ per row, each row's gradient noise drawn from its own generator exactly as
    the per-run problem draws it, and ``theory_risk`` from one :class:`MomentTracker` whose
    moments are ``[rows, dim]`` tensors on the device."""

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        from suite.builtin.nqm import NQMTheory

        super().__init__()
        device = stack.device
        self.problems = list(problems)
        first = problems[0]
        self.names = ["theta"]
        self.params = [stack_rows([p.model.theta for p in problems], device)]
        self.h = first.h.to(device)
        self.centred = all(p.centred for p in problems)
        self.star = stack_rows([p.optimum[0] for p in problems], device)
        self.noise_scale = (first.c_cpu / stack.ctxs[0].batch_size).sqrt()
        self.generators = [c.generator for c in stack.ctxs]
        self.eps = torch.empty(len(problems), *first.h.shape, dtype=torch.float64)  # on the generators' device
        self.draws = list(self.eps.unbind(0))
        self.device = device
        theories = [NQMTheory.for_run(p, c) for p, c in zip(problems, stack.ctxs, strict=True)]
        self.theory_rows = [r for r, t in enumerate(theories) if t is not None]
        others = set(range(len(problems))) - set(self.theory_rows)
        self.missing = {"theory_risk": others, "theory_avg_risk": set(others)}
        self.tracker = None
        if self.theory_rows:
            live = [theories[r] for r in self.theory_rows]
            self.blends = [t.blend for t in live]
            self.tracker = _stacked_tracker([t.tracker for t in live], device)
            self.theory_index = torch.tensor(self.theory_rows, device=device)
            self.every_row = len(self.theory_rows) == len(problems)
            # rows without an iterate average (a stack may mix averagers) have no averaged risk
            self.missing["theory_avg_risk"] |= {r for r, t in zip(self.theory_rows, live, strict=True)
                                                if not t.tracker.average}

    def noise(self, theta: Tensor) -> Tensor:
        """This step's gradient noise ε (``[K, dim]``), each row's from its own generator: the
        values ``torch.randn`` draws, drawn in place into one buffer (a tensor per row and a
        ``torch.stack`` cost half as much again at 16 rows)."""
        for row, g in zip(self.draws, self.generators, strict=True):
            row.normal_(generator=g)
        return (self.eps * self.noise_scale).to(device=self.device, dtype=theta.dtype, non_blocking=True)

    def _loss(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """This step's loss ½ Σ h (θ − θ*)² + ε·θ per row, with θ − θ* and ε."""
        eps = self.noise(theta)
        d = theta if self.centred else theta - self.star
        return 0.5 * (self.h * d**2).sum(-1) + (eps * theta).sum(-1), d, eps

    def batch_loss(self, params: Sequence[Tensor], indices: Tensor) -> Tensor:
        return self._loss(params[0])[0]

    @torch.no_grad()
    def loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """:meth:`batch_loss` and its gradient h (θ − θ*) + ε in closed form, the values autograd
        gives (its ½·h·2(θ − θ*) scales by powers of two only), without building its graph (the
        whole step of a 16-row NQM stack of 100 dimensions takes two thirds of autograd's time)."""
        loss, d, eps = self._loss(params[0])
        return loss, [self.h * d + eps]

    def val_loss(self, params: Sequence[Tensor]) -> Tensor:
        (theta,) = params
        if self.centred:
            return 0.5 * (self.h * theta.double() ** 2).sum(-1)
        return 0.5 * (self.h.double() * (theta.double() - self.star.double()) ** 2).sum(-1)

    def dist_to_opt(self, params: Sequence[Tensor]) -> Tensor | None:
        (theta,) = params
        return ((theta - self.star) ** 2).sum(-1).double().sqrt()

    def on_step(self, step: int, lr: Tensor) -> None:
        if self.tracker is None:
            return
        rates = (lr if self.every_row else lr[self.theory_index])[:, None]
        on_host = isinstance(self.tracker.xx, np.ndarray)
        if on_host:
            rates = rates.numpy()
        if not self.tracker.average:  # no iterate average to blend into
            MomentTracker.step(self.tracker, rates)
            return
        blend = [b(step) for b in self.blends]
        if on_host:
            MomentTracker.step(self.tracker, rates, np.array(blend)[:, None])
        else:
            blend_t = torch.tensor(blend, dtype=torch.float64).to(self.device, non_blocking=True)
            MomentTracker.step(self.tracker, rates, blend_t[:, None])

    def _risk_rows(self, moment: Any) -> Tensor:
        """½ Σ h·``moment`` of each theory row, summed by torch (on the host's arrays too)."""
        hm = self.tracker.h * moment
        return 0.5 * (torch.from_numpy(hm) if isinstance(hm, np.ndarray) else hm).sum(-1)

    def extra_metrics(self, params: Sequence[Tensor], step: int) -> dict[str, Tensor]:
        if self.tracker is None:
            return {}
        K = len(self.problems)
        risk = torch.full((K,), float("nan"), dtype=torch.float64, device=self.device)
        risk[self.theory_index] = self._risk_rows(self.tracker.xx).to(self.device)
        out = {"theory_risk": risk}
        if self.tracker.average:
            avg = torch.full((K,), float("nan"), dtype=torch.float64, device=self.device)
            avg[self.theory_index] = self._risk_rows(self.tracker.yy).to(self.device)
            out["theory_avg_risk"] = avg
        return out

    def learned_params(self, params: Sequence[Tensor], row: int) -> dict[str, Tensor]:
        return learned_through_model(self.problems[row], params, row)


MOMENT_FIELDS = ("h", "noise_var", "h_eff", "scale", "xx", "mm", "xm", "yy", "xy", "my")


def _stacked_tracker(trackers: Sequence[MomentTracker], device: torch.device) -> MomentTracker:
    """One :class:`MomentTracker` whose arrays are ``[rows, dim]`` float64 arrays: NumPy's on a
    CPU (a step of 16 rows × 100 dimensions in half torch's time: a small array's operation costs
    NumPy less), tensors on ``device`` elsewhere. Its ``step`` is plain elementwise arithmetic, so
    the per-run formulas run unchanged, with the same values either way."""
    stacked = MomentTracker.__new__(MomentTracker)
    on_host = torch.device(device).type == "cpu"
    for name in MOMENT_FIELDS:
        array = np.stack([np.broadcast_to(np.asarray(getattr(t, name), dtype=np.float64), t.h.shape)
                          for t in trackers])
        setattr(stacked, name, array if on_host else torch.tensor(array, dtype=torch.float64, device=device))
    beta = np.array([t.beta for t in trackers], dtype=np.float64)[:, None]
    stacked.beta = beta if on_host else torch.tensor(beta, device=device)
    stacked.average = any(t.average for t in trackers)  # rows without one run it with γ = 1; it is not reported
    stacked.steps = 0
    return stacked


def nqm_stack(problems: Sequence[Any], stack: StackContext) -> StackedProblem:
    """Stacked ``nqm``."""
    return NQMStack(problems, stack)
