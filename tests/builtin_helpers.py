"""Helpers for the built-in component tests: build components as the engine does."""

from __future__ import annotations

from typing import Any

import torch

from suite.engine.loop import build
from suite.registry import get_registry
from suite.specs.spec import resolve_spec


def spec_of(components: dict[str, str] | None = None, overrides: dict[str, Any] | None = None,
            batch_size: int = 8, seed: int = 0, epochs: int | None = None, steps: int | None = None,
            eval_every: int | None = None):
    """A resolved RunSpec (default budget: 1 epoch, or the given steps)."""
    if epochs is None and steps is None:
        epochs = 1
    return resolve_spec(get_registry(), components=components, overrides=overrides, batch_size=batch_size,
                        seed=seed, epochs=epochs, steps=steps, eval_every=eval_every)


def built(components=None, overrides=None, **kw):
    """The engine's Built for a spec (problem, sampler, optimizer, scheduler, averager)."""
    return build(spec_of(components, overrides, **kw), "cpu")


def full_grad(problem, model) -> list[torch.Tensor]:
    """Gradient of the training loss over the whole training set."""
    model.zero_grad()
    idx = torch.arange(problem.n_train)
    problem.batch_loss(model, idx, None).backward()
    return [p.grad.detach().clone() for p in model.parameters()]
