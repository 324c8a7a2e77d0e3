"""A model's loss as a function of one flat parameter vector (torch.func), for Hessian-vector
products and per-example gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap


class FlatLoss:
    """``loss_fn(model(X), y)`` as a function of the model's parameters, flattened into one vector.

    The model's buffers stay as they are; :attr:`theta` is a detached copy of its parameters."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.model = model
        self.loss_fn = loss_fn
        named = [(n, p) for n, p in model.named_parameters()]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    @property
    def dim(self) -> int:
        return int(self.theta.numel())

    def params(self, flat: Tensor) -> dict[str, Tensor]:
        """The parameter dict of ``flat`` (views into it)."""
        return {n: t.reshape(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes, strict=True)}

    def loss(self, flat: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """The mean loss on (X, y) at parameters ``flat``."""
        return self.loss_fn(functional_call(self.model, self.params(flat), (X,)), y)

    def hvp(self, X: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        """v ↦ H v, H the Hessian of the mean loss on (X, y) at :attr:`theta` (forward-over-reverse)."""
        g = grad(lambda f: self.loss(f, X, y))
        theta = self.theta
        return lambda v: jvp(g, (theta,), (v.to(theta.dtype),))[1]

    def gradient(self, X: Tensor, y: Tensor) -> Tensor:
        """The gradient of the mean loss on (X, y) at :attr:`theta`."""
        return grad(lambda f: self.loss(f, X, y))(self.theta)

    def example_gradients(self, X: Tensor, y: Tensor, chunk_size: int | None = 256) -> Tensor:
        """Each example's gradient at :attr:`theta`, one row per example: ``(len(X), dim)``."""
        def one(flat: Tensor, x: Tensor, t: Tensor) -> Tensor:
            return self.loss(flat, x[None], t[None])

        return vmap(grad(one), in_dims=(None, 0, 0), chunk_size=chunk_size)(self.theta, X, y)
