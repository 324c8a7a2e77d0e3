"""The writer process (:mod:`suite.tracking.writer`): a tracker on a local sqlite store hands its
writes to it inside ``batched()``; a failure there is raised where it always was, with nothing
lost; a writer that dies is replaced by the tracker writing itself; callbacks wait for the write;
training gives the writer a core; and the child imports neither torch nor MLflow.

(Row-for-row equality with MLflow's own writes: ``tests/test_tracking_direct.py``, writer-process;
a grid killed with SIGKILL or stopped by SIGTERM while a writer runs: ``tests/test_grid_run.py``.)"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from suite.exec import cores
from suite.registry import get_registry
from suite.tracking import records
from suite.tracking.tracker import Tracker
from tests.conftest import runs_of, still_running
from tests.test_tracking_bulk import _history, _result, _specs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def writer_always(monkeypatch):
    monkeypatch.setenv("SUITE_TRACKING_WRITER", "always")


HANG_GUARD_S = 120  # catches a writer that never exits; not a speed claim


def _gone(pid: int) -> bool:
    """Whether process ``pid`` exits (waited for on its pidfd: an event, not a poll); False only if
    it is still running after the hang guard."""
    return not still_running([pid], HANG_GUARD_S)


def _values(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_batch_the_writer_cannot_write_fails_as_before_and_the_rest_is_written(workdir, tracking_uri,
                                                                                 writer_always):
    """A batch that fails in the writer (here: it ends a run the store does not have) is raised
    by the tracker as the same error its own write raises; the batches sent after it are taken
    back, and every run that can be written is written (run by run, as batched() always did)."""
    tracker = Tracker("failing", tracking_uri)
    spec = _specs(1)[0]
    with pytest.raises(sqlite3.IntegrityError, match="not in the store"):
        with tracker.batched():
            pid = tracker.writer_pid
            assert pid is not None
            run_id = tracker.start_run(spec, get_registry())
            tracker.commit()  # the writer creates the run
            tracker.log_metrics(run_id, 1, {"val_loss": 1.0})
            tracker.set_status("0" * 32, "FINISHED")  # a run that is not in the store: this batch fails
            tracker.commit()
            tracker.log_metrics(run_id, 2, {"val_loss": 0.5})
            tracker.commit()  # sent after the failure: refused by the writer, taken back
            tracker.finish(run_id, _result(spec, 0))
    assert tracker.writer_pid is None and _gone(pid)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["suite.status"] == "completed"
    assert _values(client, run_id, "val_loss") == [(1, 1.0), (2, 0.5)]  # nothing of the refused batches lost
    assert "best_val_loss" in run.data.metrics  # nor of the run's end, queued after the failure


def test_a_writer_that_dies_is_replaced_by_the_tracker_writing_itself(workdir, tracking_uri, writer_always):
    tracker = Tracker("killed", tracking_uri)
    specs = _specs(3)
    with tracker.batched():
        ids = [tracker.start_run(spec, get_registry()) for spec in specs]
        tracker.commit(wait=True)
        os.kill(tracker.writer_pid, signal.SIGKILL)
        for spec, run_id in zip(specs, ids, strict=True):
            for step, m in _history(0):
                tracker.log_metrics(run_id, step, m)
            tracker.commit()
            tracker.finish(run_id, _result(spec, 0))
    assert tracker.writer_pid is None
    client = MlflowClient(tracking_uri)
    for run_id in ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and len(_values(client, run_id, "train_loss")) == len(_history(0))


def test_after_write_waits_until_the_writer_has_written(workdir, tracking_uri, writer_always):
    """What a grid does before it releases a spec's claim: the callback runs once the write is in
    the store, not when it is handed over (here the store is locked by another connection)."""
    tracker = Tracker("claims", tracking_uri)
    called = []
    blocker = sqlite3.connect(workdir / "mlflow.db", isolation_level=None)
    with tracker.batched():
        run_id = tracker.start_run(_specs(1)[0], get_registry())
        blocker.execute("BEGIN IMMEDIATE")  # the writer's transaction waits for this one
        tracker.commit()
        tracker.after_write(lambda: called.append(run_id))
        time.sleep(0.5)
        tracker.commit()
        assert called == []
        blocker.execute("ROLLBACK")
        tracker.commit(wait=True)
        assert called == [run_id]
    assert MlflowClient(tracking_uri).get_run(run_id).info.status == "RUNNING"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a writer process takes a core only where there are two")
def test_training_gives_the_writer_a_core(workdir, tracking_uri, writer_always):
    import torch

    all_cores = cores.available()
    torch.set_num_threads(all_cores)
    tracker = Tracker("cores", tracking_uri)
    with tracker.batched():
        assert tracker.writer_pid is not None
        assert cores.available() == all_cores - 1
        assert torch.get_num_threads() <= all_cores - 1
    assert cores.available() == all_cores


def test_batched_settle_false_leaves_the_last_writes_to_a_later_read(workdir, tracking_uri, writer_always):
    """The grid's way: batched() returns with its last batch still being written (here the store
    is locked by another connection meanwhile); a read waits for it, and settle() ends the writer."""
    tracker = Tracker("later", tracking_uri)
    spec = _specs(1)[0]
    blocker = sqlite3.connect(workdir / "mlflow.db", isolation_level=None, check_same_thread=False)
    with tracker.batched(settle=False):
        run_id = tracker.start_run(spec, get_registry())
        tracker.finish(run_id, _result(spec, 0))
        blocker.execute("BEGIN IMMEDIATE")
    assert tracker.writer_pid is not None  # still writing
    unlock = threading.Timer(0.5, lambda: blocker.execute("ROLLBACK"))
    unlock.start()
    t0 = time.monotonic()
    assert tracker.run_status(run_id) == "FINISHED"  # the read waited for the writer
    assert time.monotonic() - t0 >= 0.4
    unlock.join()
    tracker.settle()
    assert tracker.writer_pid is None


def test_the_writer_process_imports_neither_torch_nor_mlflow(workdir, tracking_uri):
    """The child itself, run as the tracker runs it, under ``python -X importtime``: it writes a
    batch that creates a run with a spec.yaml made there, and imports none of the heavy libraries."""
    import pickle

    from suite.specs.spec import yaml_text
    from suite.tracking.writer import wire

    tracker = Tracker("child", tracking_uri)
    run_id = "c" * 32
    batch = [records.PendingRun(run_id, create=True, start_time=1, create_tags={"mlflow.runName": "child"},
                                artifacts={"spec.yaml": records.Deferred(yaml_text, {"spec_hash": "x", "seed": 3})})]
    acks, child_acks = os.pipe()
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "suite.tracking.writer",
                             str(tracker._direct.path), tracker._direct.artifact_root, str(os.getpid()),
                             str(child_acks)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(child_acks,),
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(child_acks)
    data = pickle.dumps((7, tracker.experiment_id, wire(batch)))
    _, err = proc.communicate(len(data).to_bytes(8, "little") + data, timeout=120)
    with os.fdopen(acks, "rb") as f:
        assert pickle.load(f) == (7, True)  # the batch's number, and written
    assert proc.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in err.decode().splitlines()
                if line.startswith("import time:")}
    assert "sqlite3" in imported and "suite" in imported  # what it needs (the importtime lines are there)
    assert not imported & {"torch", "mlflow", "sqlalchemy", "optuna", "matplotlib", "numpy", "pandas"}
    client = MlflowClient(tracking_uri)
    assert client.get_run(run_id).info.run_name == "child"
    assert Path(client.download_artifacts(run_id, "spec.yaml")).read_text() == "spec_hash: x\nseed: 3\n"


def test_merged_batches_keep_every_write_in_order():
    first = records.PendingRun("a", create=True, start_time=1, create_tags={"x": "1"},
                               params=[records.RunParam("p", "1")], metrics=[("m", 1.0, 1, 1)])
    second = records.PendingRun("a", metrics=[("m", 2.0, 2, 2)], tags={"x": "2"}, status="FINISHED", end_time=5)
    third = records.PendingRun("b", metrics=[("m", 3.0, 3, 3)])
    fourth = records.PendingRun("a", status="RUNNING", artifacts={"f": "t"})
    from suite.tracking.writer import merge_runs

    a, b = merge_runs([first, second, third, fourth])
    assert (a.run_id, a.create, a.create_tags, a.tags) == ("a", True, {"x": "1"}, {"x": "2"})
    assert a.metrics == [("m", 1.0, 1, 1), ("m", 2.0, 2, 2)] and a.params == [records.RunParam("p", "1")]
    assert (a.status, a.end_time, a.artifacts) == ("RUNNING", None, {"f": "t"})
    assert b.metrics == [("m", 3.0, 3, 3)]
    assert first.metrics == [("m", 1.0, 1, 1)]  # the records merged are not changed


def test_a_batch_written_but_not_confirmed_is_written_again_without_harm(workdir, tracking_uri):
    """A writer that dies between its commit and its answer: the tracker writes the batch again
    itself, and the run it created is not created twice (the rest of its rows are the same)."""
    from copy import deepcopy

    tracker = Tracker("unconfirmed", tracking_uri)
    run_id = "d" * 32
    batch = [records.PendingRun(run_id, create=True, start_time=1, create_tags={"mlflow.runName": "once", "a": "1"},
                                params=[records.RunParam("p", "1")], metrics=[("m", 1.0, 5, 1), ("m", 2.0, 6, 2)],
                                tags={"b": "2"}, status="FINISHED", end_time=9)]
    tracker.queue._write(deepcopy(batch))  # what the writer did before it died
    before = _tables(workdir / "mlflow.db")
    tracker.queue._write(tracker.queue._direct_rewrite(deepcopy(batch)))  # what the tracker does with it
    assert _tables(workdir / "mlflow.db") == before


def _tables(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as conn:
        return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}")))
                for t in ("runs", "tags", "params", "metrics", "latest_metrics")}


SENDER = """
import os, pickle, subprocess, sys
from suite.tracking import records
from suite.tracking.writer import wire

