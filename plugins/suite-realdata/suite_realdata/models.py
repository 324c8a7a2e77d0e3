"""The networks: a ReLU MLP and a small 1-D CNN, initialised from the run seed only."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from suite.context import cpu_seeded


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with its initialisation drawn from ``seed`` alone (the global generator's state
    is left as it was; the model is built on the CPU: :func:`suite.context.cpu_seeded`)."""
    with cpu_seeded(seed):
        return build()


def mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``width`` units (``depth=0``: a linear model)."""
    layers: list[nn.Module] = []
    fan_in = n_in
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, n_out))
    return nn.Sequential(*layers)


def cnn1d(length: int, channels: int, n_out: int, kernel: int = 5) -> nn.Sequential:
    """Three stride-2 convolutions (``channels`` each, ReLU) over a signal of ``length``, then a
    linear read-out: the small 1-D CNN of the MNIST-1D paper's kind. Input ``[N, length]``."""
    layers: list[nn.Module] = [nn.Unflatten(1, (1, length))]
    c_in, n = 1, length
    for _ in range(3):
        layers += [nn.Conv1d(c_in, channels, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
        c_in, n = channels, (n + 2 * (kernel // 2) - kernel) // 2 + 1
    layers += [nn.Flatten(), nn.Linear(channels * n, n_out)]
    return nn.Sequential(*layers)
