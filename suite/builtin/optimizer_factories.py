"""Built-in optimizers: ``sgd`` (torch.optim.SGD) and ``precond`` (diagonal preconditioning).

Registered in :mod:`suite.builtin.optimizers` (lazily: this module imports torch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from suite import BuildContext
from suite.errors import SpecError


def make_sgd(ctx: BuildContext, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.SGD:
    if nesterov and momentum == 0:
        raise SpecError("optimizer.nesterov=true needs optimizer.momentum > 0")
    return torch.optim.SGD(
        ctx.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


class DiagonalPreconditioned(torch.optim.Optimizer):
    """Diagonally preconditioned SGD: w ← w − α P⁻¹ g with P = diag(h)^p.

    ``curvature`` holds one tensor h per parameter (same shapes). With weight decay λ and
    heavy-ball momentum β, as ``torch.optim.SGD`` does them::

        g ← ∇L + λw,   m ← βm + P⁻¹g (m = P⁻¹g at the first step),   w ← w − α m

    p = 0 is plain SGD; p = 1 divides by the curvature itself (Newton's step on a diagonal
    quadratic).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        curvature: Sequence[Tensor],
        lr: float = 0.01,
        p: float = 0.5,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        params = list(params)
        curvature = list(curvature)
        if len(params) != len(curvature) or any(x.shape != h.shape for x, h in zip(params, curvature, strict=True)):
            raise SpecError("optimizer 'precond': the problem's curvature does not match its parameters' shapes")
        if p > 0 and any(bool((h <= 0).any()) for h in curvature):
            raise SpecError("optimizer 'precond': the problem's curvature has entries <= 0; use optimizer.p=0")
        super().__init__(params, dict(lr=lr, p=p, momentum=momentum, weight_decay=weight_decay))
        for x, h in zip(params, curvature, strict=True):
            self.state[x]["inv_precond"] = h.detach().to(x.device, x.dtype) ** -p

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
            for x in group["params"]:
                if x.grad is None:
                    continue
                state = self.state[x]
                g = x.grad.add(x, alpha=wd) if wd else x.grad
                u = g * state["inv_precond"]
                if beta:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = u.clone()
                    else:
                        buf.mul_(beta).add_(u)
                    u = buf
                x.add_(u, alpha=-lr)
        return loss


def make_precond(
    ctx: BuildContext, lr: float, p: float, momentum: float, weight_decay: float
) -> DiagonalPreconditioned:
    problem = ctx.problem
    if problem is None or problem.curvature is None:
        name = ctx.spec.problem if ctx.spec is not None else "this problem"
        raise SpecError(
            f"optimizer 'precond' needs the problem's curvature, and problem {name!r} has none; "
            f"use a problem that exposes it (nqm, linreg, logistic, mean) or another optimizer"
        )
    return DiagonalPreconditioned(ctx.model.parameters(), problem.curvature, lr=lr, p=p, momentum=momentum,
                                  weight_decay=weight_decay)
