"""Populations tune no worse (issue 27): the default `suite tune --problem logistic` against
`--population 1`, over several study seeds, each run in a fresh directory.

For every study, the best value of each run is read from its Optuna journal. The default
population passes when, for every study, the median of its best values over the seeds lies
inside the 95% interval of `--population 1`'s best values (the 2.5th to 97.5th percentile of
them: with 5 seeds, from the least to the greatest). It also prints the whole-process and
training-phase times of every run (the runs alternate: seed by seed, population 1 first on
even seeds).

Usage: python benchmarks/perf/tune_quality.py [--seeds 5] [--problem logistic]
Exit status 1 when a study's median falls outside the interval. Not a test: about 10 runs
of the whole command (minutes on this 2-core machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole import SUITE, phase_seconds, run, time_line  # noqa: E402


def best_values(work: Path) -> dict[str, float]:
    """Each study's best value in the journal a run left in ``work``."""
    import optuna

    from suite.stores import open_storage

    storage = open_storage(str(work / ".suite" / "optuna.journal"))
    return {s.study_name: s.best_trial.value for s in optuna.get_all_study_summaries(storage)
            if s.best_trial is not None}


def interval(values: list[float]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of ``values`` (linear interpolation)."""
    xs = sorted(values)

    def pct(q: float) -> float:
        pos = q * (len(xs) - 1)
        lo = int(pos)
        return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)

    return pct(0.025), pct(0.975)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--problem", default="logistic")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="suite-quality-"))
    best: dict[str, dict[str, list[float]]] = {"1": {}, "default": {}}
    times: dict[str, list[tuple[float, float]]] = {"1": [], "default": []}
    for seed in range(args.seeds):
        order = ["1", "default"] if seed % 2 == 0 else ["default", "1"]
        for pop in order:
            cwd = work / f"s{seed}-{pop}"
            cwd.mkdir()
            cmd = [*SUITE, "tune", "--problem", args.problem, "--study-seed", str(seed)]
            wall, out = run(cmd + (["--population", "1"] if pop == "1" else []), cwd)
            times[pop].append((wall, phase_seconds(time_line(out)).get("training", float("nan"))))
            for name, v in best_values(cwd).items():
                best[pop].setdefault(name, []).append(v)
    ok = True
    print(f"{'study':<48}{'pop-1 interval':>24}{'default median':>16}  holds")
    for name in sorted(best["1"]):
        lo, hi = interval(best["1"][name])
        med = statistics.median(best["default"].get(name, [float("nan")]))
        holds = lo <= med <= hi
        ok &= holds
        print(f"{name[:47]:<48}{f'[{lo:.5g}, {hi:.5g}]':>24}{med:>16.5g}  {'yes' if holds else 'NO'}")
    for pop, ts in times.items():
        print(f"population {pop}: whole process median {statistics.median(t[0] for t in ts):.1f} s, "
              f"training median {statistics.median(t[1] for t in ts):.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
