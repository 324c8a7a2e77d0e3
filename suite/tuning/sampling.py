"""The samplers and pruners of tuning studies: TPE seeded so that resumed and parallel workers
do not repeat each other's random points, with a constant liar for populations."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from suite.context import derive_seed
from suite.errors import TuneError

PRUNERS = ("median", "hyperband", "none")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """``median`` (prune below the median of completed trials at the same step, after 3
    completed trials), ``hyperband`` or ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"unknown --pruner {name!r}: use {', '.join(PRUNERS)}")


def make_sampler(plan: Any, trials: int, study_seed: int | None, salt: str) -> optuna.samplers.TPESampler:
    """TPE, seeded from ``--study-seed``, the study's name and ``salt`` (worker and trials
    already done, so a resumed or parallel sampler does not repeat the same random points)."""
    # seeded from the name without its hash suffix: the draws of studies named before it are kept
    seed = None if study_seed is None else derive_seed(study_seed, f"{plan.legacy_name}|{salt}") % (2**32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(3, trials // 3)), multivariate=True, group=True,
            constant_liar=True,  # a population's trials, asked together, stay apart
        )
