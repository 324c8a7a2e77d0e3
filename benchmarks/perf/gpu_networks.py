"""The networks study's largest stacks on CUDA and on CPU: time per step, FLOP rate, and the ratio
to a 1024x1024 fp32 ``torch.mm`` on the same device (issue 26's GPU target).

Configurations: ``mnist1d_cnn`` (16 channels) and ``mnist1d_mlp`` (width 100), SGD with momentum,
K=256 rows of batch size 2048 (the largest power of two that MNIST-1D's default training split of
3200 signals holds, the top of the scaling study's batch sizes). A step's time is the difference
between a stack of ``--steps`` steps and one of ``--short-steps`` steps, divided by the steps
between (building the runs and their evaluations cancel); the two stacks and ``--mm-reps``
``torch.mm`` alternate ``--repeats`` times, medians. FLOPs are counted as in
``benchmarks/perf/networks.py`` (6 × batch × parameters for the MLP, 6 × batch × MACs for the
CNN). fp32 throughout, at torch's float32 matmul precision (printed: "highest" means no TF32).

Without CUDA, asking for it prints one line saying so and exits 0; ``--device cpu`` runs the CPU
half alone (``--k 32 --repeats 1`` is the quick check on a small machine). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial

import torch
from networks import mm_rate, run_stack, specs, step_flops, timed

CONFIGS = ["mnist1d_cnn c16 sgd+momentum", "mnist1d_mlp w100 sgd+momentum"]


def measure(name: str, device: str, args: argparse.Namespace) -> str:
    """One table row: ``name`` as a stack of ``args.k`` rows on ``device``."""
    def stack(steps: int) -> list:
        return specs(name, args.k, steps, args.batch_size, eval_every=steps)

    long, short = stack(args.steps), stack(args.short_steps)
    run_stack(stack(1), device)  # warm: data made, kernels loaded, outside the timing
    per_step, mms = [], []
    for _ in range(args.repeats):
        _, t_long, _ = timed(partial(run_stack, long, device), device)
        _, t_short, _ = timed(partial(run_stack, short, device), device)
        per_step.append((t_long - t_short) / (args.steps - args.short_steps))
        mms.append(mm_rate(args.mm_reps, device)[0])
    step, mm = statistics.median(per_step), statistics.median(mms)
    rate = args.k * step_flops(name, args.batch_size) / step
    return (f"| {name} | {device} | {args.k} | {args.batch_size} | {1000 * step:.1f} | {1000 * step / args.k:.3f} "
            f"| {rate / 1e9:.1f} | {mm / 1e9:.1f} | {rate / mm:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda,cpu", help="comma-separated devices (default: cuda,cpu)")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--short-steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mm-reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--only", default=None, help="a substring of the configurations to run")
    args = ap.parse_args()
    if args.steps <= args.short_steps:
        print("gpu_networks.py: --steps must exceed --short-steps (a step's time is their difference)", file=sys.stderr)
        return 2
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print(f"CUDA is not available here (torch {torch.__version__}, cuda {torch.version.cuda}): nothing measured; "
              "run with --device cpu for the CPU half alone")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), float32 matmul precision "
          f"{torch.get_float32_matmul_precision()!r}"
          + "".join(f", {d}: {torch.cuda.get_device_name(d)}" for d in devices if d.startswith("cuda")))
    print("| configuration | device | K | batch | ms/step (stack) | ms/step per row | GFLOP/s | torch.mm GFLOP/s "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for name in CONFIGS:
            if args.only is None or args.only in name:
                print(measure(name, device, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
