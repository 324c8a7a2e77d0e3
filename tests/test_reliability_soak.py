"""Soak: a grid of 1,000 tiny runs. The count is exact, and the parent's memory (the single
MLflow writer) does not grow with the number of finished runs: its resident set is sampled at
each finished run (one progress line per run on a non-terminal stderr)."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from mlflow import MlflowClient

from tests.conftest import BIN, runs_of

pytestmark = pytest.mark.slow

N_LR, N_SEEDS = 10, 100  # 1,000 runs
LRS = ",".join(f"{0.01 * (i + 1):g}" for i in range(N_LR))
GRID = ["run", "--problem", "linreg", "--lr", LRS, "--seeds", str(N_SEEDS), "--epochs", "1", "--batch-size", "64",
        "--engine", "auto", "--device", "cpu", "--workers", "2", "--experiment", "soak", "--verbose"]  # a line per run
PROGRESS = re.compile(r"^(\d+)/1000\s")  # "17/1000  failed 0  diverged 0  elapsed ..."


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_a_grid_of_1000_runs_counts_exactly_and_its_parent_does_not_grow(workdir, tracking_uri):
    start = time.monotonic()
    proc = subprocess.Popen([str(BIN / "suite"), *GRID], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    samples: dict[int, float] = {}  # finished runs -> parent's resident set (MiB)
    done = 0
    for line in proc.stderr:
        finished = PROGRESS.match(line)
        if finished:
            done = int(finished[1])
            try:
                samples[done] = rss_mib(proc.pid)
            except OSError:
                pass
    stdout = proc.stdout.read()
    assert proc.wait(timeout=900) == 0, stdout
    seconds = time.monotonic() - start
    assert done == 1000
    assert "1000 runs: 1000 run now (1000 completed), 0 done before (skipped)" in stdout

    runs = runs_of(MlflowClient(tracking_uri=tracking_uri), "soak", "tags.`suite.kind` = 'run'")
    hashes = [r.data.tags["suite.spec_hash"] for r in runs if r.data.tags.get("suite.status") == "completed"]
    assert len(runs) == 1000 and len(set(hashes)) == 1000  # exact: none missing, none twice

    at_250, at_1000 = max(v for k, v in samples.items() if k <= 250), max(samples.values())
    print(f"\nsoak: 1000 runs in {seconds:.0f} s; parent RSS {at_250:.0f} MiB after 250 runs, "
          f"{at_1000:.0f} MiB after 1000 (+{at_1000 - at_250:.0f} MiB)")
    assert at_1000 - at_250 < 64, samples  # no growth per finished run beyond a few KiB of results
