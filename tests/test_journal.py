"""The tuning journal writes every record at once and fsyncs only what must outlive a power cut."""

import optuna
from optuna.trial import TrialState

import suite.journal
from suite.stores import open_storage


def test_records_are_read_back_and_only_finished_trials_are_fsynced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(suite.journal.os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    after_create = len(synced)
    assert after_create >= 1  # a study created is durable
    trial = study.ask()  # created and claimed: no fsync
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("a", 1)
    trial.report(0.5, 1)
    assert len(synced) == after_create
    study.tell(trial, 0.25)  # finished: durable, and everything before it with it
    assert len(synced) == after_create + 1
    again = optuna.load_study(study_name="s", storage=open_storage(str(path)))  # a second reader of the file
    (frozen,) = again.get_trials()
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.25
    assert frozen.user_attrs == {"a": 1} and frozen.intermediate_values == {1: 0.5} and "x" in frozen.params


def test_the_off_switch_gives_optunas_backend_which_fsyncs_every_record(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(suite.journal.os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr("optuna.storages.journal._file.os.fsync", lambda fd: synced.append(fd))
    monkeypatch.setenv(suite.journal.FSYNC_ENV, "every")
    storage = open_storage(str(tmp_path / "optuna.journal"))
    assert type(storage._backend) is optuna.storages.journal.JournalFileBackend
    study = optuna.create_study(study_name="s", storage=storage)
    before = len(synced)
    trial = study.ask()
    trial.set_user_attr("a", 1)
    assert len(synced) > before  # a record of a running trial is fsynced too
