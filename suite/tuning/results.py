"""Reading a tuning study's results: which trials count towards ``--trials``, the best trials
and their values (independent of how the study was planned)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from suite.distributed.worker import run_failed
from suite.vocab import STUDY_OVERRIDES


def counted(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards ``--trials``: completed, pruned (diverged ones included)
    or failed in plugin code. A trial cut short by an interruption does not count."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or run_failed(trial)


def n_counted(study: optuna.Study) -> int:
    return sum(counted(t) for t in study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial (in the study's direction), or ``None`` if no trial completed."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None
    return (max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min)(done, key=lambda t: t.value)


def top_trials(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The ``n`` best completed trials, best first."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(done, key=lambda t: (t.value, t.number))[:n]


def best_values(trial: FrozenTrial) -> dict[str, Any]:
    """The hyperparameter values (not Optuna's search coordinates) of a trial."""
    return dict(trial.user_attrs.get(STUDY_OVERRIDES, {}))
