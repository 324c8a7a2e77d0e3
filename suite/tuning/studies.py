"""Optuna studies of the tuner: storage, samplers and pruners, trial counting, working on a
study (claiming its enqueued trials, :mod:`suite.tuning.slots`), and reading the best
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from suite import owners
from suite.errors import TuneError
from suite.registry import Registry
from suite.specs.spec import RunSpec
from suite.tuning.labels import readable_name
from suite.tuning.plan import REEVAL_SEED_BASE, StudyPlan
from suite.tuning.results import best_trial, best_values, counted, n_counted, top_trials  # noqa: F401
from suite.vocab import STUDY_SETTINGS, STUDY_UID, TRIAL_WORKER

DEFAULT_STORAGE_PATH = Path(".suite") / "optuna.journal"


# -- storage and studies --------------------------------------------------------------------
def storage_label(url: str | None) -> str:
    if url and "://" in url:
        return url
    return str(Path(url) if url else DEFAULT_STORAGE_PATH)


def resolve_names(storage: optuna.storages.BaseStorage, plans: Iterable[StudyPlan]) -> list[StudyPlan]:
    """The plans, each under the name of the study it continues, else under its
    :func:`readable_name`: a study of that name; a study named as before names carried its pinned
    values (``problem/variant/bB-hash``); a study created before names carried a settings hash
    (``problem/variant/bB``) when its stored settings are the plan's."""
    existing = {s.study_name: s for s in storage.get_all_studies()}  # not their trials (summaries copy them)
    out = []
    for plan in plans:
        readable, old = readable_name(plan), existing.get(plan.legacy_name)
        if readable not in existing and plan.name in existing:
            pass  # the hashed name it has had since
        elif readable not in existing and old is not None and old.user_attrs.get(STUDY_SETTINGS) == _json(plan):
            plan = replace(plan, study_name=plan.legacy_name)
        elif plan.study_name is None and readable != plan.name:
            plan = replace(plan, study_name=readable)
        out.append(plan)
    return out


def _json(plan: StudyPlan) -> dict[str, Any]:
    return json.loads(json.dumps(plan.settings()))


def check_settings(storage: optuna.storages.BaseStorage, plans: Iterable[StudyPlan]) -> None:
    """Refuse to continue an existing study with other settings (its old trial values would not
    compare with the new ones). Creates nothing."""
    existing = {s.study_name: s for s in storage.get_all_studies()}  # not their trials (summaries copy them)
    for plan in plans:
        if plan.name not in existing:
            continue
        stored = existing[plan.name].user_attrs.get(STUDY_SETTINGS)
        settings = _json(plan)
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
    if study.metric_names != [plan.objective.label]:  # optuna-dashboard's name for the objective
        with warnings.catch_warnings():  # experimental in Optuna since 3.2, and used as documented
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([plan.objective.label])
    if STUDY_SETTINGS not in study.user_attrs:
        study.set_user_attr(STUDY_SETTINGS, _json(plan))
    if STUDY_UID not in study.user_attrs:
        study.set_user_attr(STUDY_UID, uuid.uuid4().hex)
    return study


def fail_orphan_trials(storage: optuna.storages.BaseStorage, plans: Iterable[StudyPlan], pids: set[str]) -> int:
    """Mark the trials that worker processes ``pids`` left running (killed, interrupted) as
    failed; they do not count towards ``--trials``, so a rerun redoes them."""
    n = 0
    for name in dict.fromkeys(p.name for p in plans):
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = owners.parse(t.user_attrs.get(TRIAL_WORKER, ""))
            if owner is not None and owner.host == platform.node() and str(owner.pid) in pids:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                n += 1
    return n


def reevaluation_specs(plan: StudyPlan, trial: FrozenTrial, registry: Registry, k: int) -> list[RunSpec]:
    """The best configuration on ``k`` fresh seeds (never used while tuning)."""
    return [plan.spec(registry, best_values(trial), REEVAL_SEED_BASE + i) for i in range(k)]
