"""``kill -9`` of ``suite run`` and ``suite tune`` at randomly chosen events (the Nth run or trial
reported on stderr, seeded): every run ever reported as finished is in the store, with its
status and its metrics, on the stacked and the loop engine, with the writer process forced on
and off; and the same command again finishes the rest. The store is read with ``sqlite3``."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import BIN, suite_cmd, wait_for_session

pytestmark = pytest.mark.slow

SEED = 28
KILLS = 4  # per grid: each kills a grid of its own (a writer that was behind drains it all), in one experiment
GRID_SPECS = 8  # 2 stacks of 4


def grid(part: int | None, engine: str) -> list[str]:
    """Grid ``part`` (its own 2 learning rates x 4 seeds), or every part (``None``)."""
    parts = range(KILLS) if part is None else [part]
    lrs = ",".join(f"{0.001 * (2 * p + j + 1):.3f}" for p in parts for j in range(2))
    return ["run", "--problem", "linreg", "--set", "problem.n=200", "--optimizer", "sgd", "--lr", lrs, "--seeds", "4",
            "--epochs", "1",
            "--stack-size", "4", "--workers", "1", "--device", "cpu", "--experiment", "kill", "--engine", engine]


RUN_LINE = re.compile(r"^\d+/\d+ .*\| (?P<name>.+): (?P<status>\w+)$")  # the progress line of a finished run
TRIALS = 4
TRIAL_LINE = re.compile(r"^\[(?P<study>[^\]]+)\] trial (?P<number>\d+): (?P<outcome>\S+)")
HANG_GUARD_S = 300  # catches a hang; not a speed claim


def kill_at(args: list[str], cwd: Path, env: dict[str, str], pattern: re.Pattern, n: int,
            also: re.Pattern | None = None) -> list[re.Match]:
    """Run ``suite *args --verbose`` (a line per run and per trial); SIGKILL it right after the
    ``n``-th stderr line matching ``pattern`` (and once a line matching ``also`` has been seen);
    wait until every process it started has exited. Returns the matching lines it printed."""
    proc = subprocess.Popen([str(BIN / "suite"), *args, "--verbose"], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    waiting_for_also = also is not None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = pattern.search(line.rstrip("\n"))
            if match and len(seen) < n:
                seen.append(match)
            elif also is not None and also.search(line.rstrip("\n")):
                waiting_for_also = False
            if len(seen) == n and not waiting_for_also:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
        try:
            wait_for_session(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything left of a failed wait
    assert len(seen) == n, f"it ended after {len(seen)} of the {n} lines waited for"
    return seen


def stored_runs(workdir: Path) -> list[dict]:
    """Every run of the store with its MLflow status, the tags read here and its val_loss history size."""
    if not (workdir / "mlflow.db").exists():  # before the first invocation made it
        return []
    db = sqlite3.connect(workdir / "mlflow.db")  # read-write: after a kill -9 sqlite may have a hot journal to recover
    try:
        tags: dict[str, dict[str, str]] = {}
        for run, key, value in db.execute("SELECT run_uuid, key, value FROM tags"):
            tags.setdefault(run, {})[key] = value
        points = dict(db.execute("SELECT run_uuid, count(*) FROM metrics WHERE key = 'val_loss' GROUP BY run_uuid"))
        best = {r for (r,) in db.execute("SELECT run_uuid FROM latest_metrics WHERE key = 'best_val_loss'")}
        return [{"status": status, "tags": tags.get(run, {}), "val_loss": points.get(run, 0), "best": run in best}
                for run, status in db.execute("SELECT run_uuid, status FROM runs")]
    finally:
        db.close()


def finished_runs(workdir: Path, kind: str) -> list[dict]:
    """The runs of ``kind`` the store holds as finished: their status, their metrics to the end."""
    return [r for r in stored_runs(workdir) if r["tags"].get("suite.kind") == kind and r["status"] != "RUNNING"
            and r["tags"].get("suite.status") in ("completed", "diverged", "stopped") and r["val_loss"] and r["best"]]


@pytest.mark.parametrize("writer", ["always", "never"])
@pytest.mark.parametrize("engine", ["stacked", "loop"])
def test_every_run_reported_finished_survives_kill_9_and_a_rerun_finishes_the_rest(workdir, engine, writer):
    rng = random.Random(f"{SEED}-{engine}-{writer}")
    env = {"SUITE_TRACKING_WRITER": writer}
    reported: dict[str, str] = {}  # run name -> status, over every killed invocation
    for part in range(KILLS):
        for line in kill_at(grid(part, engine), workdir, env, RUN_LINE, rng.randint(1, GRID_SPECS - 1)):
            reported[line["name"]] = line["status"]
        stored = {r["tags"]["mlflow.runName"]: r["tags"]["suite.status"] for r in finished_runs(workdir, "run")}
        assert {name: stored.get(name) for name in reported} == reported  # none reported and missing

    rerun = suite_cmd(*grid(None, engine), "--quiet", cwd=workdir, env=env, timeout=HANG_GUARD_S)
    assert rerun.returncode == 0, rerun.stderr
    runs = [r for r in stored_runs(workdir) if r["tags"].get("suite.kind") == "run"]
    assert not [r for r in runs if r["status"] == "RUNNING"]
    done = finished_runs(workdir, "run")
    hashes = [r["tags"]["suite.spec_hash"] for r in done]
    assert len(hashes) == KILLS * GRID_SPECS and len(set(hashes)) == len(hashes)  # one finished run per spec
    assert len({r["val_loss"] for r in done}) == 1  # every one with its whole history, killed invocations' too
    assert {r["tags"]["mlflow.runName"] for r in done} >= set(reported)


@pytest.mark.parametrize("writer", ["always", "never"])
def test_every_trial_reported_survives_kill_9_and_a_rerun_finishes_the_studies(workdir, writer):
    rng = random.Random(f"{SEED}-tune-{writer}")
    env = {"SUITE_TRACKING_WRITER": writer}
    sizes = ["32", "16"]  # a study each: each kill stops a study of its own

    def tune(batch_size: str) -> list[str]:
        return ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", batch_size, "--trials",
                str(TRIALS), "--budget", "epochs:1", "--population", "2", "--workers", "1", "--device", "cpu",
                # a database storage: a journal file's lock, left by a killed process, holds a rerun for 30 s
                "--storage", "sqlite:///optuna.db"]

    reported: dict[tuple[str, str], str] = {}  # (study, trial number) -> its value, or pruned / fail
    for size in sizes:
        for line in kill_at(tune(size), workdir, env, TRIAL_LINE, rng.randint(1, TRIALS - 1)):
            reported[line["study"], line["number"]] = line["outcome"]
        trial_runs: dict[tuple[str, str], list[dict]] = {}
        for r in stored_runs(workdir):
            if r["tags"].get("suite.kind") == "trial":
                trial_runs.setdefault((r["tags"]["suite.study"], r["tags"]["suite.trial"]), []).append(r)
        for key, outcome in reported.items():
            runs = trial_runs.get(key, [])
            assert runs and all(r["status"] != "RUNNING" and r["val_loss"] and r["best"] for r in runs), (key, runs)
            state = {r["tags"].get("suite.trial_state") for r in runs}
            if outcome[0].isdigit():  # a value: the trial completed, and so did each of its runs
                assert state == {"COMPLETE"} and all(r["tags"]["suite.status"] == "completed" for r in runs)
            else:
                assert state == {outcome.upper()}

    rerun = suite_cmd(*tune(",".join(sizes)), "--quiet", cwd=workdir, env=env, timeout=HANG_GUARD_S)
    assert rerun.returncode == 0, rerun.stderr
    runs = [r for r in stored_runs(workdir) if r["tags"].get("suite.kind") == "trial"]
    assert not [r for r in runs if r["status"] == "RUNNING"]
    finished = {(r["tags"]["suite.study"], r["tags"]["suite.trial"]) for r in runs}
    for study in optuna.get_all_study_names(storage=f"sqlite:///{workdir / 'optuna.db'}"):
        loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{workdir / 'optuna.db'}")
        counted = [t.number for t in loaded.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(counted) == TRIALS  # the rest was finished, and --trials kept
        assert {(study, str(number)) for number in counted} <= finished  # each with its runs in MLflow
