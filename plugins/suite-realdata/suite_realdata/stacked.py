"""The classifiers, stacked: K networks as one ``torch.func`` model (``functional_call`` under
``vmap``; a vmapped ``conv1d`` runs as one grouped convolution). All rows share one data set
(it depends only on the problem's parameters, which a stack shares), and the accuracies and the
test split's metrics are computed for all rows at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from suite.stacked import ModuleStack, StackContext, stack_rows


def accuracy_rows(logits: Tensor, y: Tensor) -> Tensor:
    """Each row's accuracy (a K-vector) from logits ``[K, N, C]`` and classes ``[K, N]``."""
    return (logits.argmax(dim=-1) == y).float().mean(dim=1)


class ClassifierStack(ModuleStack):
    """:class:`suite_realdata.problems.Classifier` problems, stacked: ``val_acc`` at every
    evaluation, ``test_loss`` and ``test_acc`` when the rows complete, for all rows at once."""

    data_follows_seed = False  # the data depend on the problem's parameters only, never on the run seed

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        super().__init__(problems, stack)
        K = stack.size
        self.X_test = stack_rows([problems[0].X_test], stack.device).expand(K, *problems[0].X_test.shape)
        self.y_test = stack_rows([problems[0].y_test], stack.device).expand(K, *problems[0].y_test.shape)
        self.X_val_rows, self.y_val_rows = self.X_val[self.data_row], self.y_val[self.data_row]

    def val_loss(self, params: Sequence[Tensor]) -> Tensor:
        return self.loss_on(params, self.X_val_rows, self.y_val_rows)

    def model_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        return {"val_acc": accuracy_rows(self.outputs(params, self.X_val_rows), self.y_val_rows)}

    def final_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        out = self.outputs(params, self.X_test)
        loss = F.cross_entropy(out.transpose(1, 2), self.y_test, reduction="none").mean(dim=1)
        return {"test_loss": loss, "test_acc": accuracy_rows(out, self.y_test)}


def classifier_stack(problems: Sequence[Any], stack: StackContext) -> ClassifierStack:
    """The stacked adapter of ``digits``, ``mnist1d_mlp`` and ``mnist1d_cnn``."""
    return ClassifierStack(problems, stack)
