"""Stacked against per-run loop on the network workloads of suite-realdata (issue 26's target:
for an MLP of width <= 32 on MNIST-1D, at least 8x the loop engine per configuration at K=64).

Each configuration: batch size 64, ``--steps`` steps (300), evaluated every 100 steps; a stack's
configurations differ in seed and learning rate. The loop engine (A) trains ``--loop-runs`` of
them one after the other (time per configuration: their mean); the stacked engine (B) trains K of
them as one stack (time per configuration: the stack's time / K). A and B alternate
``--repeats`` times; the table shows medians. Both include building the runs (the MNIST-1D data
are generated once per process, before timing) and run on ``--threads`` torch threads (default
one, as the issue's prototype). Not a test: ``make perf`` runs it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from suite.engine.loop import train
from suite.engine.units import run_unit
from suite.registry import get_registry
from suite.specs.spec import resolve_spec

CONFIGS = {
    "mnist1d_mlp w32 sgd+momentum": ("mnist1d_mlp", "sgd", {"problem.width": "32", "optimizer.momentum": "0.9"}),
    "mnist1d_mlp w32 adam": ("mnist1d_mlp", "adam", {"problem.width": "32"}),
    "mnist1d_mlp w100 sgd+momentum": ("mnist1d_mlp", "sgd", {"problem.width": "100", "optimizer.momentum": "0.9"}),
    "mnist1d_cnn c16 sgd+momentum": ("mnist1d_cnn", "sgd", {"optimizer.momentum": "0.9"}),
    "digits w32 sgd+momentum": ("digits", "sgd", {"optimizer.momentum": "0.9"}),
}


def specs(name: str, k: int, steps: int) -> list:
    problem, optimizer, overrides = CONFIGS[name]
    base = 0.001 if optimizer == "adam" else 0.01
    return [resolve_spec(get_registry(), components={"problem": problem, "optimizer": optimizer},
                         overrides={**overrides, "optimizer.lr": str(base * (1 + i % 8))},
                         batch_size=64, steps=steps, eval_every=100, seed=i) for i in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--loop-runs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help="a substring of the configurations to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    registry = get_registry()
    print(f"| configuration | loop ms/config | stacked K={args.k} ms/config | speed-up |")
    print("|---|---|---|---|")
    for name in CONFIGS:
        if args.only and args.only not in name:
            continue
        warm = specs(name, 2, 10)  # data generated, code paths warmed, outside the timing
        train(warm[0], args.device)
        list(run_unit(warm, args.device, registry, engine="stacked"))
        loop_specs = specs(name, args.loop_runs, args.steps)
        stack = specs(name, args.k, args.steps)
        loops, stacks = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for s in loop_specs:
                assert train(s, args.device).status == "completed"
            loops.append((time.perf_counter() - t) / len(loop_specs))
            t = time.perf_counter()
            results = list(run_unit(stack, args.device, registry, engine="stacked"))
            stacks.append((time.perf_counter() - t) / len(stack))
            assert all(r.engine == "stacked" for _, r in results)
        loop, stacked = statistics.median(loops), statistics.median(stacks)
        print(f"| {name} | {1000 * loop:.1f} | {1000 * stacked:.1f} | {loop / stacked:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
