"""Names that say what differs: a tuned study's MLflow runs name their pinned and tuned values, and
the Optuna study names its objective (optuna-dashboard shows it instead of "Objective 0")."""

from __future__ import annotations

import optuna

from tests.conftest import runs_of

TUNE = ["tune", "--problem", "nqm", "--optimizer", "sgd", "--batch-size", "8", "--trials", "2", "--budget",
        "steps:20", "--pruner", "none", "--workers", "1", "--device", "cpu", "--quiet", "--study-seed", "0"]


def test_tuned_runs_name_their_pinned_and_tuned_values_and_the_study_its_objective(cli, workdir, mlflow_client):
    cli(*TUNE, "--set", "optimizer.momentum=0.9", "--set", "optimizer.weight_decay=0", "--experiment", "names")
    trials = runs_of(mlflow_client, "names", "tags.`suite.kind` = 'trial'")
    assert len(trials) == 2
    for run in trials:  # momentum 0.9 is said, weight decay 0 (off) is not; the tuned lr is each trial's own
        lr = float(run.data.params["optimizer.lr"])
        assert run.info.run_name == f"nqm sgd lr={lr:.4g} β=0.9 b8 t{run.data.tags['suite.trial']} s0"
    (parent,) = runs_of(mlflow_client, "names", "tags.`suite.kind` = 'study'")
    assert parent.info.run_name == f"{parent.data.tags['suite.study']} β=0.9"

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / ".suite" / "optuna.journal")))
    (name,) = optuna.get_all_study_names(storage)
    assert name.startswith("nqm/sgd-constant-none-shuffle/β=0.9/b8-")  # the study's name says β too
    assert optuna.load_study(study_name=name, storage=storage).metric_names == ["final val loss"]
    cli(*TUNE, "--set", "optimizer.momentum=0.9", "--set", "optimizer.weight_decay=0", "--experiment",
        "names")  # the same study resumes under its name: nothing more to run
    assert optuna.get_all_study_names(storage) == [name]
    assert len(runs_of(mlflow_client, "names", "tags.`suite.kind` = 'trial'")) == 2


def test_a_study_named_before_names_carried_pinned_values_resumes_under_its_name(cli, workdir, mlflow_client,
                                                                                monkeypatch):
    from suite.tuning import studies

    args = [*TUNE, "--set", "optimizer.momentum=0.9", "--experiment", "old"]
    with monkeypatch.context() as m:  # as the suite named studies before: problem/variant/bB-hash
        m.setattr(studies, "readable_name", lambda plan: plan.name)
        cli(*args[:args.index("--trials") + 1], "1", *args[args.index("--trials") + 2:])
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / ".suite" / "optuna.journal")))
    (old,) = optuna.get_all_study_names(storage)
    assert "β" not in old
    cli(*args)  # now with 2 trials: the old study goes on, no second study
    assert optuna.get_all_study_names(storage) == [old]
    assert len(optuna.load_study(study_name=old, storage=storage).trials) == 2
