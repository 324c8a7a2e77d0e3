"""The report's speed paths give what the plain computation gives: memoised computations
(suite.report.memo) and the power's draws split between two processes (suite.report.split_draws)."""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from suite.report import memo, power, scaling
from suite.report.reader import RunRecord, Runs
from suite.report.stats import study_estimate


def _values(rng: np.random.Generator) -> dict[int, dict[int, float]]:
    return {k: {s: float(v) for s, v in enumerate(rng.normal(k, 1.0, 5))} for k in range(3)}


def test_study_estimates_are_those_computed_afresh(monkeypatch):
    cells = [_values(np.random.default_rng(i)) for i in range(4)]
    remembered = [study_estimate(v) for v in cells + cells]  # the second round comes from the memo
    monkeypatch.setenv(memo.ENV, "0")
    afresh = [study_estimate(v) for v in cells + cells]
    assert remembered == afresh
    assert remembered[:4] == remembered[4:] and len(set(remembered[:4])) == 4
    # the study order decides the bootstrap's draws: reordered studies are another computation
    monkeypatch.delenv(memo.ENV)
    swapped = {k: cells[0][k] for k in (2, 1, 0)}
    assert study_estimate(swapped) != remembered[0] and study_estimate(swapped).mean == remembered[0].mean


def _run(run_id: str, steps: float) -> RunRecord:
    hist = [(t, 0.02 * 2 ** (3 - 3 * t / steps)) for t in range(int(2 * steps))]
    return RunRecord(run_id, "scaling_sgd", "", "completed", {"seed": 0, "batch_size": 8, "optimizer": "sgd",
                     "optimizer.lr": 0.1}, {}, histories={scaling.RISK: hist})


def test_run_steps_follow_the_histories_of_each_copy():
    runs = Runs("x", "sqlite://", [_run("a", 40)], None)
    first = scaling._run_steps(runs, runs.records[0], scaling.RISK, 0.02)
    assert math.isclose(first[0], 40)
    # a bootstrap copy shares the histories (and their steps); a copy with other histories does not
    drawn = power.resample(runs, np.random.default_rng(0))
    assert scaling._run_steps(drawn, drawn.records[0], scaling.RISK, 0.02) == first
    other = replace(runs.records[0], histories={scaling.RISK: _run("b", 20).histories[scaling.RISK]})
    assert math.isclose(scaling._run_steps(runs, other, scaling.RISK, 0.02)[0], 20)
    assert scaling._run_steps(runs, runs.records[0], scaling.RISK, 0.03)[0] < first[0]  # another target


def _borderline_runs():
    from tests.test_report import _sampling_runs

    return _sampling_runs(list(0.6 + np.random.default_rng(3).standard_normal(8)))


def test_draws_split_between_two_processes_give_the_serial_powers(monkeypatch):
    from suite.report import claims, split_draws

    runs = _borderline_runs()
    monkeypatch.setenv(split_draws.ENV, "1")
    serial = power.power(claims.sampling, runs, draws=40, seed=1)
    monkeypatch.setenv(split_draws.ENV, "2")
    assert power.power(claims.sampling, runs, draws=40, seed=1) == serial
    assert 0 < serial.decisive < serial.draws  # a borderline claim: the draws differ
    rng = np.random.default_rng(0)
    got = split_draws.draw_results(lambda: int(rng.integers(1 << 30)), lambda v: (v, os.getpid()), 9)
    assert [v for v, _ in got] == [int(v) for v in np.random.default_rng(0).integers(1 << 30, size=9)]
    assert {pid for _, pid in got[:4]} == {os.getpid()} and os.getpid() not in {pid for _, pid in got[4:]}


def test_a_draw_that_would_read_the_store_is_evaluated_here(monkeypatch):
    from suite.report import split_draws

    class Store:
        def history(self, run_id, key):
            return []

    runs = Runs("x", "sqlite://", [], None, Store())
    monkeypatch.setenv(split_draws.ENV, "2")
    got = split_draws.draw_results(iter(range(6)).__next__, lambda v: (v, runs.source.history("r", "k"), os.getpid()),
                                   6, runs)
    assert got == [(v, [], os.getpid()) for v in range(6)]


def test_studies_figures_drawn_on_two_processes_are_those_drawn_here(monkeypatch):
    import optuna

    from suite.report import split_draws
    from suite.tuning import winners

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = []
    for k in range(3):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=k))
        study.optimize(lambda t: (t.suggest_float("lr", 1e-3, 1.0, log=True) - 0.1) ** 2, n_trials=4)
        studies.append(study)
    monkeypatch.setattr(winners, "SPLIT_STUDIES", 2)
    monkeypatch.setenv(split_draws.ENV, "1")
    here = winners.study_pngs(studies)
    monkeypatch.setenv(split_draws.ENV, "2")
    assert winners.study_pngs(studies) == here
    assert all(set(p) == {"optuna_history.png"} and p["optuna_history.png"].startswith(b"\x89PNG") for p in here)
    assert len({p["optuna_history.png"] for p in here}) == 3


def test_the_child_drawing_study_figures_never_uses_the_parents_storage(tmp_path, monkeypatch):
    """A database storage's pooled connection, used by a forked child too, breaks the parent's
    next commit (PostgreSQL: "An exception is raised during the commit"): the child draws from
    in-memory copies. Every read of the studies' own storage is recorded with its process."""
    import optuna
    from optuna.storages import InMemoryStorage

    from suite.report import split_draws
    from suite.tuning import winners

    readers = tmp_path / "readers"

    class Recorded(InMemoryStorage):
        def get_all_trials(self, *args, **kwargs):
            with open(readers, "a") as f:
                f.write(f"{os.getpid()}\n")
            return super().get_all_trials(*args, **kwargs)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, studies = Recorded(), []
    for k in range(4):
        study = optuna.create_study(storage=storage, study_name=f"s{k}", sampler=optuna.samplers.RandomSampler(seed=k))
        study.optimize(lambda t: (t.suggest_float("lr", 1e-3, 1.0, log=True) - 0.1) ** 2, n_trials=4)
        studies.append(study)
    monkeypatch.setenv(split_draws.ENV, "2")
    readers.write_text("")
    pngs = winners.study_pngs(studies)
    assert len(pngs) == 4 and all(p["optuna_history.png"].startswith(b"\x89PNG") for p in pngs)
    assert set(readers.read_text().split()) == {str(os.getpid())}


def test_a_child_that_does_not_answer_is_not_waited_for(monkeypatch):
    from suite.report import split_draws

    monkeypatch.setenv(split_draws.ENV, "2")
    monkeypatch.setattr(split_draws, "WAIT_MIN_S", 0.0)
    parent, (stuck, _) = os.getpid(), os.pipe()  # nothing is ever written to this pipe

    def evaluate(v):
        if os.getpid() != parent:
            os.read(stuck, 1)  # the child blocks for good
        return v, os.getpid()

    got = split_draws.draw_results(iter(range(4)).__next__, evaluate, 4)
    assert got == [(v, parent) for v in range(4)]
