"""Adam and AdamW, stacked: K rows, each with its own lr, betas, eps and weight decay."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from suite.stacked import StackContext, StackedOptimizer, per_row


class StackedAdam(StackedOptimizer):
    """``torch.optim.Adam`` (ℓ2 weight decay) or ``AdamW`` (decoupled: w ← (1 − αλ)w) for K rows,
    in torch's own arithmetic (its single-tensor path): the bias corrections and the step size in
    float64, as torch computes them on the host, everything else in the parameters' dtype."""

    def __init__(self, optimizers: Sequence[torch.optim.Adam], stack: StackContext) -> None:
        groups = [opt.param_groups[0] for opt in optimizers]  # each row's own torch optimizer
        if any(g["amsgrad"] or g["maximize"] for g in groups):
            raise ValueError("stacked Adam supports amsgrad=False and maximize=False only")
        self.decoupled = groups[0]["decoupled_weight_decay"]  # one component per block: Adam or AdamW

        def vec(key: str, i: int | None = None) -> Tensor:
            values = [g[key] if i is None else g[key][i] for g in groups]
            return torch.tensor(values, dtype=torch.float64, device=stack.device)

        self.beta1, self.beta2 = vec("betas", 0), vec("betas", 1)
        self.eps, self.weight_decay = vec("eps"), vec("weight_decay")
        self.steps = 0
        self.exp_avg: list[Tensor] = []
        self.exp_avg_sq: list[Tensor] = []

    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor], lr: Tensor) -> None:
        if not self.exp_avg:
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps += 1
        lr = lr.double()
        dtype = params[0].dtype  # the K-vectors below, in the parameters' dtype as torch casts them
        step_size = (lr / (1 - self.beta1**self.steps)).to(dtype)
        bias2_sqrt = (1 - self.beta2**self.steps).sqrt().to(dtype)
        decay = (1 - lr * self.weight_decay).to(dtype)
        l2, eps = self.weight_decay.to(dtype), self.eps.to(dtype)
        new1, keep2, new2 = (1 - self.beta1).to(dtype), self.beta2.to(dtype), (1 - self.beta2).to(dtype)
        for p, g, m, v in zip(params, grads, self.exp_avg, self.exp_avg_sq, strict=True):
            if self.decoupled:
                p.mul_(per_row(decay, p))
            else:
                g = g + per_row(l2, p) * p
            m.lerp_(g, per_row(new1, p))
            v.mul_(per_row(keep2, p)).add_(per_row(new2, p) * g * g)
            denom = (v.sqrt() / per_row(bias2_sqrt, p)).add_(per_row(eps, p))
            p.sub_(per_row(step_size, p) * (m / denom))


def adam_stack(optimizers: Sequence[torch.optim.Adam], stack: StackContext) -> StackedAdam:
    """The stacked adapter of ``adam`` and ``adamw``."""
    return StackedAdam(optimizers, stack)
