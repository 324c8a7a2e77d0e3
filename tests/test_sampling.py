"""The tuning sampler's last population refines around the incumbent (suite.tuning.sampling)."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest

from suite.tuning.sampling import (
    RefiningSampler,
    StratifiedStart,
    bracket_point,
    make_sampler,
    refine_offsets,
    refine_trials,
)

LOG = optuna.distributions.FloatDistribution(0.01, 4.0, log=True)


def test_refinement_moves_fill_both_sides_of_each_parameter_nearest_first():
    assert refine_offsets(8, 1) == [(0, 1), (0, -1), (0, 2), (0, -2), (0, 3), (0, -3), (0, 4), (0, -4)]
    assert refine_offsets(8, 2) == [(0, 1), (0, -1), (1, 1), (1, -1), (0, 2), (0, -2), (1, 2), (1, -2)]
    assert [refine_trials(n) for n in (4, 11, 12, 24, 100)] == [0, 0, 4, 8, 8]


def test_bracket_points_split_the_gap_to_the_nearest_tried_value_evenly_on_the_log_scale():
    tried = [0.1, 0.5, 2.0, 3.0]  # the incumbent is 1.0: its neighbours are 0.5 below and 2.0 above
    up = [bracket_point(1.0, tried, LOG, k, 4, +1) for k in range(1, 5)]
    down = [bracket_point(1.0, tried, LOG, k, 4, -1) for k in range(1, 5)]
    assert up == pytest.approx([2 ** (k / 5) for k in range(1, 5)])
    assert down == pytest.approx([0.5 ** (k / 5) for k in range(1, 5)])
    assert bracket_point(3.0, tried, LOG, 1, 1, +1) == pytest.approx(math.sqrt(3.0 * 4.0))  # none above: the end
    linear = optuna.distributions.FloatDistribution(0.0, 1.0)
    assert bracket_point(0.5, [0.1, 0.9], linear, 1, 3, -1) == pytest.approx(0.4)


def _cliff(x: float) -> float:
    """Steps to a target against the lr at a large batch size: a narrow valley just below a cliff
    at x = 2 (the stability edge), rising slowly below it (optimum 1.9)."""
    if x >= 2.0:
        raise optuna.TrialPruned("diverged")
    return 60 * (1.9 / x) ** 1.2 if x <= 1.9 else 60 + 3000 * (x - 1.9)


def _tune(sampler: optuna.samplers.BaseSampler, tmp_path, name: str, trials: int = 24, population: int = 8):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler)
    while len(study.trials) < trials:  # a population suggests together, then trains, as suite tune's
        asked = [study.ask() for _ in range(population)]
        lrs = [t.suggest_float("lr", 0.01, 4.0, log=True) for t in asked]
        for t, lr in zip(asked, lrs, strict=True):
            try:
                study.tell(t, _cliff(lr))
            except optuna.TrialPruned:
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
    return study


class _Plan:
    def __init__(self, name: str) -> None:
        self.legacy_name = name


def test_the_last_population_refines_around_the_incumbent_and_gets_closer_than_tpe_alone(tmp_path):
    refined, plain = [], []
    for seed in range(6):
        sampler = make_sampler(_Plan(f"p{seed}"), 24, seed, "main")
        assert isinstance(sampler, RefiningSampler) and (sampler.start, sampler.count) == (16, 8)
        study = _tune(sampler, tmp_path, f"r{seed}")
        before = min(t.value for t in study.trials[:16] if t.value is not None)
        incumbent = min((t for t in study.trials[:16] if t.value is not None), key=lambda t: t.value).params["lr"]
        last = [t.params["lr"] for t in study.trials[16:]]
        others = [t.params["lr"] for t in study.trials[:16] if t.params["lr"] != incumbent]
        below = max((x for x in others if x < incumbent), default=0.01)
        above = min((x for x in others if x > incumbent), default=4.0)
        assert len(set(last)) == 8 and all(below < x < above for x in last)
        assert sum(x > incumbent for x in last) == 4
        assert study.best_value <= before
        refined.append(study.best_value / 60)
        tpe = make_sampler(_Plan(f"p{seed}"), 24, seed, "main").base  # the same TPE, refining nothing
        plain.append(_tune(tpe, tmp_path, f"t{seed}").best_value / 60)
    assert statistics.median(refined) < statistics.median(plain)


def test_a_study_of_one_population_starts_with_one_trial_in_each_stratum_of_each_parameter(tmp_path):
    sampler = make_sampler(_Plan("s"), 8, 0, "main", population=8, design_seed=11)
    assert isinstance(sampler, StratifiedStart) and sampler.count == 8
    study = optuna.create_study(sampler=sampler)
    asked = [study.ask() for _ in range(8)]
    lrs = [t.suggest_float("lr", 0.01, 8.0, log=True) for t in asked]
    betas = [t.suggest_float("beta", 0.0, 0.99) for t in asked]
    assert sorted(int(8 * math.log(x / 0.01) / math.log(800)) for x in lrs) == list(range(8))
    assert sorted(int(8 * b / 0.99) for b in betas) == list(range(8))
    # another worker of the study (another salt: its TPE draws differ) places the same trial at the same point
    other = make_sampler(_Plan("s"), 8, 0, "worker-2|n3", population=8, design_seed=11)
    again = optuna.create_study(sampler=other)
    assert [again.ask().suggest_float("lr", 0.01, 8.0, log=True) for _ in range(8)] == lrs
    # 16 trials: the first population of 8 (TPE's start-up is 5); from 24 trials TPE's start-up covers it
    assert make_sampler(_Plan("s"), 16, 0, "main", population=8, design_seed=11).base.count == 8
    assert not isinstance(make_sampler(_Plan("s"), 24, 0, "main", population=8, design_seed=11).base, StratifiedStart)
    assert not isinstance(make_sampler(_Plan("s"), 8, 0, "main", population=8), StratifiedStart)


def test_the_stratified_start_leaves_less_tuning_error_than_independent_draws(tmp_path):
    """A study of 8 trials asked as one population (the networks quick mode's): its best point's
    excess over the optimum, over 24 study seeds, is smaller at the median and in the worst case."""
    stratified, independent = [], []
    for seed in range(24):
        sampler = make_sampler(_Plan(f"p{seed}"), 8, seed, "main", population=8, design_seed=seed)
        stratified.append(_tune(sampler, tmp_path, f"s{seed}", trials=8).best_value / 60)
        independent.append(_tune(sampler.base, tmp_path, f"i{seed}", trials=8).best_value / 60)
    assert statistics.median(stratified) < statistics.median(independent)
    assert max(stratified) < max(independent)


def test_the_stratified_start_has_an_off_switch(monkeypatch):
    monkeypatch.setenv("SUITE_STRATIFIED_START", "0")
    assert not isinstance(make_sampler(_Plan("s"), 8, 0, "main", population=8, design_seed=11), StratifiedStart)
