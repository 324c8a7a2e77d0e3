"""The classifiers, stacked: K networks as one batched model. An MLP runs as batched matrix
products (``baddbmm``) with its gradients in closed form, any other network (the CNN) through
``torch.func`` (``functional_call`` under ``vmap``; a vmapped ``conv1d`` runs as one grouped
convolution) and autograd. All rows share one data
set (it depends only on the problem's parameters, which a stack shares); the cross-entropy, the
accuracies and the test split's metrics are computed for all rows at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.stacked import ModuleStack, StackContext, stack_rows


def accuracy_rows(logits: Tensor, y: Tensor) -> Tensor:
    """Each row's accuracy (a K-vector) from logits ``[K, N, C]`` and classes ``[K, N]``."""
    return (logits.argmax(dim=-1) == y).float().mean(dim=1)


def cross_entropy_rows(logits: Tensor, y: Tensor) -> Tensor:
    """Each row's mean cross-entropy (a K-vector) from logits ``[K, N, C]`` and classes ``[K, N]``."""
    K, N, C = logits.shape
    return F.cross_entropy(logits.reshape(K * N, C), y.reshape(K * N), reduction="none").view(K, N).mean(dim=1)


def mlp_layers(model: nn.Module, names: list[str]) -> list[tuple[int, int]] | None:
    """For an ``nn.Sequential`` of ``Linear`` layers with a ``ReLU`` between each two (the
    plugin's MLPs): the positions in ``names`` of each layer's weight and bias; else ``None``."""
    if not isinstance(model, nn.Sequential):
        return None
    kinds = [type(m) for m in model]
    expected = [nn.Linear if i % 2 == 0 else nn.ReLU for i in range(len(kinds))]
    if kinds != expected or len(kinds) % 2 == 0 or any(m.bias is None for m in model[::2]):
        return None
    return [(names.index(f"{j}.weight"), names.index(f"{j}.bias")) for j in range(0, len(kinds), 2)]


class ClassifierStack(ModuleStack):
    """:class:`suite_realdata.problems.Classifier` problems, stacked: ``val_acc`` at every
    evaluation, ``test_loss`` and ``test_acc`` when the rows complete, for all rows at once."""

    data_follows_seed = False  # the data depend on the problem's parameters only, never on the run seed

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        super().__init__(problems, stack)
        K = stack.size
        self.layers = mlp_layers(problems[0].model, self.names)
        self.X_test = stack_rows([problems[0].X_test], stack.device).expand(K, *problems[0].X_test.shape)
        self.y_test = stack_rows([problems[0].y_test], stack.device).expand(K, *problems[0].y_test.shape)
        self.X_val_rows, self.y_val_rows = self.X_val[self.data_row], self.y_val[self.data_row]
        self._val_cache: tuple[list[Tensor], list[int], Tensor] | None = None

    def outputs(self, params: Sequence[Tensor], X: Tensor) -> Tensor:
        if self.layers is None:
            return super().outputs(params, X)
        h = X
        for i, (w, b) in enumerate(self.layers):
            h = torch.baddbmm(params[b].unsqueeze(1), h, params[w].transpose(1, 2))
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    def loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """For an MLP in closed form (:meth:`mlp_loss_and_grads`); any other network: autograd."""
        if self.layers is None:
            return super().loss_and_grads(params, indices)
        return self.mlp_loss_and_grads(params, indices)

    @torch.no_grad()
    def mlp_loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The MLP's loss and gradients without autograd: d loss / d logits = (softmax − one-hot) / B,
        then back through each layer (``bmm``) and ReLU mask."""
        y = self.y[0][indices]
        inputs, h = [], self.X[0][indices]
        for i, (w, b) in enumerate(self.layers):
            inputs.append(h)
            h = torch.baddbmm(params[b].unsqueeze(1), h, params[w].transpose(1, 2))
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        logp = torch.log_softmax(h, dim=-1)
        target = y.unsqueeze(-1)
        loss = -logp.gather(-1, target).squeeze(-1).mean(dim=1)
        g = logp.exp().scatter_add_(-1, target, torch.full_like(logp[..., :1], -1.0)).div_(y.shape[1])
        grads: list[Tensor] = [torch.empty(0)] * len(params)
        for i in reversed(range(len(self.layers))):
            w, b = self.layers[i]
            grads[w], grads[b] = torch.bmm(g.transpose(1, 2), inputs[i]), g.sum(dim=1)
            if i > 0:
                g = torch.bmm(g, params[w]).mul_(inputs[i] > 0)
        return loss, grads

    def loss_on(self, params: Sequence[Tensor], X: Tensor, y: Tensor) -> Tensor:
        return cross_entropy_rows(self.outputs(params, X), y)

    def batch_loss(self, params: Sequence[Tensor], indices: Tensor) -> Tensor:
        return self.loss_on(params, self.X[0][indices], self.y[0][indices])  # one data set: no row gather

    def val_outputs(self, params: Sequence[Tensor]) -> Tensor:
        """The outputs on the validation split, computed once per evaluation for ``val_loss`` and
        ``val_acc`` (kept while ``params`` are the same tensors, unmodified: ``_version``)."""
        versions = [p._version for p in params]
        cached = self._val_cache
        if cached is None or len(cached[0]) != len(params) or cached[1] != versions or any(
                a is not b for a, b in zip(cached[0], params, strict=True)):
            # the cache holds the tensors themselves: a freed tensor's id cannot come back as a false hit
            cached = self._val_cache = (list(params), versions, self.outputs(params, self.X_val_rows))
        return cached[2]

    def val_loss(self, params: Sequence[Tensor]) -> Tensor:
        return cross_entropy_rows(self.val_outputs(params), self.y_val_rows)

    def model_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        return {"val_acc": accuracy_rows(self.val_outputs(params), self.y_val_rows)}

    def final_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        out = self.outputs(params, self.X_test)
        return {"test_loss": cross_entropy_rows(out, self.y_test), "test_acc": accuracy_rows(out, self.y_test)}


def classifier_stack(problems: Sequence[Any], stack: StackContext) -> ClassifierStack:
    """The stacked adapter of ``digits``, ``mnist1d_mlp`` and ``mnist1d_cnn``."""
    return ClassifierStack(problems, stack)
