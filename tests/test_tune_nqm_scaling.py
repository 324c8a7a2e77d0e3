"""Issue 13's target: one `suite tune` command finds the closed-form optimum steps-to-target of
sgd and precond (p = ½) on the NQM at every batch size, within 30%.

The closed forms (``suite.theory.best_steps_to_target``; nqm.md) are for plain constant-lr
(preconditioned) SGD, so momentum and weight decay are pinned to 0 and only the lr is tuned; its
space reaches the stability limit lr < 2 (the optimum at B = 1024 is 1.74).
"""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest

from suite.theory import best_steps_to_target
from tests.conftest import runs_of

SIZES = (4, 16, 64, 256, 1024)
TARGET = 0.05
COMMAND = ["tune", "--problem", "nqm", "--set", "problem.dim=32", "--optimizer", "sgd,precond",
           "--set", "optimizer.p=0.5", "--set", "optimizer.momentum=0", "--set", "optimizer.weight_decay=0",
           "--space", "optimizer.lr=log:0.01:2", "--objective", f"steps-to-target:{TARGET}",
           "--batch-size", ",".join(map(str, SIZES)), "--budget", "steps:auto", "--trials", "20",
           "--study-seed", "0", "--workers", "1", "--quiet"]


@pytest.mark.slow
def test_one_command_finds_the_closed_form_optimum_at_every_batch_size(cli, mlflow_client):
    start = time.perf_counter()
    out = cli(*COMMAND).output
    seconds = time.perf_counter() - start
    (report,) = runs_of(mlflow_client, "nqm", "tags.`suite.kind` = 'tune'")
    with open(mlflow_client.download_artifacts(report.info.run_id, "table.csv")) as f:
        rows = {(r["variant"].partition("-")[0], int(r["batch_size"])): r for r in csv.DictReader(f)}
    h = 1 / np.arange(1, 33)
    misses = []
    for optimizer, p in (("sgd", 0.0), ("precond", 0.5)):
        for b in SIZES:
            theory, _ = best_steps_to_target(h, h, b, TARGET, p=p)
            row = rows[optimizer, b]
            assert row["reeval_n"] == "5" and row["reeval_trials"] == "3"  # re-evaluated by default
            mean = float(row["reeval_mean"])
            if abs(mean / theory - 1) > 0.3:
                misses.append(f"{optimizer} b{b}: {mean:.1f} vs {theory:g}")
    print(f"\n{out}\n({seconds:.0f} s)")
    assert not misses, misses
