"""Engine time per configuration: the lecture's minimal working example written the way the
lecture writes it (DataLoader, torch.optim, AveragedModel) against the stacked engine, for stacks
of K = 1, 16, 64, 256 and 1024 configurations, measured side by side in one process.

The configuration: linreg (n=1000, d=5), sgd lr 0.1 momentum 0.9 weight decay 1e-4, cosine to
eta_min 0.001 over 50 epochs, EMA 0.99, batch size 32, 50 epochs (1,250 steps). A stack's
configurations differ in seed and learning rate. Each K alternates the lecture loop (A) and the
stacked engine (B) ``--repeats`` times and reports medians, both on ``--threads`` torch threads
(default one: these tensors are too small for intra-op threads to pay). Run: ``make perf``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.optim as optim
from torch.optim.lr_scheduler import CosineAnnealingLR
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from suite.engine.loop import train
from suite.engine.units import run_unit
from suite.registry import get_registry
from suite.specs.spec import resolve_spec

EPOCHS = 50


def lecture_loop(seed: int = 42) -> float:
    """The lecture's minimal working example, as written there (its printing and plots left out)."""
    torch.manual_seed(seed)
    n, d, noise = 1000, 5, 0.5
    w_true, b_true = torch.randn(d, 1), torch.randn(1)
    X = torch.randn(n, d)
    y = X @ w_true + b_true * torch.ones(n, 1) + noise * torch.randn(n, 1)
    train_size = int(0.8 * len(X))
    train_loader = DataLoader(TensorDataset(X[:train_size], y[:train_size]), batch_size=32, shuffle=True)
    val_loader = DataLoader(TensorDataset(X[train_size:], y[train_size:]), batch_size=64)

    class LinearModel(nn.Module):
        def __init__(self, input_dim):
            super().__init__()
            self.linear = nn.Linear(input_dim, 1)

        def forward(self, x):
            return self.linear(x)

    model = LinearModel(d)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = CosineAnnealingLR(optimizer, T_max=EPOCHS, eta_min=0.001)
    ema_model = AveragedModel(model, avg_fn=lambda avg, param, _: 0.99 * avg + 0.01 * param)
    criterion = nn.MSELoss()

    def train_epoch():
        model.train()
        train_loss = 0.0
        for X_batch, y_batch in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(X_batch), y_batch)
            loss.backward()
            optimizer.step()
            ema_model.update_parameters(model)
            train_loss += loss.item() * X_batch.size(0)
        return train_loss / len(train_loader.dataset)

    def validate(m):
        m.eval()
        val_loss = 0.0
        with torch.no_grad():
            for X_batch, y_batch in val_loader:
                val_loss += criterion(m(X_batch), y_batch).item() * X_batch.size(0)
        return val_loss / len(val_loader.dataset)

    for _ in range(EPOCHS):
        train_epoch()
        validate(model)
        validate(ema_model.module)
        scheduler.step()
    return validate(model)


def specs(k: int) -> list:
    registry = get_registry()
    lrs = [0.1, 0.05, 0.02, 0.01]
    return [
        resolve_spec(registry, components={"scheduler": "cosine", "averager": "ema"},
                     overrides={"optimizer.lr": lrs[i % len(lrs)], "optimizer.momentum": 0.9,
                                "optimizer.weight_decay": 1e-4, "scheduler.eta_min": 0.001, "averager.decay": 0.99},
                     batch_size=32, epochs=EPOCHS, seed=42 + i // len(lrs))
        for i in range(k)
    ]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stacked_per_config(batch: list) -> float:
    def go():
        results = [r for _, r in run_unit(batch, "cpu", engine="stacked")]
        assert all(r.status == "completed" and r.engine == "stacked" for r in results), results[0].reason
    return timed(go) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,16,64,256,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1: one core each)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} alternated runs")
    one = specs(1)[0]
    lecture_loop(), stacked_per_config(specs(2)), train(one)  # warm up
    loop_engine = statistics.median(timed(lambda: train(one)) for _ in range(args.repeats))
    rows = []
    for k in sizes:
        batch = specs(k)
        a, b = [], []
        for _ in range(args.repeats):
            a.append(timed(lecture_loop))
            b.append(stacked_per_config(batch))
        rows.append((k, statistics.median(a), statistics.median(b)))
    print()
    print("| K | lecture loop, s per config | stacked engine, s per config | speed-up |")
    print("|---:|---:|---:|---:|")
    for k, a, b in rows:
        print(f"| {k} | {a:.3f} | {b:.5f} | {a / b:.1f}x |")
    print(f"\nper-run loop engine (suite.engine.loop.train), one config: {loop_engine:.3f} s "
          f"({rows[0][1] / loop_engine:.2f}x the lecture loop)")


if __name__ == "__main__":
    main()
