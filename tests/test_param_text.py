"""Stored params (MLflow keeps them as text) read back one way: by the notebook API and by the report."""

from __future__ import annotations

import math

import pytest

from suite.tracking.records import param_text, param_value

VALUES = {  # what a run logs -> what a reader gets back
    "optimizer.nesterov": True,
    "problem.centred": False,
    "scheduler.T_max": None,
    "optimizer.lr": 0.5,
    "optimizer.weight_decay": 1e-05,
    "seed": 3,
    "problem.shift": -2,
    "averager": "none",  # a component's name: not None
    "sampler.mode": "none",  # a string value spelled like None: stays text
    "problem.label": "1_0",  # int() would take it as 10; str() of no number writes it
}


@pytest.mark.parametrize("value", [*VALUES.values(), 0, 0.0, float("inf"), "True-ish", "", "3.5e"])
def test_a_param_reads_back_as_the_value_it_was_logged_from(value):
    back = param_value(param_text(value))
    assert back == value and type(back) is type(value)


def test_nan_reads_back_as_nan():
    assert math.isnan(param_value(param_text(float("nan"))))


def test_the_notebook_api_and_the_report_read_a_stored_run_alike(tmp_path):
    import suite
    from suite.report.reader import read_runs
    from suite.tracking.records import FINISHED
    from suite.tracking.tracker import Tracker
    from suite.vocab import TAG_HASH, TAG_KIND, TAG_STATUS

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker("params", uri)
    run_id = tracker.create_run({TAG_KIND: "run", TAG_HASH: "h1", TAG_STATUS: "completed"},
                                {k: param_text(v) for k, v in VALUES.items()})
    tracker.set_status(run_id, FINISHED)

    notebook = suite.results("params", tracking_uri=uri)
    report = read_runs("params", uri).records
    assert len(notebook) == 1 and len(report) == 1
    for key, value in VALUES.items():
        got = notebook[key].tolist()[0], report[0].params[key]
        assert got == (value, value) and all(type(g) is type(value) for g in got), key
