"""Whole-process timings (issue 12): each row times command A against command B as separate
processes, alternating A and B, and reports the medians and the median of the per-pair ratios.

Rows (targets in brackets):
  a. the 16-configuration linreg grid: benchopt (benchmarks/benchopt-linreg, in .venv-perf) vs
     `suite run` with full MLflow tracking                                            [suite <= 0.5x]
  b. `suite --help` vs `python -c "import torch"`                                    [<= 0.15x]
  c. 256 configurations of the lecture's minimal working example, `suite run --engine stacked`
     vs `--engine loop`, MLflow included; plus the stacked run's own time breakdown   [>= 20x; tracking <= 10%]
  d. `suite run` of the minimal working example vs the lecture's script (lecture_mwe.py)  [<= 1.0x]
  e. the default `suite tune --problem logistic` at the end of wave 1 (commit 0eafecc, installed in
     .venv-baseline) vs now, each run in a fresh directory                             [>= 3x]
  f. `make bench`'s job at the end of wave 1: its benchmarks/lecture.yaml (109 runs), run by wave 1
     (0eafecc) vs now, each in a fresh directory; plus today's make bench job (the current
     benchmarks/lecture.yaml, far more runs and 32 Optuna studies) once, for the record  [>= 5x]
  g. the default `suite tune --problem logistic` with `--population 1` vs the default population,
     each in a fresh directory: whole process [>= 2x] and the training phase of the `time:` line [>= 4x]
  k. a compute-bound tuning (mnist1d_mlp, B=2048, 16 trials of at most 300 steps, stopping at the
     target) with a stack's ended rows computed (SUITE_SHED_ROWS=0) vs shed (suite.engine.shed):
     whole process and training phase                                                   [> 1x]

Usage: python benchmarks/perf/whole.py [--repeats N] [--rows abcd] [--loop-repeats N]
benchopt is installed in .venv-perf (git-ignored), never in the project's environment; if it
cannot be installed, row a says so and is skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PERF_VENV = ROOT / ".venv-perf"
PY = sys.executable
SUITE = [PY, "-m", "suite.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
ENV.pop("MLFLOW_TRACKING_URI", None)
BARE_ENV = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}  # for yardsticks that import their own code

GRID16 = ["run", "--problem", "linreg", "--optimizer", "sgd", "--lr", "0.01,0.1", "--momentum", "0,0.9",
          "--batch-size", "8,64", "--seeds", "2", "--epochs", "5", "--force", "--quiet"]
MWE = ["--problem", "linreg", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "1e-4",
       "--scheduler", "cosine", "--set", "scheduler.eta_min=0.001", "--averager", "ema", "--set",
       "averager.decay=0.99", "--batch-size", "32", "--epochs", "50", "--seed", "42"]
GRID256 = ["run", "--problem", "linreg", "--optimizer", "sgd", "--lr", "0.01,0.03,0.1,0.3",
           "--momentum", "0,0.5,0.9,0.95", "--weight-decay", "0,1e-4", "--scheduler", "cosine",
           "--set", "scheduler.eta_min=0.001", "--averager", "ema", "--set", "averager.decay=0.9,0.99",
           "--batch-size", "32", "--epochs", "50", "--seeds", "4", "--force", "--quiet"]


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return wall, res.stdout


def alternate(a: list[str], b: list[str], cwd: Path, repeats: int, env_a: dict | None = None) -> dict:
    """Time A and B ``repeats`` times each, alternating (ABBA order), after one untimed warm-up of each."""
    run(a, cwd, env_a)
    run(b, cwd)
    ta, tb, outs = [], [], []
    for i in range(repeats):
        order = [("a", a), ("b", b)] if i % 2 == 0 else [("b", b), ("a", a)]
        for which, cmd in order:
            wall, out = run(cmd, cwd, env_a if which == "a" else None)
            (ta if which == "a" else tb).append(wall)
            if which == "a":
                outs.append(out)
    return medians(ta, tb, outs)


def medians(ta: list[float], tb: list[float], outs: list[str]) -> dict:
    """The medians of A's and B's times and of the per-pair ratios, with every time and the
    outputs kept (``outs``)."""
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    return {"a": statistics.median(ta), "b": statistics.median(tb), "ratio": statistics.median(ratios), "out": outs,
            "all_a": ta, "all_b": tb}


def benchopt_ready() -> str | None:
    """Install benchopt (and this torch) in .venv-perf if needed; None when ready, else why not."""
    bench = PERF_VENV / "bin" / "benchopt"
    if bench.exists():
        return None
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PERF_VENV)], check=True, capture_output=True)
        import torch

        subprocess.run([str(PERF_VENV / "bin" / "pip"), "install", "-q", f"torch=={torch.__version__.split('+')[0]}",
                        "benchopt"], check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"benchopt could not be installed in {PERF_VENV}: {exc}"
    return None if bench.exists() else f"no benchopt executable in {PERF_VENV}"


BASELINE = "0eafecc"  # the end of wave 1, the tuning yardstick of issue 13
BASELINE_VENV = Path(os.environ.get("SUITE_PERF_BASELINE_VENV") or ROOT / ".venv-baseline")  # git-ignored


def baseline_ready() -> str | None:
    """Install commit BASELINE (from a git worktree) in .venv-baseline if needed; None when ready."""
    suite = BASELINE_VENV / "bin" / "suite"
    if suite.exists():
        return None
    tree = Path(tempfile.mkdtemp(prefix="suite-baseline-"))
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree / "src"), BASELINE],
                       check=True, capture_output=True, text=True)
        subprocess.run([sys.executable, "-m", "venv", str(BASELINE_VENV)], check=True, capture_output=True)
        import torch

        torch_pin = f"torch=={torch.__version__.split('+')[0]}"
        subprocess.run([str(BASELINE_VENV / "bin" / "pip"), "install", "-q", torch_pin, str(tree / "src")],
                       check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"commit {BASELINE} could not be installed in {BASELINE_VENV}: {exc}"
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree / "src")],
                       capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    return None if suite.exists() else f"no suite executable in {BASELINE_VENV}"


def alternate_fresh(a: list[str], b: list[str], work: Path, repeats: int, env_a: dict | None = None,
                    row: str = "", keep_a: bool = False) -> dict:
    """As :func:`alternate` (A, B, B, A, ...), each run in a new directory (a study run again
    in the same directory would resume, not tune), with no warm-up run. With ``keep_a``, A's
    outputs are kept too (``out_a``)."""
    ta, tb, outs, outs_a = [], [], [], []
    for i in range(2 * repeats):
        which = "ab"[(i + i // 2) % 2]
        cwd = work / f"{row}{i:02d}-{which}"
        cwd.mkdir()
        wall, out = run(a if which == "a" else b, cwd, env_a if which == "a" else None)
        (ta if which == "a" else tb).append(wall)
        (outs if which == "b" else outs_a).append(out)
    r = medians(ta, tb, outs)
    if keep_a:
        r["out_a"] = outs_a
    return r


def whole_and_training(row: str, label: str, r: dict, targets: tuple[str, str]) -> list[tuple]:
    """Two table rows from :func:`alternate_fresh`'s ``r`` (with ``keep_a``): the whole process,
    and the training phase of each run's ``time:`` line."""
    train_a = [phase_seconds(time_line(o)).get("training", float("nan")) for o in r["out_a"]]
    train_b = [phase_seconds(time_line(o)).get("training", float("nan")) for o in r["out"]]
    tr = medians(train_a, train_b, [])
    return [(row, label, f"{r['a']:.1f}", f"{r['b']:.1f}", f"{r['ratio']:.2f}x", targets[0]),
            (row, "  training phase only", f"{tr['a']:.1f}", f"{tr['b']:.1f}", f"{tr['ratio']:.2f}x", targets[1])]


