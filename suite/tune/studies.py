"""Optuna studies of the tuner: storage, samplers and pruners, trial counting, working on a
study (claiming its enqueued trials, :mod:`suite.tune.slots`), and reading the best
configuration back.

The storage is a journal file by default (``.suite/optuna.journal``; Optuna's journal file
backend is safe for several processes on one host) or any database URL Optuna accepts.
"""

from __future__ import annotations

import json
import platform
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from suite.context import derive_seed
from suite.errors import TuneError
from suite.registry import Registry
from suite.specs.spec import RunSpec
from suite.tune.plan import REEVAL_SEED_BASE, StudyPlan
from suite.vocab import STUDY_OVERRIDES, STUDY_SETTINGS, STUDY_UID, TRIAL_STATUS, TRIAL_WORKER

DEFAULT_STORAGE_PATH = Path(".suite") / "optuna.journal"
PRUNERS = ("median", "hyperband", "none")


# -- storage and studies --------------------------------------------------------------------
def storage_label(url: str | None) -> str:
    if url and "://" in url:
        return url
    return str(Path(url) if url else DEFAULT_STORAGE_PATH)


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


def make_sampler(plan: StudyPlan, trials: int, study_seed: int | None, salt: str) -> optuna.samplers.TPESampler:
    """TPE, seeded from ``--study-seed``, the study's name and ``salt`` (worker and trials
    already done, so a resumed or parallel sampler does not repeat the same random points)."""
    seed = None if study_seed is None else derive_seed(study_seed, f"{plan.name}|{salt}") % (2**32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(3, trials // 3)), multivariate=True, group=True,
        )


def check_settings(storage: optuna.storages.BaseStorage, plans: Iterable[StudyPlan]) -> None:
    """Refuse to continue an existing study with other settings (its old trial values would not
    compare with the new ones). Creates nothing."""
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    for plan in plans:
        if plan.name not in existing:
            continue
        stored = existing[plan.name].user_attrs.get(STUDY_SETTINGS)
        settings = json.loads(json.dumps(plan.settings()))
        if stored is not None and stored != settings:
            diff = [k for k in sorted(set(stored) | set(settings)) if stored.get(k) != settings.get(k)]
            shown = "; ".join(f"{k}: stored {stored.get(k)!r}, now {settings.get(k)!r}" for k in diff)
            raise TuneError(
                f"study {plan.name!r} exists with other settings ({shown}); rerun with the same settings to "
                "continue it, or choose another --storage"
            )


def open_study(storage: optuna.storages.BaseStorage, plan: StudyPlan) -> optuna.Study:
    """Create the plan's study (with its settings and a uid) or load it (call
    :func:`check_settings` first)."""
    study = optuna.create_study(storage=storage, study_name=plan.name, direction=plan.objective.study_direction,
                                load_if_exists=True)
    if STUDY_SETTINGS not in study.user_attrs:
        study.set_user_attr(STUDY_SETTINGS, json.loads(json.dumps(plan.settings())))
    if STUDY_UID not in study.user_attrs:
        study.set_user_attr(STUDY_UID, uuid.uuid4().hex)
    return study


def load_study(storage: optuna.storages.BaseStorage, plan: StudyPlan, *, trials: int, study_seed: int | None,
               pruner: str, salt: str) -> optuna.Study:
    return optuna.load_study(study_name=plan.name, storage=storage,
                             sampler=make_sampler(plan, trials, study_seed, salt), pruner=make_pruner(pruner))


def counted(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards ``--trials``: completed, pruned (diverged ones included)
    or failed in plugin code. A trial cut short by an interruption does not count."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and TRIAL_STATUS in trial.user_attrs


def n_counted(study: optuna.Study) -> int:
    return sum(counted(t) for t in study.get_trials(deepcopy=False))


def fail_orphan_trials(storage: optuna.storages.BaseStorage, plans: Iterable[StudyPlan], pids: set[str]) -> int:
    """Mark the trials that worker processes ``pids`` left running (killed, interrupted) as
    failed; they do not count towards ``--trials``, so a rerun redoes them."""
    n = 0
    for name in dict.fromkeys(p.name for p in plans):
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, _, pid = t.user_attrs.get(TRIAL_WORKER, "").rpartition(":")
            if host == platform.node() and pid in pids:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                n += 1
    return n


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial, or ``None`` if no trial completed."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None
    return (max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min)(done, key=lambda t: t.value)


def best_values(trial: FrozenTrial) -> dict[str, Any]:
    """The hyperparameter values (not Optuna's search coordinates) of a trial."""
    return dict(trial.user_attrs.get(STUDY_OVERRIDES, {}))


def reevaluation_specs(plan: StudyPlan, trial: FrozenTrial, registry: Registry, k: int) -> list[RunSpec]:
    """The best configuration on ``k`` fresh seeds (never used while tuning)."""
    return [plan.spec(registry, best_values(trial), REEVAL_SEED_BASE + i) for i in range(k)]
