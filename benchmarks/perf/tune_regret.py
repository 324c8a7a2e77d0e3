"""Tuning quality of the lecture's NQM scaling sweep (issue 25): regret and coverage over study seeds.

For each study seed S, `suite tune` runs the `scaling_*` experiments of benchmarks/lecture.yaml as
they are (spaces, trials, studies, seeds, re-evaluation), restricted to the batch sizes given and
with `study_seed: S`, in a fresh directory (removed after, unless --keep). The report's own
functions then read the runs back:

* regret: a cell's tuned steps (the median over its studies) over the exact optimum as the runs
  read it (`suite.report.scaling.regret`); target: every cell within 10%;
* coverage: the share of the paired method/method intervals (`suite.report.scaling.coverage`) that
  contain the closed-form ratio; target: at least 90%;
* steps: the optimizer steps the trials and the re-evaluations trained (the compute).

The tuner never sees the closed form; it is only the yardstick here.

Usage: python benchmarks/perf/tune_regret.py [--seeds 0,1,2] [--sizes 32,2048,4096] [--experiments scaling_sgd,...]
       [--trials N] [--population K] [--keep]
Exit status 1 when a cell's regret exceeds 1.10 or the coverage is below 90% for some seed.
Not a test: each seed runs the sweep's studies at those batch sizes (minutes on this 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SUITE = [sys.executable, "-m", "suite.cli"]
REGRET_MAX, COVERAGE_MIN = 1.10, 0.90


def bench_file(seed: int, sizes: list[int], names: list[str] | None, trials: int | None = None,
               population: int | None = None) -> dict:
    """lecture.yaml's scaling experiments at ``sizes`` with study seed ``seed`` (and ``trials`` per study
    and their ``population``, where given)."""
    lecture = yaml.safe_load((ROOT / "benchmarks" / "lecture.yaml").read_text())
    experiments = {}
    for name, exp in lecture["experiments"].items():
        if name.startswith("scaling") and "tune" in exp and (names is None or name in names):
            tune = {**exp["tune"], "study_seed": seed, **({"trials": trials} if trials else {}),
                    **({"population": population} if population else {})}
            experiments[name] = {**exp, "batch_size": sizes, "tune": tune}
    return {"name": "regret", "experiments": experiments}


def trained_steps(db: Path) -> dict[str, int]:
    """Optimizer steps trained per run kind (trial, reeval): the sum of each run's last evaluated step."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT t.value, SUM(m.last) FROM (SELECT run_uuid, MAX(step) AS last FROM metrics WHERE key = 'theory_risk' "
        "GROUP BY run_uuid) m JOIN tags t ON t.run_uuid = m.run_uuid AND t.key = 'suite.kind' GROUP BY t.value")
    return {kind: int(steps) for kind, steps in rows}


def measure(work: Path) -> tuple[dict[str, float], tuple[int, int, list[str]] | None]:
    """Each cell's regret and the coverage, read back as the report reads them."""
    from suite.report import scaling
    from suite.report.reader import read_runs

    runs = read_runs("regret", f"sqlite:///{work / 'mlflow.db'}")
    records = runs.with_prefix(scaling.SCALING_PREFIX)
    target = scaling.study_target(records) or scaling.NQM_TARGET
    tuned = scaling.tune(runs, records, target)
    dim, noise = scaling.nqm_setup(records[0])
    regrets = {f"{m} B={b}": scaling.regret(t, dim, noise, target) for (m, b), t in sorted(tuned.items(), key=str)}
    return {k: v for k, v in regrets.items() if v is not None}, scaling.coverage(tuned, dim, noise, target)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sizes", default="32,2048,4096")
    ap.add_argument("--experiments", default=None, help="comma list of scaling_* experiments (default: all)")
    ap.add_argument("--trials", type=int, default=None, help="trials per study (default: the experiments')")
    ap.add_argument("--population", type=int, default=None, help="trials trained at once (default: the experiments')")
    ap.add_argument("--keep", action="store_true", help="keep each seed's directory (removed by default)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    names = args.experiments.split(",") if args.experiments else None
    ok = True
    for seed in (int(x) for x in args.seeds.split(",")):
        work = Path(tempfile.mkdtemp(prefix="suite-regret-"))
        try:
            bench = bench_file(seed, sizes, names, args.trials, args.population)
            (work / "regret.yaml").write_text(yaml.safe_dump(bench, allow_unicode=True))
            env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            began = time.perf_counter()
            proc = subprocess.run([*SUITE, "tune", "regret.yaml"], cwd=work, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - began
            if proc.returncode:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
                return 2
            regrets, cov = measure(work)
            worst = max(regrets, key=regrets.__getitem__)
            inside, total, outside = cov or (0, 0, [])
            steps = trained_steps(work / "mlflow.db")
            print(f"study seed {seed}: worst regret ×{regrets[worst]:.3f} ({worst}); coverage {inside}/{total}; "
                  f"steps trained: {steps}; suite tune took {seconds:.0f} s")
            for cell, r in regrets.items():
                print(f"  {cell:40s} ×{r:.3f}")
            for line in outside:
                print(f"  outside: {line}")
            ok &= regrets[worst] <= REGRET_MAX and (not total or inside / total >= COVERAGE_MIN)
        finally:  # a study store is hundreds of MB
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
