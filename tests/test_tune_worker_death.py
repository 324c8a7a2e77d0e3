"""A tune worker killed with SIGKILL mid-trial: the command neither hangs nor loses a trial."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import optuna
import pytest

from suite.stores import open_storage
from suite.tuning.studies import n_counted
from tests.conftest import BIN, Output, runs_of, suite_cmd

pytestmark = pytest.mark.slow

# Small learning rates and a long budget: every trial runs for seconds, so both workers are busy.
ARGS = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "16", "--trials", "4",
        "--budget", "epochs:100", "--space", "optimizer.lr=log:0.001:0.01", "--set", "optimizer.momentum=0",
        "--set", "optimizer.weight_decay=0", "--workers", "2", "--pruner", "none", "--experiment", "killed",
        "--verbose"]
STARTED = re.compile(r"^started: \[[^\]]+\] trial (?P<trial>\d+)$")  # --verbose: its runs are RUNNING in the store


def worker_pids(parent: int) -> list[int]:
    """The parent's spawned worker processes (not multiprocessing's resource tracker)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and "spawn_main" in cmd and "resource_tracker" not in cmd:
            pids.append(int(proc.name))
    return pids


def running_worker(workers: list[int], in_store: set[str]) -> int | None:
    """A worker holding a trial Optuna has as running whose runs are in the MLflow store as
    running (``in_store``: their trial numbers): one worker may hold every running trial (a
    population), and a trial just claimed may not have its runs written yet. None if no worker
    does yet. Called with the workers stopped (SIGSTOP), so that what the stores say still holds
    when the victim is killed."""
    (name,) = [n for n in optuna.get_all_study_names(open_storage(None))
               if n.startswith("linreg/sgd-constant-none-shuffle/b16-")]
    holders = {int(t.user_attrs["suite.worker"].rpartition(":")[2])
               for t in optuna.load_study(study_name=name, storage=open_storage(None)).get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.RUNNING and "suite.worker" in t.user_attrs
               and str(t.number) in in_store}
    found = sorted(holders & set(workers))
    return found[0] if found else None


def signal_each(pids: list[int], sig: int) -> list[int]:
    """Send ``sig`` to each pid still alive; return those it reached."""
    reached = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            reached.append(pid)
        except ProcessLookupError:
            continue
    return reached


def test_a_killed_tune_worker_neither_hangs_nor_loses_trials(workdir, mlflow_client):
    proc = subprocess.Popen([str(BIN / "suite"), *ARGS], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = Output(proc, "stdout")

    def started_trials(lines: list[str]) -> set[str]:
        """The trials the command has said started (their runs RUNNING in the store)."""
        return {m["trial"] for line in lines if (m := STARTED.match(line))}

    try:
        # two trials' runs RUNNING in the store: both workers are busy (an event, read as printed)
        started = output.until(lambda lines: len(found := started_trials(lines)) >= 2 and found)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2, workers
        running = "tags.`suite.kind` = 'trial' and attributes.status = 'RUNNING'"
        victim = None
        while victim is None:
            # Stop both workers, so that none finishes or exits between reading the stores and the kill
            # (on a loaded machine a trial said to have started may already be done).
            stopped = signal_each(workers, signal.SIGSTOP)
            try:
                # every trial said to have started has its runs in the store (running, or ended since)
                said = {r.data.tags["suite.trial"]
                        for r in runs_of(mlflow_client, "killed", "tags.`suite.kind` = 'trial'")}
                assert started <= said, (started, said)
                in_store = {r.data.tags["suite.trial"] for r in runs_of(mlflow_client, "killed", running)}
                victim = running_worker(stopped, in_store)
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
            finally:
                signal_each(stopped, signal.SIGCONT)
            if victim is None:  # the trials said to have started ended meanwhile: the next one to start
                started = output.until(lambda lines, before=started: len(found := started_trials(lines)) > len(before)
                                       and found)
        rest, _ = proc.communicate(timeout=240)
        out = output.text("stdout") + rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out
    assert "died" in out
    assert runs_of(mlflow_client, "killed", "attributes.status = 'RUNNING'") == []
    killed = runs_of(mlflow_client, "killed", "attributes.status = 'KILLED'")
    assert killed and all(r.data.tags["suite.status"] == "interrupted" for r in killed)
    # exactly the runs of the trials the killed worker held (a worker holds a population of trials)
    (name,) = [n for n in optuna.get_all_study_names(open_storage(None))
               if n.startswith("linreg/sgd-constant-none-shuffle/b16-")]
    held = [t for t in optuna.load_study(study_name=name, storage=open_storage(None)).get_trials(deepcopy=False)
            if t.user_attrs.get("suite.worker", "").endswith(f":{victim}")]
    assert held and all(t.state == optuna.trial.TrialState.FAIL for t in held)
    assert sorted(int(r.data.tags["suite.trial"]) for r in killed) == sorted(
        t.number for t in held for _ in t.user_attrs["suite.spec_hashes"])

    again = suite_cmd(*ARGS, cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    study = optuna.load_study(study_name=name, storage=open_storage(None))
    assert n_counted(study) == 4
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert optuna.trial.TrialState.RUNNING not in states


CLAIM_AND_WAIT = """
import sys
import optuna
from suite.distributed.worker import claim
from suite.stores import HeartbeatPolicy, open_storage, worker_label
storage = open_storage(sys.argv[1], HeartbeatPolicy(1, 2))
(name,) = optuna.get_all_study_names(storage)
study = optuna.load_study(study_name=name, storage=storage)
assert claim(study, storage, storage.get_study_id_from_name(name), worker_label()) is not None
print("claimed", flush=True)
sys.stdin.read()  # killed here: after its claim, before it labels the trial or runs its heartbeat thread
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_claimed_by_a_worker_killed_before_its_heartbeat_thread_is_retried(workdir, kind):
    """A rerun neither hangs on nor loses a trial whose claimant died right after claiming it.
    A database storage: Optuna fails only trials that have a heartbeat, and the claim records the
    first one. A journal file: a lost trial is found by its worker's label, set with the claim."""
    storage = f"sqlite:///{workdir / 'optuna.db'}" if kind == "sqlite" else str(workdir / "optuna.journal")
    args = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "16", "--trials", "2",
            "--budget", "epochs:1", "--workers", "1", "--device", "cpu", "--storage", storage,
            "--heartbeat", "1", "--grace", "2", "--quiet"]
    submitted = suite_cmd(*args, "--submit-only", cwd=workdir)
    assert submitted.returncode == 0, submitted.stderr
    claimant = subprocess.Popen([str(BIN / "python"), "-c", CLAIM_AND_WAIT, storage], cwd=workdir,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert claimant.stdout is not None and claimant.stdout.readline() == "claimed\n"
    finally:
        claimant.kill()
        claimant.wait()
    rerun = suite_cmd(*args, cwd=workdir, timeout=300)  # the guard catches a hang; not a speed claim
    assert rerun.returncode == 0, rerun.stderr
    (name,) = optuna.get_all_study_names(open_storage(storage))
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    assert n_counted(study) == 2
    assert [t.state for t in study.get_trials() if t.number == 0] == [optuna.trial.TrialState.FAIL]  # the lost one
