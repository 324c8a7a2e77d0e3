"""Several invocations on one machine at once: a fresh store is created once, and the same grid
started twice is run once (the invocations share it through claims, see suite/grids/locks.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from suite.engine.loop import RunResult
from suite.grids.locks import Claims
from suite.registry import get_registry
from suite.tracking.tracker import Tracker
from tests.conftest import BIN, Output, runs_of
from tests.test_kill_events import RUN_LINE

pytestmark = pytest.mark.slow


def start(*args: str, cwd, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "suite"), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def finish_all(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def completed_runs(client, experiment: str) -> list:
    return [r for r in runs_of(client, experiment, "tags.`suite.kind` = 'run'")
            if r.data.tags.get("suite.status") == "completed"]


RUN = ["run", "--problem", "linreg", "--lr", "0.1", "--epochs", "1", "--device", "cpu", "--quiet"]
TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "32", "--trials", "2",
        "--budget", "epochs:1", "--pruner", "none", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("command", [RUN, TUNE], ids=["run", "tune"])
def test_four_simultaneous_first_starts_on_a_fresh_sqlite_store(workdir, tracking_uri, command):
    from mlflow import MlflowClient

    assert not (workdir / "mlflow.db").exists()
    results = finish_all([start(*command, cwd=workdir) for _ in range(4)])
    for code, _stdout, stderr in results:
        assert code == 0, stderr
        assert "Traceback" not in stderr
    mlflow_client = MlflowClient(tracking_uri=tracking_uri)
    if command is RUN:  # one spec, asked for four times at once: it runs once, the others report it
        assert len(completed_runs(mlflow_client, "linreg")) == 1
    else:  # four tunings of one study share its two trials
        trials = [r for r in runs_of(mlflow_client, "linreg", "tags.`suite.kind` = 'trial'")]
        assert len(trials) == 2


GRID = ["run", "--problem", "linreg", "--lr", "0.01,0.02,0.05,0.1,0.2,0.3", "--batch-size", "8,16", "--seeds", "2",
        "--epochs", "30", "--engine", "loop", "--device", "cpu", "--experiment", "shared"]


# always: each invocation's runs are written by a writer process, and a spec's claim is released
# only once its run is written: an invocation waiting for the other's specs must not hold its own
@pytest.mark.parametrize("writer", ["auto", "always"])
def test_two_simultaneous_invocations_of_one_grid_share_it(workdir, mlflow_client, writer):
    env = {"SUITE_TRACKING_WRITER": writer}
    (a_code, a_out, a_err), (b_code, b_out, b_err) = finish_all([start(*GRID, cwd=workdir, env=env),
                                                                 start(*GRID, cwd=workdir, env=env)], timeout=300)
    assert a_code == 0, a_err
    assert b_code == 0, b_err
    hashes = [r.data.tags["suite.spec_hash"] for r in completed_runs(mlflow_client, "shared")]
    assert len(hashes) == 24 and len(set(hashes)) == 24  # every spec exactly once
    for out in (a_out, b_out):
        assert "24 runs: " in out
        assert "winner per batch size" in out
    table = [line for line in a_out.splitlines() if line.startswith("|") or "batch" in line]
    assert table == [line for line in b_out.splitlines() if line.startswith("|") or "batch" in line]


def test_a_grid_waits_for_specs_another_invocation_holds_then_reports_or_runs_them(workdir, mlflow_client,
                                                                                 tracking_uri):
    """Another invocation (this test) holds 12 of the 24 specs: the grid runs the other 12, waits,
    reports the 6 the other one finished, and runs the 6 it gave back unfinished (it died)."""
    from suite.api import runs

    registry = get_registry()
    flags = dict(problem="linreg", lr="0.01,0.02,0.05,0.1,0.2,0.3", batch_size="8,16", seeds="2", epochs=2)
    specs = runs.plan_flags(registry, flags).specs
    assert len(specs) == 24
    tracker = Tracker("held", tracking_uri)
    other = Claims(tracker.tracking_uri, "held")
    held = specs[::2]
    for spec in held:
        assert other.try_claim(spec.hash)
    proc = start("run", "--problem", "linreg", "--lr", flags["lr"], "--batch-size", "8,16", "--seeds", "2",
                 "--epochs", "2", "--engine", "loop", "--device", "cpu", "--experiment", "held", "--verbose",
                 cwd=workdir)
    try:
        # --verbose's line per run once it is in the store: the 12 free specs' are the event
        output = Output(proc)
        said = output.until(lambda lines: len(found := [line for line in lines if RUN_LINE.match(line)]) >= 12
                            and found[:12])
        assert all(line.endswith(": completed") for line in said), said
        assert proc.poll() is None  # it cannot finish while this test holds claims (its output below says it waited)
        assert len(completed_runs(mlflow_client, "held")) == 12
        for spec in held[:6]:  # the other invocation finishes these ...
            run_id = tracker.start_run(spec, registry)
            tracker.finish(run_id, RunResult(spec=spec, history=[(1, {"val_loss": 0.5})]))
            tracker.log_metrics(run_id, 1, {"val_loss": 0.5})
        other.release_all()  # ... and gives the other six back unfinished
        code, stdout, stderr = finish_all([proc], timeout=300)[0]
        stdout, stderr = output.text("stdout") + stdout, output.text("stderr") + stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, stderr
    assert "24 runs: 18 run now (18 completed), 6 done before (skipped), 6 of them by another invocation" in stdout
    hashes = [r.data.tags["suite.spec_hash"] for r in completed_runs(mlflow_client, "held")]
    assert len(hashes) == 24 and len(set(hashes)) == 24


def test_two_invocations_each_waiting_for_the_others_spec_both_finish(workdir, mlflow_client):
    """Two specs, two invocations started together, each writing through a writer process: each
    runs one spec and then waits for the other's. A claim is released once its run is written,
    and an invocation that waits first writes its own runs: neither waits on the other forever."""
    grid = ["run", "--problem", "linreg", "--lr", "0.01,0.02", "--epochs", "40", "--engine", "loop", "--device",
            "cpu", "--workers", "1", "--quiet", "--experiment", "pair"]
    env = {"SUITE_TRACKING_WRITER": "always"}
    procs = [start(*grid, cwd=workdir, env=env), start(*grid, cwd=workdir, env=env)]
    try:
        results = finish_all(procs, timeout=120)
    finally:
        for p in procs:
            p.kill()
    for code, _stdout, stderr in results:
        assert code == 0, stderr
    hashes = [r.data.tags["suite.spec_hash"] for r in completed_runs(mlflow_client, "pair")]
    assert len(hashes) == 2 and len(set(hashes)) == 2