db, root, experiment_id, n = sys.argv[1:]
acks, child_acks = os.pipe()
proc = subprocess.Popen([sys.executable, "-m", "suite.tracking.writer", db, root, str(os.getpid()), str(child_acks)],
                        stdin=subprocess.PIPE, pass_fds=(child_acks,))
for i in range(int(n)):
    batch = [records.PendingRun(f"{i:032x}", create=True, start_time=1, create_tags={"mlflow.runName": f"r{i}"},
                                metrics=[("val_loss", 1.0 / (i + 1), 1, 0)], status="FINISHED", end_time=2)]
    data = pickle.dumps((i + 1, experiment_id, wire(batch)))
    proc.stdin.write(len(data).to_bytes(8, "little") + data)
proc.stdin.flush()
print(proc.pid, flush=True)  # every batch is in the writer's pipe
sys.stdin.read()  # until it is killed
"""


def test_a_writer_whose_parent_is_killed_writes_every_batch_it_received_then_exits(workdir, tracking_uri):
    """``kill -9`` of the parent while the writer holds batches it could not write yet (the
    store is locked by another connection): the writer writes all of them, then exits."""
    tracker = Tracker("orphaned", tracking_uri)
    blocker = sqlite3.connect(workdir / "mlflow.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # nothing can be written until the parent is dead
    parent = subprocess.Popen([sys.executable, "-c", SENDER, str(tracker._direct.path), tracker._direct.artifact_root,
                               tracker.experiment_id, "20"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    writer = int(parent.stdout.readline())
    writer_exit = os.pidfd_open(writer)
    parent.kill()
    parent.wait()
    blocker.execute("ROLLBACK")

    ready, _, _ = select.select([writer_exit], [], [], 120)  # a hang guard, not a timing window
    os.close(writer_exit)
    assert ready, "the orphaned writer did not exit"
    client = MlflowClient(tracking_uri)
    runs = runs_of(client, "orphaned")
    assert sorted(r.info.run_name for r in runs) == sorted(f"r{i}" for i in range(20))
    assert all(r.info.status == "FINISHED" and r.data.metrics["val_loss"] > 0 for r in runs)
