"""``lr`` and ``epoch`` stored as the ends of their straight stretches (:mod:`suite.tracking.thin`):
read back through ``MlflowClient``, the kept points joined by straight lines give every value
logged, the run's last value is its latest, and a run that ends early keeps its last point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlflow import MlflowClient

from suite.tracking.tracker import Tracker

STEPS = list(range(0, 200, 10))


def _lr(step: int, schedule: str) -> float:
    if schedule == "constant":
        return 0.1
    if schedule == "step":  # drops at 70 and 140
        return 0.1 * 0.1 ** (step // 70)
    return 0.001 + 0.099 * math.cos(math.pi * step / 400)  # a quarter of a cosine: bends everywhere


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.parametrize("batched", [False, True])
def test_the_kept_points_give_back_every_value_and_the_latest_is_the_last(store, batched):
    tracker = Tracker("thin", store)
    logged = {}
    with tracker.batched() if batched else tracker.writes():
        for schedule in ("constant", "step", "cosine"):
            run_id = tracker.create_run({"mlflow.runName": schedule}, {})
            for step in STEPS:  # one evaluation at a time, as the engine logs them
                tracker.log_metrics(run_id, step, {"lr": _lr(step, schedule), "epoch": step / 35,
                                                   "val_loss": 1 / (step + 1)})
            tracker.set_status(run_id, "FINISHED")
            logged[schedule] = run_id
    client = MlflowClient(store)
    kept = {}
    for schedule, run_id in logged.items():
        run = client.get_run(run_id)
        assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == STEPS  # not thinned
        for key, truth in (("lr", [_lr(s, schedule) for s in STEPS]), ("epoch", [s / 35 for s in STEPS])):
            points = client.get_metric_history(run_id, key)
            steps, values = [p.step for p in points], [p.value for p in points]
            assert steps[0] == STEPS[0] and steps[-1] == STEPS[-1]
            assert np.allclose(np.interp(STEPS, steps, values), truth, rtol=1e-12, atol=0)
            assert run.data.metrics[key] == pytest.approx(truth[-1], rel=1e-15)
            kept[schedule, key] = len(points)
    assert kept["constant", "lr"] == 2 and kept["constant", "epoch"] == 2
    assert kept["step", "lr"] == 6  # both sides of each of the two drops, and the two ends
    assert kept["cosine", "lr"] == len(STEPS)


def test_a_run_that_ends_early_keeps_its_last_point(store):
    tracker = Tracker("thin", store)
    run_id = tracker.create_run({"mlflow.runName": "cut"}, {})
    for step in STEPS[:5]:
        tracker.log_metrics(run_id, step, {"lr": 0.1, "epoch": step / 35})
    tracker.mark(run_id, "interrupted", "stopped")
    client = MlflowClient(store)
    for key in ("lr", "epoch"):
        assert [p.step for p in client.get_metric_history(run_id, key)] == [STEPS[0], STEPS[4]]
    assert client.get_run(run_id).data.metrics["epoch"] == pytest.approx(STEPS[4] / 35)
    assert client.get_run(run_id).info.status == "KILLED"


def test_the_notebook_history_has_lr_and_epoch_at_every_step(store):
    from suite.api.notebook import results

    tracker = Tracker("thin", store)
    run_id = tracker.create_run({"mlflow.runName": "step", "suite.kind": "run"}, {})
    for step in STEPS:
        tracker.log_metrics(run_id, step, {"lr": _lr(step, "step"), "epoch": step / 35, "val_loss": 1 / (step + 1)})
    tracker.set_status(run_id, "FINISHED")
    (history,) = results("thin", tracking_uri=store, histories=["lr", "epoch", "val_loss"])["history"]
    assert list(history.index) == STEPS
    assert np.allclose(history["lr"], [_lr(s, "step") for s in STEPS], rtol=1e-12, atol=0)
    assert np.allclose(history["epoch"], [s / 35 for s in STEPS], rtol=1e-12, atol=0)
