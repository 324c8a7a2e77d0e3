"""Grids end to end, checked through MLflow's own API: worker processes, resume after kill -9,
failure isolation, the parent run's summary."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import BIN, Output, pip_install_target, runs_of, suite_cmd, wait_for_session, write_plugin_package
from tests.test_kill_events import HANG_GUARD_S, RUN_LINE, kill_at

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def children(client: MlflowClient, experiment: str):
    return [r for r in runs_of(client, experiment) if r.data.tags.get("suite.kind") == "run"]


def test_grid_of_16_runs_under_one_parent(cli, mlflow_client):
    result = cli("run", "--problem", "linreg", "--optimizer", "sgd", "--lr", "0.01,0.1", "--momentum", "0,0.9",
                 "--batch-size", "8,64", "--seeds", "2", "--epochs", "5", "--device", "cpu", "--workers", "2")
    runs = runs_of(mlflow_client, "linreg")
    (parent,) = [r for r in runs if r.data.tags.get("suite.kind") == "grid"]
    kids = [r for r in runs if r.data.tags.get("suite.kind") == "run"]
    assert len(runs) == 17 and len(kids) == 16
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in kids)
    assert all(r.info.status == "FINISHED" and r.data.tags["suite.status"] == "completed" for r in kids)
    assert len({r.data.tags["suite.spec_hash"] for r in kids}) == 16
    combos = {(r.data.params["optimizer.lr"], r.data.params["optimizer.momentum"], r.data.params["batch_size"],
               r.data.params["seed"]) for r in kids}
    assert combos == {(lr, m, b, s) for lr in ("0.01", "0.1") for m in ("0.0", "0.9") for b in ("8", "64")
                      for s in ("0", "1")}
    assert all(r.data.params["epochs"] == "5" and r.data.params["optimizer"] == "sgd" for r in kids)
    assert {r.data.tags["suite.device"] for r in kids} == {"cpu"}

    # The summary: a table per configuration on the terminal and as artifacts on the parent.
    out = result.output
    assert "16 runs: 16 run now (16 completed), 0 done before" in out
    assert "lr=0.1 momentum=0.9" in out and "winner per batch size" in out
    arts = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "runs.json", "curves", "batch_size"} <= arts
    csv_text = Path(mlflow_client.download_artifacts(parent.info.run_id, "summary.csv")).read_text()
    assert len(csv_text.strip().splitlines()) == 1 + 8  # header + one row per configuration
    assert {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "batch_size")} == {"batch_size/grid.png"}
    assert parent.info.status == "FINISHED" and parent.data.tags["suite.status"] == "completed"

    # Idempotence: the same command again runs nothing new.
    again = cli("run", "--problem", "linreg", "--optimizer", "sgd", "--lr", "0.01,0.1", "--momentum", "0,0.9",
                "--batch-size", "8,64", "--seeds", "2", "--epochs", "5", "--quiet")
    assert "0 run now (none), 16 done before (skipped)" in again.output
    assert len(children(mlflow_client, "linreg")) == 16


# stacks of 2: a stack's runs are written together when it ends, so 4 stacks finish at different times;
# beside them `hold` (below) trains one run per unit, which never ends in the killed invocation
GRID = ["run", "--optimizer", "sgd,hold", "--lr", "0.01,0.02", "--momentum", "0,0.5", "--batch-size", "4",
        "--seeds", "2", "--epochs", "3", "--device", "cpu", "--workers", "2", "--stack-size", "2",
        "--experiment", "killed"]
N_SPECS = 16
HOLD_PLUGIN = '''
import os
import signal

import torch
from suite import Param, hookimpl


class HoldSGD(torch.optim.SGD):
    def __init__(self, params, hold, **kwargs):
        super().__init__(params, **kwargs)
        self.hold = hold

    def step(self, closure=None):
        if self.hold:
            signal.pause()  # holds its run RUNNING until the invocation is killed
        return super().step(closure)


def make_hold(ctx, lr, momentum):
    # under SUITE_TEST_HOLD, the one run lr=0.02 momentum=0.5 seed 1 holds at its first step
    hold = bool(os.environ.get("SUITE_TEST_HOLD")) and (lr, momentum, ctx.seed) == (0.02, 0.5, 1)
    return HoldSGD(ctx.model.parameters(), hold, lr=lr, momentum=momentum)


@hookimpl
def suite_register_optimizers(register):
    register(name="hold", factory=make_hold, description="SGD; one run holds at its first step under SUITE_TEST_HOLD",
             params=[Param("lr", 0.01, low=0, low_inclusive=False), Param("momentum", 0.0, low=0)])
'''
HOLD_STARTED = re.compile(r"^started: .*\bhold lr=0\.02 β=0\.5 b4 s1$")  # the run that holds is RUNNING in the store


@pytest.mark.parametrize("writer", ["auto", "always"])  # always: a writer process writes the runs (and dies too)
def test_kill_9_mid_grid_then_rerun_finishes_with_one_completed_run_per_spec(tmp_path, workdir, mlflow_client,
                                                                             writer):
    # killed once 2 runs are reported done and the run that holds is reported RUNNING (events on its
    # stderr, not a clock); its workers must not outlive it, and a writer process exits once it has
    # written what it received
    env = pip_install_target(write_plugin_package(tmp_path / "src", "suite-hold", "suite_hold", HOLD_PLUGIN),
                             tmp_path / "site")
    kill_at(GRID, workdir, {**env, "SUITE_TRACKING_WRITER": writer, "SUITE_TEST_HOLD": "1"}, RUN_LINE, 2,
            also=HOLD_STARTED)
    before = children(mlflow_client, "killed")
    n_completed_before = sum(r.data.tags["suite.status"] == "completed" for r in before)
    assert 2 <= n_completed_before < N_SPECS
    running = {(r.data.params["optimizer"], r.data.params["optimizer.lr"], r.data.params["optimizer.momentum"],
                r.data.params["seed"]) for r in before if r.info.status == "RUNNING"}
    assert ("hold", "0.02", "0.5", "1") in running  # the run that holds; others may have been in flight too

    rerun = suite_cmd(*GRID, cwd=workdir, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "left RUNNING by a dead invocation as interrupted" in rerun.stderr
    assert f"{n_completed_before} done before (skipped)" in rerun.stdout

    after = children(mlflow_client, "killed")
    assert not [r for r in after if r.info.status == "RUNNING"]
    completed = [r for r in after if r.data.tags["suite.status"] == "completed"]
    hashes = [r.data.tags["suite.spec_hash"] for r in completed]
    assert len(hashes) == N_SPECS and len(set(hashes)) == N_SPECS  # exactly one completed run per spec
    interrupted = [r for r in after if r.data.tags["suite.status"] == "interrupted"]
    assert interrupted and all(r.info.status == "KILLED" for r in interrupted)
    parents = [r for r in runs_of(mlflow_client, "killed") if r.data.tags.get("suite.kind") == "grid"]
    assert sorted(r.data.tags["suite.status"] for r in parents) == ["completed", "interrupted"]


FAILING_PLUGIN = '''
import os

import torch
from suite import Param, hookimpl


class BoomSGD(torch.optim.SGD):
    def step(self, closure=None):
        raise RuntimeError("boom: this optimizer always fails")


class CrashSGD(torch.optim.SGD):
    def step(self, closure=None):
        os._exit(3)  # the worker process dies (as on a segfault or an out-of-memory kill)


def make_boom(ctx, lr):
    return BoomSGD(ctx.model.parameters(), lr=lr)


def make_crash(ctx, lr):
    return CrashSGD(ctx.model.parameters(), lr=lr)


@hookimpl
def suite_register_optimizers(register):
    register(name="boom", factory=make_boom, description="fails at its first step",
             params=[Param("lr", 0.01, low=0, low_inclusive=False)])
    register(name="crash", factory=make_crash, description="kills its process at its first step",
             params=[Param("lr", 0.01, low=0, low_inclusive=False)])
'''


def test_divergence_and_a_failing_plugin_do_not_stop_the_grid(tmp_path, workdir, mlflow_client):
    pkg = write_plugin_package(tmp_path / "src", "suite-boom", "suite_boom", FAILING_PLUGIN)
    env = pip_install_target(pkg, tmp_path / "site")

    res = suite_cmd("run", "--optimizer", "sgd,boom,crash", "--lr", "0.05,100", "--seeds", "2", "--epochs", "3",
                    "--diverge-factor", "50", "--device", "cpu", "--workers", "2", "--experiment", "iso",
                    env=env, cwd=workdir)
    assert res.returncode == 1, res.stdout + res.stderr
    kids = children(mlflow_client, "iso")
    by = {}
    for r in kids:
        by.setdefault((r.data.params["optimizer"], r.data.params["optimizer.lr"]), []).append(r)
    assert len(kids) == 12
    assert {r.data.tags["suite.status"] for r in by[("sgd", "0.05")]} == {"completed"}
    diverged = by[("sgd", "100.0")]
    assert {r.data.tags["suite.status"] for r in diverged} == {"diverged"}
    assert all("grew past 50x" in r.data.tags["suite.reason"] or "non-finite" in r.data.tags["suite.reason"]
               for r in diverged)
    failed = by[("boom", "0.05")] + by[("boom", "100.0")]
    assert {r.data.tags["suite.status"] for r in failed} == {"failed"}
    for r in failed:
        assert r.info.status == "FAILED" and "boom: this optimizer always fails" in r.data.tags["suite.reason"]
        tb = Path(mlflow_client.download_artifacts(r.info.run_id, "traceback.txt")).read_text()
        assert "RuntimeError: boom" in tb and "suite_boom.py" in tb
    assert res.stderr.count("FAILED linreg-boom-constant") == 4
    crashed = by[("crash", "0.05")] + by[("crash", "100.0")]
    assert {r.data.tags["suite.status"] for r in crashed} == {"failed"}
    assert all("died (exit code 3)" in r.data.tags["suite.reason"] for r in crashed)
    assert "boom: this optimizer always fails" in res.stderr
    assert "2 diverged" in res.stdout


DIES_IN_WORKERS = '''
import multiprocessing
import os

if multiprocessing.parent_process() is not None:  # only inside suite's worker processes
    os._exit(7)
'''


def test_workers_that_cannot_start_end_the_grid_without_hanging(tmp_path, workdir, mlflow_client):
    env = pip_install_target(write_plugin_package(tmp_path / "src", "suite-dies", "suite_dies", DIES_IN_WORKERS),
                             tmp_path / "site")
    res = suite_cmd("run", "--lr", "0.01,0.02", "--epochs", "1", "--device", "cpu", "--workers", "2",
                    "--experiment", "dies", "--quiet", env=env, cwd=workdir, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "died 3 times before running anything (last exit code 7)" in res.stderr
    runs = runs_of(mlflow_client, "dies")
    assert [r.data.tags["suite.status"] for r in runs] == ["failed"]  # the parent; no run started
    assert runs[0].info.status == "FAILED"


# worker processes; in-process; in-process with a writer process writing the runs
@pytest.mark.parametrize(("workers", "writer"), [("2", "auto"), ("1", "auto"), ("1", "always")])
def test_sigterm_marks_runs_in_flight_interrupted(workdir, mlflow_client, workers, writer):
    # Runs far longer than any machine needs (the signal ends them). The signal comes right after
    # the first "started:" line, which --verbose prints once a run is RUNNING in the store: an event.
    args = ["run", "--lr", "0.01,0.02", "--batch-size", "2", "--seeds", "2", "--epochs", "100000", "--device", "cpu",
            "--workers", workers, "--experiment", "term", "--verbose"]
    proc = subprocess.Popen([str(BIN / "suite"), *args], cwd=workdir, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SUITE_TRACKING_WRITER": writer})
    output = Output(proc)
    output.until(lambda lines: any(line.startswith("started: ") for line in lines))
    assert any(r.info.status == "RUNNING" for r in children(mlflow_client, "term"))
    if writer == "always":  # to the whole process group, as a terminal's Ctrl-C: the writer ignores it
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=HANG_GUARD_S)
    err = output.text("stderr") + rest
    assert proc.returncode == 130, err
    assert "interrupted" in err
    runs = runs_of(mlflow_client, "term")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert [r for r in runs if r.data.tags.get("suite.status") == "interrupted" and r.info.status == "KILLED"]
    # No worker outlived the command: every process of its session exits (multiprocessing's resource
    # tracker may take a moment to go), waited for on their pidfds; one left running fails the hang guard.
    wait_for_session(proc.pid)


def test_quick_benchmark_file_runs_and_reports_per_section(cli, workdir, mlflow_client):
    out = cli("run", str(ROOT / "benchmarks" / "quick.yaml"), "--device", "cpu", "--workers", "1", "--quiet").output
    # the per-experiment tables are in the report (and summary.md), a line points there
    assert "== momentum" not in out and "per-experiment tables" in out
    report = (workdir / "reports" / "quick" / "report.md").read_text()
    assert "\n## momentum\n" in report and "\n## averaging\n" in report
    runs = runs_of(mlflow_client, "quick")
    (parent,) = [r for r in runs if r.data.tags.get("suite.kind") == "grid"]
    kids = [r for r in runs if r.data.tags.get("suite.kind") == "run"]
    assert len(kids) == 12 and {r.data.tags["suite.section"] for r in kids} == {"momentum", "averaging"}
    assert parent.data.tags["suite.benchmark"].endswith("quick.yaml")
    md = Path(mlflow_client.download_artifacts(parent.info.run_id, "summary.md")).read_text()
    assert "Winner per batch size" in md and "- momentum batch 8: " in md and "- momentum batch 64: " in md
    # one paired comparison per section and batch size: a winner, or "no significant difference"
    assert re.search(r"averaging batch 16: ((ema|none) \(|no significant difference: best mean (ema|none) )", md), md
    # the loss curves are the report's (one panel per batch size), on the same parent run; the
    # summary does not draw a second, coarser set
    figs = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "report/report_files")}
    assert {"report/report_files/curves_momentum.png", "report/report_files/curves_averaging.png"} <= figs
    assert not mlflow_client.list_artifacts(parent.info.run_id, "curves")
    # final loss against batch size where a section has more than one (averaging has one)
    sizes = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "batch_size")}
    assert sizes == {"batch_size/momentum.png"}
