"""The Problem: the one type of our own in the plugin contract.

A problem bundles data, a model, a loss and what it knows about itself (its optimum,
its curvature, its true parameters). Everything else in a run is a torch type.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


class Problem:
    """A training problem.

    Finite problems hold a training set ``(X_train, y_train)`` and a validation set
    ``(X_val, y_val)``; the loss of a mini-batch is ``loss_fn(model(X[idx]), y[idx])``.
    Problems without a finite data set (``n_train is None``, e.g. the noisy quadratic model)
    override :meth:`batch_loss` and :meth:`val_loss`; their budget is in steps.

    Optional knowledge, ``None`` where unknown:

    * ``curvature``: per parameter tensor, the diagonal of the Hessian (for preconditioning);
    * ``optimum``: per parameter tensor, the minimiser (for ``dist_to_opt``);
    * ``true_params``: name -> tensor, the generating parameters (printed against the learned).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        train: tuple[Tensor, Tensor] | None = None,
        val: tuple[Tensor, Tensor] | None = None,
        *,
        curvature: Sequence[Tensor] | None = None,
        optimum: Sequence[Tensor] | None = None,
        true_params: dict[str, Tensor] | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.X_train, self.y_train = train if train is not None else (None, None)
        self.X_val, self.y_val = val if val is not None else (None, None)
        self.curvature = list(curvature) if curvature is not None else None
        self.optimum = list(optimum) if optimum is not None else None
        self.true_params = dict(true_params) if true_params is not None else None

    @property
    def n_train(self) -> int | None:
        """Number of training examples, or ``None`` for a problem without a finite data set."""
        return None if self.X_train is None else len(self.X_train)

    def to(self, device: torch.device | str) -> Problem:
        """Move data, model and known tensors to ``device`` (in place); returns ``self``."""
        self.model.to(device)
        for attr in ("X_train", "y_train", "X_val", "y_val"):
            t = getattr(self, attr)
            if t is not None:
                setattr(self, attr, t.to(device))
        if self.curvature is not None:
            self.curvature = [c.to(device) for c in self.curvature]
        if self.optimum is not None:
            self.optimum = [o.to(device) for o in self.optimum]
        return self

    def batch_loss(self, model: nn.Module, indices: Tensor, generator: torch.Generator | None) -> Tensor:
        """Mean loss of ``model`` on the training examples ``indices`` (a differentiable scalar).

        ``generator`` is the run's sampling-noise generator, for problems whose stochastic
        gradient is not a data-set sample.
        """
        return self.loss_fn(model(self.X_train[indices]), self.y_train[indices])

    def example_losses(self, model: nn.Module, indices: Tensor, generator: torch.Generator | None) -> Tensor:
        """Each example's loss (a differentiable vector of ``len(indices)``) whose mean is
        :meth:`batch_loss`; the engine weights it for a weighted sampler (``mean(w * losses)``).

        Default: ``loss_fn`` with ``reduction="none"`` when it is a torch loss module (averaged
        over each example's outputs), else ``loss_fn`` applied to each example alone
        (``torch.func.vmap``). A problem that overrides :meth:`batch_loss` on a finite data set
        overrides this too, or it cannot take weighted samplers."""
        X, y = self.X_train[indices], self.y_train[indices]
        out = model(X)
        fn = self.loss_fn
        if isinstance(fn, nn.modules.loss._Loss) and getattr(fn, "reduction", None) == "mean":
            per = copy.copy(fn)
            per.reduction = "none"
            return per(out, y).reshape(len(indices), -1).mean(dim=1)
        return torch.func.vmap(lambda o, t: fn(o[None], t[None]))(out, y)

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        """Validation loss of ``model`` (the lecture's stand-in for the population risk)."""
        return float(self.loss_fn(model(self.X_val), self.y_val))

    @torch.no_grad()
    def dist_to_opt(self, model: nn.Module) -> float | None:
        """Euclidean distance from ``model``'s parameters to the optimum, if known."""
        if self.optimum is None:
            return None
        sq = sum(float(((p - o) ** 2).sum()) for p, o in zip(model.parameters(), self.optimum, strict=True))
        return sq**0.5

    def on_step(self, step: int, context: Any) -> None:
        """Called by the engine after each optimizer step (and the averager's update), before the
        scheduler steps; ``step`` counts the steps taken so far and ``context`` is the run's
        :class:`suite.BuildContext`, so ``context.optimizer.param_groups`` hold the lr this step
        used. Default: nothing (the NQM follows its theoretical risk here)."""

    def model_metrics(self, model: nn.Module) -> dict[str, float]:
        """Metrics of a model alone (e.g. ``val_acc``), logged at each evaluation for the model
        and, with an ``avg_`` prefix (``avg_val_acc``), for the averaged model. Default: none."""
        return {}

    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        """Metrics of the trained model reported once, when the run completes (e.g. the loss and
        accuracy on a held-out test split that neither training nor tuning looks at), and with an
        ``avg_`` prefix for the averaged model. Default: none."""
        return {}

    def extra_metrics(self, model: nn.Module, step: int, context: Any) -> dict[str, float]:
        """Metrics of the run rather than of a model (e.g. the NQM's theoretical risk), logged at
        each evaluation; the averaged model does not get them. Default: none."""
        return {}

    def sgd_steps_to_target(self, batch_size: int, target: float) -> float | None:
        """The fewest steps plain constant-lr SGD at ``batch_size`` needs to bring the expected
        risk to ``target`` (its best lr; ``inf`` if no lr does), where the problem knows it in
        closed form; ``steps:auto`` budgets from it (:func:`suite.tuning.budget.auto_budget`).
        Default: ``None``, unknown."""
        return None

    def learned_params(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's parameters under the same names as ``true_params`` (for the summary)."""
        return {name: p.detach().cpu() for name, p in model.named_parameters()}
