"""Studies that share a stack (issue 27), timed as separate processes, alternated (A, B, B, A, ...),
each run in a fresh directory; medians of the times and of the per-pair ratios.

Row (target in brackets):
  h. the lecture's scaling_sgd cell at one batch size (`suite tune` on the NQM, dim 100: SGD and
     SGD+EMA, 3 studies each, 16 trials of 2 seeds, steps:auto to risk 0.02), with every study
     training its own stacks (`SUITE_SHARED_STACKS=0`) vs the 6 studies sharing one stack a
     round (the default): whole process and the training phase of the `time:` line   [> 1x]

Usage: python benchmarks/perf/shared.py [--repeats N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole import ENV, SUITE, alternate_fresh, medians, phase_seconds, time_line  # noqa: E402

SCALING_SGD = ["tune", "--problem", "nqm", "--set", "problem.dim=100", "--optimizer", "sgd",
               "--set", "optimizer.momentum=0", "--set", "optimizer.weight_decay=0", "--averager", "none,ema",
               "--set", "averager.decay=0.95", "--space", "optimizer.lr=log:0.02:4",
               "--objective", "steps-to-target:0.02", "--budget", "steps:auto", "--trials", "16", "--seeds", "2",
               "--studies", "3", "--reevaluate", "0", "--study-seed", "0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="suite-perf-shared-"))
    cmd = [*SUITE, *SCALING_SGD, "--batch-size", str(args.batch_size)]
    try:
        r = alternate_fresh(cmd, cmd, work, args.repeats, env_a={**ENV, "SUITE_SHARED_STACKS": "0"}, row="h",
                            keep_a=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    train = medians([phase_seconds(time_line(o)).get("training", float("nan")) for o in r["out_a"]],
                    [phase_seconds(time_line(o)).get("training", float("nan")) for o in r["out"]], [])
    print(f"{'row':<4}{'A / B':<44}{'A s':>9}{'B s':>9}{'ratio':>10}  target")
    label = f"scaling_sgd b{args.batch_size}: own stacks / shared"
    print(f"{'h':<4}{label:<44}{r['a']:>9.1f}{r['b']:>9.1f}{r['ratio']:>9.2f}x  > 1x")
    print(f"{'h':<4}{'  training phase only':<44}{train['a']:>9.1f}{train['b']:>9.1f}{train['ratio']:>9.2f}x  > 1x")
    print(f"h: every run (s): own stacks {', '.join(f'{t:.1f}' for t in r['all_a'])}; "
          f"shared {', '.join(f'{t:.1f}' for t in r['all_b'])}")
    print(f"h: own stacks' breakdown: {time_line(r['out_a'][-1])}")
    print(f"h: shared breakdown: {time_line(r['out'][-1])}")
    print(f"h: load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
