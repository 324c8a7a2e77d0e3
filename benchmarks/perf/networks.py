"""Stacked against per-run loop on the network workloads of suite-realdata, and the stack's FLOP
rate against the physical limit (issue 26's targets: for an MLP of width <= 32, at least 8x the
loop engine per configuration at K=64; for a wider MLP or the CNN, at least half the FLOP rate of
a 1024x1024 fp32 ``torch.mm`` on the same threads).

Each configuration: batch size 64, ``--steps`` steps (300), evaluated every 100 steps; a stack's
configurations differ in seed and learning rate. The loop engine (A) trains ``--loop-runs`` of
them one after the other (time per configuration: their mean); the stacked engine (B) trains K of
them as one stack (time per configuration: the stack's time / K); then (C) ``--mm-reps``
1024x1024 fp32 ``torch.mm``. A, B and C alternate ``--repeats`` times; the tables show medians.
A and B include building the runs and their evaluations (the MNIST-1D data are generated once per
process, before timing). Everything runs on ``--threads`` torch threads (default one, as the
issue's prototype). Not a test: ``make perf`` runs it.

FLOPs counted per step and row (:func:`flops_per_example` × batch): 6 × parameters for an MLP
(forward 2, backward 4 per weight and example), 6 × MACs of the convolutions and the linear
read-out for the CNN. Only training steps are counted (the evaluations' forward passes, about 7%
more, are timed but not counted), so the stack's rate is a lower bound. The rate is given by wall
clock and by this process's CPU time (less sensitive to the other loads of a shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch
from torch import nn

from suite.engine.loop import build, train
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
SPEEDUP_TARGET = 8.0  # an MLP of width <= 32: stacked K=64 against the loop, per configuration
RATE_TARGET = 0.5  # any wider model or CNN: its FLOP rate against torch.mm's
MM_N = 1024
T = TypeVar("T")


def specs(name: str, k: int, steps: int, batch_size: int = 64, eval_every: int = 100) -> list:
    problem, optimizer, overrides = CONFIGS[name]
    base = 0.001 if optimizer == "adam" else 0.01
    return [resolve_spec(get_registry(), components={"problem": problem, "optimizer": optimizer},
                         overrides={**overrides, "optimizer.lr": str(base * (1 + i % 8))},
                         batch_size=batch_size, steps=steps, eval_every=eval_every, seed=i) for i in range(k)]


def flops_per_example(model: nn.Module, n_in: int) -> int:
    """Training FLOPs per example and step: 6 × parameters for a model of ``Linear`` layers only
    (an MLP), else 6 × the multiply-accumulates of its ``Conv1d`` and ``Linear`` layers on one
    input of ``n_in`` features (counted from their output shapes)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d))]
    if all(isinstance(m, nn.Linear) for m in layers):
        return 6 * sum(p.numel() for p in model.parameters())
    macs: list[int] = []

    def count(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        per_output = m.in_features if isinstance(m, nn.Linear) else m.in_channels * m.kernel_size[0]
        macs.append(out[0].numel() * per_output)

    hooks = [m.register_forward_hook(count) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, n_in))
    for h in hooks:
        h.remove()
    return 6 * sum(macs)


def step_flops(name: str, batch_size: int = 64) -> int:
    """FLOPs of one training step of one configuration (one row of a stack)."""
    problem = build(specs(name, 1, 1, batch_size)[0]).problem
    return batch_size * flops_per_example(problem.model, problem.X_train.shape[1])


def mm_rate(reps: int, device: str = "cpu") -> tuple[float, float]:
    """The FLOP rate of ``reps`` 1024x1024 fp32 ``torch.mm`` on ``device``: (by wall clock, by
    this process's CPU time)."""
    a, b = torch.randn(MM_N, MM_N, device=device), torch.randn(MM_N, MM_N, device=device)
    torch.mm(a, b)
    _, wall, cpu = timed(lambda: [torch.mm(a, b) for _ in range(reps)], device)
    flops = 2 * MM_N**3 * reps
    return flops / wall, flops / cpu


def timed(work: Callable[[], T], device: str = "cpu") -> tuple[T, float, float]:
    """``work()`` and the seconds it takes: (its value, wall clock, this process's CPU time);
    synchronised on CUDA."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    sync()
    t, c = time.perf_counter(), time.process_time()
    value = work()
    sync()
    return value, time.perf_counter() - t, time.process_time() - c


def run_stack(stack: list, device: str) -> list:
    """The stacked engine's results for the configurations ``stack``, trained as one stack."""
    return list(run_unit(stack, device, get_registry(), engine="stacked"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--loop-runs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mm-reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help="a substring of the configurations to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"| configuration | loop ms/config | stacked K={args.k} ms/config | speed-up |")
    print("|---|---|---|---|")
    rates = []
    for name in CONFIGS:
        if args.only and args.only not in name:
            continue
        warm = specs(name, 2, 10)  # data generated, code paths warmed, outside the timing
        train(warm[0], args.device)
        run_stack(warm, args.device)
        loop_specs = specs(name, args.loop_runs, args.steps)
        stack = specs(name, args.k, args.steps)
        loops, stacks, stack_cpus, mms, mm_cpus = [], [], [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for s in loop_specs:
                assert train(s, args.device).status == "completed"
            loops.append((time.perf_counter() - t) / len(loop_specs))
            results, wall, cpu = timed(partial(run_stack, stack, args.device))
            assert all(r.engine == "stacked" for _, r in results)
            stacks.append(wall / len(stack))
            stack_cpus.append(cpu / len(stack))
            mm, mm_cpu = mm_rate(args.mm_reps, args.device)
            mms.append(mm)
            mm_cpus.append(mm_cpu)
        loop, stacked = statistics.median(loops), statistics.median(stacks)
        print(f"| {name} | {1000 * loop:.1f} | {1000 * stacked:.1f} | {loop / stacked:.1f}x |", flush=True)
        flops = step_flops(name) * args.steps  # per configuration
        rates.append((name, flops / stacked, statistics.median(mms), flops / statistics.median(stack_cpus),
                      statistics.median(mm_cpus), loop / stacked))
    print(f"\nFLOP rate of the stack (training FLOPs / time per configuration) against {MM_N}x{MM_N} fp32 torch.mm, "
          f"{args.threads} thread(s), medians of {args.repeats} alternated repeats")
    print("| configuration | stacked GFLOP/s | torch.mm GFLOP/s | ratio | ratio by CPU time | target | met |")
    print("|---|---|---|---|---|---|---|")
    for name, rate, mm, rate_cpu, mm_cpu, speedup in rates:
        if " w32 " in name:
            target, met = f"speed-up >= {SPEEDUP_TARGET:.0f}x", speedup >= SPEEDUP_TARGET
        else:
            target, met = f"ratio >= {RATE_TARGET}", rate / mm >= RATE_TARGET
        print(f"| {name} | {rate / 1e9:.1f} | {mm / 1e9:.1f} | {rate / mm:.2f} | {rate_cpu / mm_cpu:.2f} | {target} "
              f"| {'yes' if met else 'no'} |")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