def skipped(row: str, label: str, target: str, why: str | None, table: list, notes: list) -> bool:
    """Record row ``row`` as skipped, and say why, when its yardstick is not ready (``why``)."""
    if why:
        table.append((row, label, "-", "-", "skipped", target))
        notes.append(f"{row}: skipped: {why}")
    return bool(why)


def time_line(stdout: str) -> str:
    return next((ln for ln in stdout.splitlines() if ln.startswith("time: ")), "")


def phase_seconds(line: str) -> dict[str, float]:
    """``{phase: seconds}`` from a ``time:`` line (empty if there is none)."""
    try:
        return {p.split(" s ", 1)[1]: float(p.split(" s ", 1)[0])
                for p in line.removeprefix("time: ").split(" (")[0].split(", ")}
    except (ValueError, IndexError):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-repeats", type=int, default=1, help="repeats of row c (its loop side takes minutes)")
    ap.add_argument("--rows", default="abcdefgk")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="suite-perf-"))
    table: list[tuple[str, str, str, str, str, str]] = []
    notes: list[str] = []
    try:
        if "b" in args.rows:
            r = alternate([*SUITE, "--help"], [PY, "-c", "import torch"], work, args.repeats)
            table.append(("b", "suite --help / import torch", f"{r['a']:.2f}", f"{r['b']:.2f}", f"{r['ratio']:.3f}x",
                          "<= 0.15x"))
        if "d" in args.rows:
            lecture = [PY, str(ROOT / "benchmarks/perf/lecture_mwe.py")]
            r = alternate([*SUITE, "run", *MWE, "--force", "--quiet"], lecture, work, args.repeats)
            table.append(("d", "suite run MWE / lecture script", f"{r['a']:.2f}", f"{r['b']:.2f}",
                          f"{r['ratio']:.2f}x", "<= 1.0x"))
            notes.append(f"d: suite's own breakdown: {time_line(r['out'][-1])}")
        if "a" in args.rows and not skipped("a", "suite run 16-grid / benchopt", "<= 0.5x", benchopt_ready(),
                                            table, notes):
            bdir = work / "benchopt-linreg"
            shutil.copytree(ROOT / "benchmarks" / "benchopt-linreg", bdir)
            bcmd = [str(PERF_VENV / "bin" / "benchopt"), "run", str(bdir), "--no-plot", "--no-html", "-n", "1",
                    "--no-cache"]
            r = alternate(bcmd, [*SUITE, *GRID16], work, args.repeats, env_a=BARE_ENV)
            table.append(("a", "suite run 16-grid / benchopt", f"{r['b']:.2f}", f"{r['a']:.2f}",
                          f"{1 / r['ratio']:.2f}x", "<= 0.5x"))
        if "c" in args.rows:
            r = alternate([*SUITE, *GRID256, "--engine", "loop"], [*SUITE, *GRID256, "--engine", "stacked"], work,
                          args.loop_repeats)
            table.append(("c", "256-grid loop / stacked", f"{r['a']:.1f}", f"{r['b']:.1f}", f"{r['ratio']:.1f}x",
                          ">= 20x"))
            _, out = run([*SUITE, *GRID256, "--engine", "stacked"], work)
            line = time_line(out)
            notes.append(f"c: stacked 256-grid breakdown: {line}")
            parts = phase_seconds(line)
            if "tracking" in parts:
                notes.append(f"c: MLflow writes (tracking) = {100 * parts['tracking'] / sum(parts.values()):.0f}% "
                             "of wall time (target <= 10%)")
        if "e" in args.rows and not skipped("e", "tune logistic: wave 1 / now", ">= 3x", baseline_ready(),
                                            table, notes):
            tune = ["tune", "--problem", "logistic"]
            r = alternate_fresh([str(BASELINE_VENV / "bin" / "suite"), *tune], [*SUITE, *tune], work, args.repeats,
                                env_a=BARE_ENV)
            table.append(("e", "tune logistic: wave 1 / now", f"{r['a']:.1f}", f"{r['b']:.1f}",
                          f"{r['ratio']:.1f}x", ">= 3x"))
            notes.append(f"e: every run (s): wave 1 {', '.join(f'{t:.1f}' for t in r['all_a'])}; "
                         f"now {', '.join(f'{t:.1f}' for t in r['all_b'])}")
            notes.append(f"e: now's breakdown: {time_line(r['out'][-1])}")
        if "f" in args.rows and not skipped("f", "wave 1's make bench: wave 1 / now", ">= 5x", baseline_ready(),
                                            table, notes):
            old_file = work / "lecture-wave1.yaml"
            old_file.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE}:benchmarks/lecture.yaml"],
                                               check=True, capture_output=True, text=True).stdout)
            bench = ["run", str(old_file), "--quiet"]
            r = alternate_fresh([str(BASELINE_VENV / "bin" / "suite"), *bench], [*SUITE, *bench], work,
                                max(1, args.repeats - 1), env_a=BARE_ENV, row="f")
            table.append(("f", "wave 1's make bench: wave 1 / now", f"{r['a']:.1f}", f"{r['b']:.1f}",
                          f"{r['ratio']:.1f}x", ">= 5x"))
            notes.append(f"f: every run (s): wave 1 {', '.join(f'{t:.1f}' for t in r['all_a'])}; "
                         f"now {', '.join(f'{t:.1f}' for t in r['all_b'])}; now's breakdown: {time_line(r['out'][-1])}")
            today = work / "today"
            today.mkdir()
            wall, out = run([*SUITE, "run", str(ROOT / "benchmarks" / "lecture.yaml"), "--quiet"], today)
            notes.append(f"f: today's make bench job (benchmarks/lecture.yaml), once: {wall:.1f} s; {time_line(out)}")
        if "g" in args.rows:
            tune = [*SUITE, "tune", "--problem", "logistic"]
            r = alternate_fresh([*tune, "--population", "1"], tune, work, args.repeats, row="g", keep_a=True)
            table += whole_and_training("g", "tune logistic: population 1 / default", r, (">= 2x", ">= 4x"))
            notes.append(f"g: every run (s): population 1 {', '.join(f'{t:.1f}' for t in r['all_a'])}; "
                         f"default {', '.join(f'{t:.1f}' for t in r['all_b'])}")
            notes.append(f"g: population 1's breakdown: {time_line(r['out_a'][-1])}")
            notes.append(f"g: default's breakdown: {time_line(r['out'][-1])}")
            notes.append(f"g: load average at the end: {os.getloadavg()[0]:.1f}")
        if "k" in args.rows:
            tune = [*SUITE, "tune", "--problem", "mnist1d_mlp", "--optimizer", "sgd", "--batch-size", "2048",
                    "--trials", "16", "--budget", "steps:300", "--objective", "steps-to-target:1.45",
                    "--space", "optimizer.lr=log:0.01:8", "--study-seed", "0", "--reevaluate", "0", "--quiet"]
            r = alternate_fresh(tune, tune, work, args.repeats, env_a={**ENV, "SUITE_SHED_ROWS": "0"}, row="k",
                                keep_a=True)
            table += whole_and_training("k", "tune B=2048: rows kept / shed", r, ("> 1x", "> 1x"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'row':<4}{'A / B':<34}{'A s':>9}{'B s':>9}{'ratio':>10}  target")
    for row in table:
        print(f"{row[0]:<4}{row[1]:<34}{row[2]:>9}{row[3]:>9}{row[4]:>10}  {row[5]}")
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
