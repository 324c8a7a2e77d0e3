"""Studies that share a stack: the populations of studies with one stack key (problem, batch size,
budget, evaluation schedule) train as one stack, each trial still told to its own study, slots
claimed across the studies so that several workers share them; ``SUITE_SHARED_STACKS=0`` turns it off."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from suite.distributed.worker import Worker, WorkerContext, register_kind
from suite.registry import get_registry
from suite.stores import open_storage
from suite.tuning.budget import Budget
from suite.tuning.objective import Objective
from suite.tuning.plan import plan_studies
from suite.tuning.space import variants
from suite.tuning.workers import StudyGroupJob, StudyJob, study_jobs
from suite.vocab import STUDY_KIND, STUDY_READY, TRAIN_SECONDS
from tests.conftest import runs_of


# -- which studies share -------------------------------------------------------------------------------
def _plans(optimizers=("sgd", "adam"), batch_sizes=(8, 64), studies=2):
    return plan_studies(
        get_registry(), problems=["nqm"],
        variant_list=variants({"optimizer": list(optimizers), "scheduler": ["constant"], "averager": ["none"],
                               "sampler": ["shuffle"]}),
        batch_sizes=list(batch_sizes), budget=Budget("steps", 20), objective=Objective.parse("final"), seeds=1,
        fixed={"problem.dim": 8}, studies=studies)


def test_studies_with_one_stack_key_form_one_group_per_batch_size():
    plans = _plans()
    jobs = study_jobs(plans, get_registry())
    assert all(isinstance(j, StudyGroupJob) for j in jobs) and len(jobs) == 2
    for job, b in zip(jobs, (8, 64), strict=True):  # both methods and both studies of each batch size
        assert sorted(p.name for p in job.plans) == sorted(p.name for p in plans if p.batch_size == b)
    assert len(study_jobs(plans, get_registry(), shares=3)) == 6  # one share of each group per worker


def test_sharing_off_or_the_loop_engine_or_a_lone_study_gives_one_job_per_study(monkeypatch):
    plans = _plans()
    for jobs in (study_jobs(plans, get_registry(), shared=False), study_jobs(plans, get_registry(), engine="loop"),
                 study_jobs(plans, get_registry(), population=1)):  # --population 1: one trial at a time
        assert [j.plan for j in jobs] == list(plans)
    monkeypatch.setenv("SUITE_SHARED_STACKS", "0")
    assert all(isinstance(j, StudyJob) for j in study_jobs(plans, get_registry()))
    monkeypatch.setenv("SUITE_SHARED_STACKS", "1")
    assert [type(j) for j in study_jobs(_plans(("sgd",), (8, 64), 1), get_registry())] == [StudyJob, StudyJob]


def test_a_study_whose_components_do_not_stack_trains_alone():
    plans = _plans(("sgd", "rmsprop"), (8,), 1)  # rmsprop has no stacked implementation
    jobs = study_jobs(plans, get_registry())
    assert sorted(type(j).__name__ for j in jobs) == ["StudyJob", "StudyJob"]


# -- claiming across studies (a kind of study whose runner records its batches) ------------------------
KIND = "test-shared"
SLOTS = 4


class _Runner:
    """Trains nothing: each trial's value is its own number; ``on_round`` runs inside a round."""

    rounds: list[dict[str, list[int]]] = []
    on_round = None
    keys: dict[str, str] = {}  # a study's share key (default: one for all)

    def __init__(self, study, ctx):
        self.study = study

    def __call__(self, trial):
        raise AssertionError("a shared worker trains batches")

    def group_key(self, frozen):
        return "one"

    def max_batch(self):
        return SLOTS

    def share_key(self):
        return _Runner.keys.get(self.study.study_name, "one")

    @staticmethod
    def batch_group(parts):
        _Runner.rounds.append({r.study.study_name: [t.number for t in trials] for r, trials in parts})
        hook, _Runner.on_round = _Runner.on_round, None
        if hook is not None:
            hook()
        return [[(TrialState.COMPLETE, float(t.number), "") for t in trials] for _, trials in parts]


