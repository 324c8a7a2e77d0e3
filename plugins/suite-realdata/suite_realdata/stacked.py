"""The classifiers, stacked: K networks as one batched model, with their gradients in closed form
(no autograd). An MLP runs as batched matrix products (``baddbmm``, feature-major); the 1-D CNN of
:func:`suite_realdata.models.cnn1d` as torch's convolutions grouped by row (K groups, one per
network, channels-last: oneDNN's grouped kernels), its backward through torch's own
``convolution_backward`` (the CNN's stack 1.5x faster than the same closed form as im2col batched
products, one thread, K=64, batch 64). Any other network runs through ``torch.func``
(``functional_call`` under ``vmap``) and autograd. All rows share one data set (it depends only
on the problem's parameters, which a stack shares); the cross-entropy, the accuracies and the test
split's metrics are computed for all rows at once.

``SUITE_STACKED_CLOSED_FORM=0`` turns the closed form off (:func:`closed_form_enabled`): the MLP
and the CNN then run through ``torch.func`` and autograd too, their stacks 1.6x (MLP of width 100)
and 2.2x (CNN) slower (``benchmarks/perf/networks.py``'s configurations, alternated, CPU time)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.stacked import ModuleStack, StackContext, stack_rows

CNN_CHUNK_SIGNALS = 4096  # rows x examples per CNN pass on a CPU: cnn_chunk
CNN_CHUNK_SIGNALS_ACCELERATOR = 1 << 20  # on an accelerator: bounds memory (a few KB of activations a signal)
CLOSED_FORM_ENV = "SUITE_STACKED_CLOSED_FORM"


def cnn_chunk(rows: int, device: torch.device) -> int:
    """Examples per pass of a stacked CNN of ``rows`` rows (a step or an evaluation over more is
    summed or joined over chunks). On a CPU, ``CNN_CHUNK_SIGNALS // rows``, so that a pass's
    activations stay in cache (alternated against a fixed 128 examples, one thread: K = 64 rows
    at batch 64 8% faster with 64 examples, at batch 256 16%; K = 256 at 16 examples 21% faster
    than at 64; K = 16: 64 and 256 alike); on an accelerator ``CNN_CHUNK_SIGNALS_ACCELERATOR //
    rows``, which bounds the activations' memory. At least 1."""
    budget = CNN_CHUNK_SIGNALS if device.type == "cpu" else CNN_CHUNK_SIGNALS_ACCELERATOR
    return max(1, budget // rows)


def closed_form_enabled() -> bool:
    """Whether the MLP and the CNN run in closed form (default); ``SUITE_STACKED_CLOSED_FORM=0``
    turns it off: every network then runs through ``torch.func`` and autograd, as any other."""
    return os.environ.get(CLOSED_FORM_ENV, "1").strip() != "0"


def accuracy_rows(logits: Tensor, y: Tensor) -> Tensor:
    """Each row's accuracy (a K-vector) from logits ``[K, N, C]`` and classes ``[K, N]``."""
    return (logits.argmax(dim=-1) == y).float().mean(dim=1)


def cross_entropy_rows(logits: Tensor, y: Tensor) -> Tensor:
    """Each row's mean cross-entropy (a K-vector) from logits ``[K, N, C]`` and classes ``[K, N]``."""
    K, N, C = logits.shape
    return F.cross_entropy(logits.reshape(K * N, C), y.reshape(K * N), reduction="none").view(K, N).mean(dim=1)


def cross_entropy_and_grad(logits: Tensor, y: Tensor, batch: int | None = None) -> tuple[Tensor, Tensor]:
    """Each row's cross-entropy summed over ``logits``' examples and divided by ``batch`` (a
    K-vector; default: their number, the mean) and its gradient with respect to ``logits``
    (``[K, B, C]``): (softmax − one-hot) / ``batch``."""
    n = y.shape[1] if batch is None else batch
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    target = y.unsqueeze(-1)
    loss = logp.gather(-1, target).squeeze(-1).sum(dim=1).div_(-n)
    g = logp.exp_().scatter_add_(-1, target, torch.full_like(logp[..., :1], -1.0)).div_(n)
    return loss, g


def relu_backward_(g: Tensor, out: Tensor) -> Tensor:
    """``g`` zeroed in place where the ReLU's output ``out`` is not positive (autograd's own ReLU
    backward, ``threshold_backward``, written into ``g``: 4x faster than into a new tensor)."""
    return torch.ops.aten.threshold_backward.grad_input(g, out, 0, grad_input=g)


def linear(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Each row's ``h[k] @ w[k].T + b[k]``: ``[K, N, in]`` → ``[K, N, out]``."""
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


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


@dataclass(frozen=True)
class Conv:
    """One ``Conv1d`` + ``ReLU`` of a stacked CNN: its parameters' positions and its geometry."""

    weight: int
    bias: int
    kernel: int
    stride: int
    padding: int


@dataclass(frozen=True)
class CnnLayout:
    """A CNN of :func:`suite_realdata.models.cnn1d`'s form: ``Unflatten`` to one channel,
    ``Conv1d`` + ``ReLU`` layers, ``Flatten``, a ``Linear`` read-out (weight, bias positions)."""

    convs: tuple[Conv, ...]
    readout: tuple[int, int]


def cnn_layout(model: nn.Module, names: list[str]) -> CnnLayout | None:
    """The :class:`CnnLayout` of ``model``, or ``None`` where it is not of that form (a dilated,
    grouped or bias-free convolution, a padding mode other than zeros, ...)."""
    if not isinstance(model, nn.Sequential) or len(model) < 5 or len(model) % 2 == 0:
        return None
    first, *body, flatten, last = list(model)
    if not (isinstance(first, nn.Unflatten) and first.dim == 1 and tuple(first.unflattened_size)[0] == 1
            and isinstance(flatten, nn.Flatten) and isinstance(last, nn.Linear) and last.bias is not None):
        return None
    convs = []
    for j in range(0, len(body), 2):
        conv, act = body[j], body[j + 1]
        if not (isinstance(conv, nn.Conv1d) and isinstance(act, nn.ReLU) and conv.bias is not None
                and conv.groups == 1 and conv.dilation == (1,) and conv.padding_mode == "zeros"
                and isinstance(conv.padding, tuple)):
            return None
        convs.append(Conv(names.index(f"{j + 1}.weight"), names.index(f"{j + 1}.bias"), conv.kernel_size[0],
                          conv.stride[0], conv.padding[0]))
    n = len(model) - 1
    return CnnLayout(tuple(convs), (names.index(f"{n}.weight"), names.index(f"{n}.bias")))


def grouped_input(X: Tensor) -> Tensor:
    """Each row's signals ``X`` (``[K, B, L]``) as the input of a convolution grouped by row:
    ``[B, K, 1, L]``, stored channels-last (``[B, 1, L, K]`` in memory)."""
    K, B, L = X.shape
    return X.permute(1, 2, 0).contiguous().view(B, 1, L, K).permute(0, 3, 1, 2)


def grouped_weight(w: Tensor) -> Tensor:
    """A stacked ``Conv1d`` weight ``[K, C_out, C_in, kernel]`` as the weight of the convolution
    grouped by row: ``[K * C_out, C_in, 1, kernel]``, channels-last."""
    K, out, c_in, k = w.shape
    return w.reshape(K * out, c_in, 1, k).contiguous(memory_format=torch.channels_last)


def rows_of(a: Tensor, K: int) -> Tensor:
    """A grouped activation ``[B, K * C, 1, L]`` (channels-last) as each row's flattened features
    ``[K, B, L * C]`` (position-major: :func:`readout_channels_last`'s order)."""
    B, KC, _, L = a.shape
    return a.permute(0, 2, 3, 1).reshape(B, L, K, KC // K).permute(2, 0, 1, 3).reshape(K, B, -1)


def grouped_of(h: Tensor, channels: int) -> Tensor:
    """The inverse of :func:`rows_of`: ``[K, B, L * C]`` → ``[B, K * C, 1, L]``, channels-last."""
    K, B, n = h.shape
    L = n // channels
    return h.view(K, B, L, channels).permute(1, 2, 0, 3).contiguous().view(B, 1, L, K * channels).permute(0, 3, 1, 2)


def readout_channels_last(w: Tensor, channels: int) -> Tensor:
    """The read-out weight ``[K, out, C * L]`` (``Flatten`` of ``[C, L]``) reordered for
    channels-last activations (``[K, out, L * C]``); its own inverse with ``channels`` = L."""
    K, out, n = w.shape
    return w.view(K, out, channels, n // channels).transpose(2, 3).reshape(K, out, n)


class ClassifierStack(ModuleStack):
    """:class:`suite_realdata.problems.Classifier` problems, stacked: ``val_acc`` at every
    evaluation, ``test_loss`` and ``test_acc`` when the rows complete, for all rows at once."""

    data_follows_seed = False  # the data depend on the problem's parameters only, never on the run seed

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        super().__init__(problems, stack)
        K = stack.size
        closed_form = closed_form_enabled()
        self.layers = mlp_layers(problems[0].model, self.names) if closed_form else None
        self.cnn = cnn_layout(problems[0].model, self.names) if closed_form else None
        # the whole stack's chunk, also when a step computes only some rows (shedding): the same sums
        self.chunk = cnn_chunk(K, torch.device(stack.device))
        # the closed forms read each row's parameters and examples only, from the one data set all rows
        # share (batch() reads X[0]): a subset of rows trains alike; not where the data follow the seed
        self.row_subsets = (self.layers is not None or self.cnn is not None) and not self.data_follows_seed
        self.X_test = stack_rows([problems[0].X_test], stack.device).expand(K, *problems[0].X_test.shape)
        self.y_test = stack_rows([problems[0].y_test], stack.device).expand(K, *problems[0].y_test.shape)
        self.X_val_rows, self.y_val_rows = self.X_val[self.data_row], self.y_val[self.data_row]
        self._val_cache: tuple[list[Tensor], list[int], Tensor] | None = None

    def outputs(self, params: Sequence[Tensor], X: Tensor) -> Tensor:
        if self.layers is not None:
            return self.mlp_forward(params, X)[-1].transpose(1, 2)
        if self.cnn is not None:  # in chunks of examples: their activations stay in cache
            n = self.chunk
            return torch.cat([self.cnn_forward(params, X[:, i:i + n])[2] for i in range(0, X.shape[1], n)], dim=1)
        return super().outputs(params, X)

    def loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """For an MLP or the CNN in closed form (:meth:`mlp_loss_and_grads`,
        :meth:`cnn_loss_and_grads`); any other network: autograd."""
        if self.layers is not None:
            return self.mlp_loss_and_grads(params, indices)
        if self.cnn is not None:
            return self.cnn_loss_and_grads(params, indices)
        return super().loss_and_grads(params, indices)

    def mlp_forward(self, params: Sequence[Tensor], X: Tensor) -> list[Tensor]:
        """The MLP's input, each hidden layer's ReLU output, and the logits, feature-major
        (``[K, features, N]``: each layer is ``W h + b``, a batched product whose result is as
        wide as the examples, several times faster than ``h Wᵀ`` for the 10 logits)."""
        assert self.layers is not None
        hs = [X.transpose(1, 2)]
        for i, (w, b) in enumerate(self.layers):
            h = torch.baddbmm(params[b].unsqueeze(2), params[w], hs[-1])
            hs.append(torch.relu_(h) if i < len(self.layers) - 1 else h)
        return hs

    @torch.no_grad()
    def mlp_loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The MLP's loss and gradients without autograd: d loss / d logits = (softmax − one-hot) / B,
        then back through each layer (``bmm``) and ReLU, feature-major (:meth:`mlp_forward`)."""
        assert self.layers is not None
        X, y = self.batch(indices)
        hs = self.mlp_forward(params, X)
        loss, g = cross_entropy_and_grad(hs[-1].transpose(1, 2), y)
        g = g.transpose(1, 2)  # [K, out, B]
        grads: list[Tensor] = [torch.empty(0)] * len(params)
        for i in reversed(range(len(self.layers))):
            w, b = self.layers[i]
            grads[w], grads[b] = torch.bmm(g, hs[i].transpose(1, 2)), g.sum(dim=2)
            if i > 0:
                g = relu_backward_(torch.bmm(params[w].transpose(1, 2), g), hs[i])
        return loss, grads

    def cnn_forward(self, params: Sequence[Tensor], X: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """The CNN on signals ``X`` (``[K, B, L]``), its convolutions grouped by row
        (:func:`grouped_input`): each convolution's input and the last one's ReLU output (grouped,
        channels-last), the grouped weights, and the logits (``[K, B, out]``)."""
        assert self.cnn is not None
        K = X.shape[0]
        acts, weights = [grouped_input(X)], []
        for conv in self.cnn.convs:
            w = grouped_weight(params[conv.weight])
            out = F.conv2d(acts[-1], w, params[conv.bias].reshape(-1), stride=(1, conv.stride),
                           padding=(0, conv.padding), groups=K)
            acts.append(torch.relu_(out))
            weights.append(w)
        w, b = self.cnn.readout
        C = params[self.cnn.convs[-1].weight].shape[1]
        return acts, weights, linear(rows_of(acts[-1], K), readout_channels_last(params[w], C), params[b])

    @torch.no_grad()
    def cnn_loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The CNN's loss and gradients without autograd, summed over chunks of :func:`cnn_chunk`
        examples (a large batch's activations would not stay in cache): :meth:`cnn_chunk_grads`."""
        X, y = self.batch(indices)
        B = X.shape[1]
        n = self.chunk
        loss, grads = self.cnn_chunk_grads(params, X[:, :n], y[:, :n], B)
        for i in range(n, B, n):
            more, more_grads = self.cnn_chunk_grads(params, X[:, i:i + n], y[:, i:i + n], B)
            loss.add_(more)
            for g, m in zip(grads, more_grads, strict=True):
                g.add_(m)
        return loss, grads

    def cnn_chunk_grads(self, params: Sequence[Tensor], X: Tensor, y: Tensor,
                        batch: int) -> tuple[Tensor, list[Tensor]]:
        """The share of examples ``X``, ``y`` in the loss and gradients of a batch of ``batch``:
        the read-out as an MLP's last layer, then each ReLU and convolution backward through
        torch's own grouped convolution backward (``aten.convolution_backward``)."""
        assert self.cnn is not None
        K = X.shape[0]
        acts, weights, logits = self.cnn_forward(params, X)
        loss, g = cross_entropy_and_grad(logits, y, batch)
        grads: list[Tensor] = [torch.empty(0)] * len(params)
        w, b = self.cnn.readout
        C = params[self.cnn.convs[-1].weight].shape[1]
        wl = readout_channels_last(params[w], C)
        h = rows_of(acts[-1], K)
        grads[w] = readout_channels_last(torch.bmm(g.transpose(1, 2), h), h.shape[2] // C)
        grads[b] = g.sum(dim=1)
        g = grouped_of(torch.bmm(g, wl), C)
        for i in reversed(range(len(self.cnn.convs))):
            conv, weight = self.cnn.convs[i], params[self.cnn.convs[i].weight]
            g = relu_backward_(g, acts[i + 1])
            g, gw, gb = torch.ops.aten.convolution_backward(
                g, acts[i], weights[i], [g.shape[1]], (1, conv.stride), (0, conv.padding), (1, 1), False, (0, 0), K,
                (i > 0, True, True))
            grads[conv.weight] = gw.reshape(weight.shape)
            grads[conv.bias] = gb.view(K, -1)
        return loss, grads

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Each row's batch, ``indices`` (``[K, B]``) into the one data set the rows share:
        inputs ``[K, B, features]`` and classes ``[K, B]`` (``index_select``: 4x faster than indexing)."""
        flat = indices.reshape(-1)
        X, y = self.X[0], self.y[0]
        return X.index_select(0, flat).view(*indices.shape, *X.shape[1:]), y.index_select(0, flat).view(indices.shape)

    def loss_on(self, params: Sequence[Tensor], X: Tensor, y: Tensor) -> Tensor:
        return cross_entropy_rows(self.outputs(params, X), y)

    def batch_loss(self, params: Sequence[Tensor], indices: Tensor) -> Tensor:
        return self.loss_on(params, *self.batch(indices))

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
