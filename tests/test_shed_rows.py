"""A stack sheds the work of its ended rows (suite.engine.shed): once few rows still train, a step
computes the loss and gradients of those rows only, where the problem allows it. The rows that go
on get the same numbers as with every row computed, and as their runs alone."""

from __future__ import annotations

import math

import pytest

from suite.engine.loop import StopRun, train
from suite.engine.units import run_unit
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from tests.test_realdata_networks import STACKED_TOL

SMALL = {"problem.num_samples": "500"}
# (problem, overrides): the closed-form MLP and CNN shed; the NQM (each row's own noise generator) never does
SHEDDING = [("digits", {}), ("mnist1d_cnn", SMALL)]
STOP_AT = {0: 4, 1: 4, 2: 8, 3: 8, 4: 8}  # row -> the evaluation step at which it is stopped; row 5 runs on


def _specs(problem: str, overrides: dict) -> list:
    rows = [("sgd", "none", {"optimizer.lr": "0.05", "optimizer.momentum": "0.9"}, 0),
            ("sgd", "ema", {"optimizer.lr": "0.1", "optimizer.momentum": "0.0", "averager.decay": "0.5"}, 1),
            ("adam", "none", {"optimizer.lr": "0.01"}, 2),
            ("sgd", "none", {"optimizer.lr": "0.02", "optimizer.momentum": "0.5"}, 3),
            ("adam", "none", {"optimizer.lr": "0.003", "optimizer.beta1": "0.8"}, 4),
            ("sgd", "ema", {"optimizer.lr": "0.2", "optimizer.momentum": "0.0", "averager.decay": "0.8"}, 5)]
    return [resolve_spec(get_registry(), components={"problem": problem, "optimizer": opt, "averager": avg},
                         overrides={**overrides, **hp}, batch_size=16, steps=16, eval_every=4, seed=seed)
            for opt, avg, hp, seed in rows]


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=STACKED_TOL, abs_tol=1e-6) for k in a)


def _stop_rows(i: int, step: int, metrics: dict) -> None:
    if STOP_AT.get(i) == step:
        raise StopRun("at its target")


def _trained(specs: list, monkeypatch, shed: str, stacked_problem: type) -> tuple[dict, list[int]]:
    """The stack's results with ``SUITE_SHED_ROWS=shed``, and how many rows each step computed (the
    rows its ``stacked_problem.loss_and_grads`` was given)."""
    monkeypatch.setenv("SUITE_SHED_ROWS", shed)
    widths: list[int] = []
    real = stacked_problem.loss_and_grads

    def counted(self, params, indices):
        widths.append(indices.shape[0])
        return real(self, params, indices)

    monkeypatch.setattr(stacked_problem, "loss_and_grads", counted)
    out = dict(run_unit(specs, "cpu", get_registry(), _stop_rows, engine="stacked"))
    monkeypatch.setattr(stacked_problem, "loss_and_grads", real)
    return out, widths


@pytest.mark.parametrize("problem, overrides", SHEDDING)
def test_a_stack_whose_rows_end_trains_the_rest_alone_with_the_same_numbers(problem, overrides, monkeypatch):
    from suite_realdata.stacked import ClassifierStack

    monkeypatch.delenv("SUITE_STACKED_CLOSED_FORM", raising=False)  # the closed forms, which shed
    specs = _specs(problem, overrides)
    shed, widths = _trained(specs, monkeypatch, "1", ClassifierStack)
    full, full_widths = _trained(specs, monkeypatch, "0", ClassifierStack)
    assert set(full_widths) == {6}
    # 6 rows until step 4, then 4 (2 of 6 ended: 0.67 ≤ 0.75, shed), then 1 after step 8
    assert widths == [6] * 4 + [4] * 4 + [1] * 8, widths
    for i in range(len(specs)):
        a, b = shed[i], full[i]
        assert (a.status, a.reason) == (b.status, b.reason)
        assert a.status == ("completed" if i == 5 else "stopped")
        assert [s for s, _ in a.history] == [s for s, _ in b.history]
        for (_, x), (_, y) in zip(a.history, b.history, strict=True):
            assert _close(x, y), (i, x, y)
    # the row that ran on (8 steps alone in its stack, an EMA beside it): its test metrics and final
    # parameters, learned and averaged, as with every row computed and as its run alone
    alone = train(specs[5], "cpu")
    for (_, x), (_, y) in zip(shed[5].history, alone.history, strict=True):
        assert _close(x, y), (x, y)
    assert {"test_loss", "avg_test_acc"} <= shed[5].final_metrics.keys()
    for ref in (full[5], alone):
        assert _close(shed[5].final_metrics, ref.final_metrics), (shed[5].final_metrics, ref.final_metrics)
        for part in ("learned", "averaged"):
            for name, values in shed[5].final_params[part].items():
                assert all(math.isclose(v, w, rel_tol=1e-4, abs_tol=1e-6)
                           for v, w in zip(values, ref.final_params[part][name], strict=True)), (part, name)


def test_a_problem_without_row_subsets_never_sheds(monkeypatch):
    specs = [resolve_spec(get_registry(), components={"problem": "nqm", "optimizer": "sgd"},
                          overrides={"problem.dim": "8", "optimizer.lr": str(lr)}, batch_size=4, steps=16,
                          eval_every=4, seed=s)
             for s, lr in enumerate((0.1, 0.2, 0.3, 0.4, 0.5, 0.6))]
    from suite.builtin.stacked_problems import NQMStack

    _, widths = _trained(specs, monkeypatch, "1", NQMStack)
    assert set(widths) == {6}