def _studies(url, n=3):
    storage = open_storage(url)
    names = [f"shared-{k}" for k in range(n)]
    for name in names:
        study = optuna.create_study(storage=storage, study_name=name)
        study.set_user_attr(STUDY_KIND, KIND)
        for _ in range(SLOTS):
            study.enqueue_trial({})
        study.set_user_attr(STUDY_READY, True)
    register_kind(KIND, _Runner)
    _Runner.rounds, _Runner.on_round, _Runner.keys = [], None, {}
    return storage, names


def _states(storage, name):
    return Counter(t.state for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))


def test_a_shared_worker_claims_from_every_study_and_leaves_work_in_each_for_another(tmp_path):
    url = str(tmp_path / "shared.journal")
    storage, names = _studies(url)
    other = Worker(url, names, WorkerContext(quiet=True, label="b"), shared=True)
    _Runner.on_round = lambda: other._run_shared(names)  # a second machine's round while the first trains
    Worker(url, names, WorkerContext(quiet=True, label="a"), shared=True).run()
    first, second = _Runner.rounds[0], _Runner.rounds[1]  # the second ran inside the first
    assert sorted(first) == sorted(second) == names  # each round holds a population of every study
    for name in names:
        assert len(first[name]) < SLOTS and sorted(first[name] + second[name]) == list(range(SLOTS))
    for name in names:  # exactly the enqueued trials, each told to its own study with its own value
        study = optuna.load_study(study_name=name, storage=storage)
        assert [(t.state, t.value) for t in study.get_trials()] == [
            (TrialState.COMPLETE, float(n)) for n in range(SLOTS)]


def test_a_round_holds_only_studies_with_the_first_claimed_studys_share_key(tmp_path):
    url = str(tmp_path / "shared.journal")
    storage, names = _studies(url)
    _Runner.keys = {names[1]: "other"}
    Worker(url, names, WorkerContext(quiet=True, label="a"), shared=True).run()
    assert all(sorted(r) in ([names[0], names[2]], [names[1]]) for r in _Runner.rounds), _Runner.rounds
    assert [sorted(r) for r in _Runner.rounds[:2]] == [[names[0], names[2]], [names[0], names[2]]]
    for name in names:
        assert _states(storage, name) == Counter({TrialState.COMPLETE: SLOTS})


def test_an_interrupted_shared_round_gives_back_every_claimed_trial_of_every_study(tmp_path):
    url = str(tmp_path / "shared.journal")
    storage, names = _studies(url)

    def stop():
        raise KeyboardInterrupt

    _Runner.on_round = stop
    with pytest.raises(KeyboardInterrupt):
        Worker(url, names, WorkerContext(quiet=True, label="a"), shared=True).run()
    held = {name: _Runner.rounds[0][name] for name in names}
    for name in names:  # failed, and enqueued again for the next worker
        assert _states(storage, name) == Counter({TrialState.WAITING: SLOTS, TrialState.FAIL: len(held[name])})
    Worker(url, names, WorkerContext(quiet=True, label="b"), shared=True).run()
    for name in names:
        assert _states(storage, name) == Counter({TrialState.COMPLETE: SLOTS, TrialState.FAIL: len(held[name])})


# -- end to end ----------------------------------------------------------------------------------------
TUNE = ["tune", "--experiment", "sh", "--problem", "nqm", "--set", "problem.dim=8", "--optimizer", "sgd",
        "--set", "optimizer.momentum=0.0", "--set", "optimizer.weight_decay=0.0", "--space", "optimizer.lr=log:0.01:1",
        "--batch-size", "8", "--trials", "4", "--budget", "steps:30", "--eval-every", "10", "--seeds", "1",
        "--reevaluate", "1", "--reevaluate-top", "1", "--population", "2", "--study-seed", "0", "--studies", "3",
        "--quiet"]


