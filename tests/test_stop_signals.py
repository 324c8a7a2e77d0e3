"""One stop-signal policy for `suite run`, `suite tune` and `suite worker`: SIGTERM (as Ctrl-C)
marks the runs in flight interrupted, gives their trials back, and exits with code 130; no worker
process outlives the command."""

from __future__ import annotations

import re
import signal
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from suite.stores import open_storage
from tests.conftest import BIN, Output, runs_of, wait_for_session

pytestmark = pytest.mark.slow
HANG_GUARD = 120  # seconds: catches a hang, not a speed claim

TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "16", "--trials", "4",
        "--budget", "epochs:200", "--space", "optimizer.lr=log:0.001:0.01", "--set", "optimizer.momentum=0",
        "--set", "optimizer.weight_decay=0", "--pruner", "none", "--experiment", "stop", "--verbose"]


STARTED = re.compile(r"^started: |: started trial\(s\) ")  # --verbose's line; suite worker's (WorkerContext.started)


def _start_then_stop(args: list[str], cwd, stream: str = "stderr") -> tuple[subprocess.Popen, str]:
    """Start ``suite *args``; send SIGTERM right after its first line saying a run has started
    (RUNNING in the store; on ``stream``): an event, not a poll of the store. Returns the process,
    exited, and its stderr."""
    proc = subprocess.Popen([str(BIN / "suite"), *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output = Output(proc, stream)
    output.until(lambda lines: any(STARTED.search(line) for line in lines))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG_GUARD)
    return proc, output.text("stderr") + err


def _trial_runs_interrupted(client, experiment: str) -> None:
    runs = [r for r in runs_of(client, experiment) if r.data.tags.get("suite.kind") in ("trial", "run")]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert [r for r in runs if r.data.tags.get("suite.status") == "interrupted" and r.info.status == "KILLED"]


@pytest.mark.parametrize("workers", ["2", "1"])  # worker processes; in-process
def test_sigterm_stops_suite_tune_the_same_way(workdir, mlflow_client, workers):
    proc, err = _start_then_stop([*TUNE, "--workers", workers], workdir)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted:"), err
    _trial_runs_interrupted(mlflow_client, "stop")
    (name,) = optuna.get_all_study_names(open_storage(None))
    study = optuna.load_study(study_name=name, storage=open_storage(None))
    assert not study.get_trials(states=(TrialState.RUNNING,)), "a trial was left RUNNING"
    wait_for_session(proc.pid, HANG_GUARD)  # no worker outlives the command (a leaked one fails the guard)


def test_sigterm_stops_suite_worker_the_same_way(workdir, mlflow_client, tracking_uri):
    storage = str(workdir / "shared.journal")
    submit = subprocess.run([str(BIN / "suite"), *TUNE, "--storage", storage, "--submit-only"], cwd=workdir,
                            capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    proc, err = _start_then_stop(["worker", "--storage", storage, "--device", "cpu", "--workers", "1"], workdir,
                                 stream="stdout")
    assert proc.returncode == 130, err
    _trial_runs_interrupted(mlflow_client, "stop")
    (name,) = optuna.get_all_study_names(open_storage(storage))
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING], "a trial was left RUNNING"
    # the trial in hand was given back: failed, and enqueued again for the next worker
    assert len([t for t in trials if t.state == TrialState.WAITING]) == 4
    wait_for_session(proc.pid, HANG_GUARD)  # no worker outlives the command (a leaked one fails the guard)


def test_a_stop_signal_after_the_last_safe_point_still_stops_the_command():
    """A SIGTERM that arrives while the last unit's results are being written (no safe point
    follows) is not swallowed: leaving the block raises, so the command stops (exit 130)."""
    from suite.exec.signals import stop_requested, stop_signals

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with stop_signals():
            signal.raise_signal(signal.SIGTERM)  # delivered before it returns; the handler runs at the next call
            assert stop_requested()  # the flag is set, and no safe point comes
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are restored
    with stop_signals():  # a block without a signal ends normally
        pass
