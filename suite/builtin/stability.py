"""The NQM's learning-rate stability cap, declared with its registration (``lr_cap=``).

On the NQM (h_i = 1/i, i = 1..dim) each coordinate of the built-in optimizers is a linear
recursion in θ_i (and the momentum buffer) with effective curvature e_i = (h_i + λ)·h_i^(−p)
(weight decay λ adds to the curvature; ``precond`` multiplies the gradient by h^(−p), p = 0 for
``sgd``). The recursion is stable iff α·max_i e_i is below

* 2 for plain SGD and preconditioning;
* 2(1+β) for heavy-ball momentum β (``shared/reference/nqm.md``);
* 2(1+β)/(1+2β) for Nesterov momentum (``torch.optim.SGD(nesterov=True)``: its iteration
  matrix on (θ, αv) has trace 1+β−a(1+β) and determinant β(1−a), a = α e_i; Jury's conditions
  give a < 2(1+β)/(1+2β) and a < 1 + 1/β, the first binding).

The gradient noise does not change where the mean diverges, so the cap does not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def nqm_lr_cap(problem: Mapping[str, Any], optimizer: str, params: Mapping[str, Any]) -> float | None:
    """The largest stable lr of ``optimizer`` (``sgd`` or ``precond``, with its hyperparameters
    ``params``) on the NQM with hyperparameters ``problem``; None for another optimizer."""
    if optimizer not in ("sgd", "precond"):
        return None
    dim = int(problem["dim"])
    p = float(params.get("p", 0.0)) if optimizer == "precond" else 0.0
    wd = float(params.get("weight_decay", 0.0) or 0.0)
    beta = float(params.get("momentum", 0.0) or 0.0)
    # e(h) = h^(1-p) + λ h^(-p) over h in {1/i}: convex in log h, so its maximum is at an end
    e_max = max((h + wd) * h ** (-p) for h in (1.0, 1.0 / dim))
    if params.get("nesterov") and beta > 0:
        return 2 * (1 + beta) / (1 + 2 * beta) / e_max
    return 2 * (1 + beta) / e_max