def _tuned(cli, mlflow_client):
    """Run TUNE; per study: {trial number: (params, value, intermediate values)}, and the studies of each stack."""
    cli(*TUNE)
    storage = open_storage(None)
    trials = {name: {t.number: t for t in optuna.load_study(study_name=name, storage=storage).get_trials()}
              for name in optuna.get_all_study_names(storage)}
    stacks: dict[str, set[str]] = {}
    for run in runs_of(mlflow_client, "sh", "tags.`suite.kind` = 'trial'"):
        tags = run.data.tags
        trial = trials[tags["suite.study"]][int(tags["suite.trial"])]
        assert tags["suite.trial_value"] == repr(trial.value)  # the run's value is its own study's trial's
        losses = {m.step: m.value for m in mlflow_client.get_metric_history(run.info.run_id, "val_loss")}
        assert trial.intermediate_values and trial.intermediate_values == {  # reported to its own study's pruner
            s: v for s, v in losses.items() if s in trial.intermediate_values}
        stacks.setdefault(tags["suite.stack"], set()).add(tags["suite.study"])
    assert sum(len(v) for v in trials.values()) == len(runs_of(mlflow_client, "sh", "tags.`suite.kind` = 'trial'"))
    reevals, reeval_stacks = {}, {}  # each study's winner re-run on a fresh seed
    for run in runs_of(mlflow_client, "sh", "tags.`suite.kind` = 'reeval'"):
        tags = run.data.tags
        # every metric but the wall clock (train_seconds: a stack's time is shared among its rows)
        reevals[tags["suite.study"], tags["suite.reeval_of"]] = {
            k: v for k, v in run.data.metrics.items() if k != TRAIN_SECONDS}
        reeval_stacks.setdefault(tags["suite.stack"], set()).add(tags["suite.study"])
    assert len(reevals) == len(trials)
    return {"trials": {name: {n: (t.params, t.value, t.intermediate_values) for n, t in ts.items()}
                       for name, ts in trials.items()}, "reevals": reevals}, [stacks, reeval_stacks]


@pytest.mark.slow
def test_three_studies_share_stacks_and_give_what_they_give_alone(cli, workdir, mlflow_client, tmp_path_factory,
                                                                  monkeypatch):
    shared, (stacks, reeval_stacks) = _tuned(cli, mlflow_client)
    trials = shared["trials"]
    assert len(trials) == 3 and all(len(ts) == 4 for ts in trials.values())  # exact trial counts
    assert all(t[1] is not None for ts in trials.values() for t in ts.values())
    assert len(stacks) == 2 and all(len(studies) == 3 for studies in stacks.values())  # 2 rounds, 3 studies each
    assert [len(studies) for studies in reeval_stacks.values()] == [3]  # the re-evaluations too

    monkeypatch.chdir(tmp_path_factory.mktemp("alone"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.getbasetemp()}/alone.db")
    monkeypatch.setenv("SUITE_SHARED_STACKS", "0")
    from mlflow import MlflowClient

    alone, (stacks_alone, reeval_stacks_alone) = _tuned(cli, MlflowClient())
    assert len(stacks_alone) == 6 and all(len(studies) == 1 for studies in stacks_alone.values())
    assert [len(studies) for studies in reeval_stacks_alone.values()] == [1, 1, 1]
    assert alone == shared  # the same params, values, pruner reports and re-evaluations: a stack's rows are exact


@pytest.mark.slow
def test_suite_worker_trains_submitted_studies_in_shared_stacks(cli, workdir, mlflow_client):
    """`suite tune --submit-only`, then `suite worker` (as on another machine): its runs go straight to
    each study's MLflow parent, and the studies still share stacks, with exact trial counts."""
    cli(*TUNE, "--submit-only")
    cli("worker", "--workers", "1", "--quiet")
    storage = open_storage(None)
    names = optuna.get_all_study_names(storage)
    assert len(names) == 3
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        assert Counter(t.state for t in study.get_trials()) == Counter({TrialState.COMPLETE: 4})
    stacks: dict[str, set[str]] = {}
    trial_runs = runs_of(mlflow_client, "sh", "tags.`suite.kind` = 'trial'")
    for run in trial_runs:
        stacks.setdefault(run.data.tags["suite.stack"], set()).add(run.data.tags["suite.study"])
    assert len(trial_runs) == 12 and len(stacks) == 2 and all(len(s) == 3 for s in stacks.values()), stacks
