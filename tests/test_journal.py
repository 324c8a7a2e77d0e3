"""The tuning journal writes every record at once and fsyncs only what must outlive a power cut."""

import threading

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


def _count_locks(monkeypatch) -> list[int]:
    taken = [0]
    real = suite.journal.get_lock_file

    def counting(lock):
        taken[0] += 1
        return real(lock)

    monkeypatch.setattr(suite.journal, "get_lock_file", counting)
    return taken


def test_a_burst_takes_the_lock_once_and_fsyncs_once_at_its_end(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(suite.journal.os, "fsync", lambda fd: synced.append(fd))
    taken = _count_locks(monkeypatch)
    path = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(path))
    other = optuna.load_study(study_name="s", storage=open_storage(path))  # a second backend on the file
    before_locks, before_syncs = taken[0], len(synced)
    with suite.journal.burst(study._storage, other._storage):
        trials = [study.ask() for _ in range(3)]
        for t in trials:
            t.suggest_float("x", 0, 1)
            t.set_user_attr("a", 1)
            t.report(0.5, 1)
        other.tell(trials[0].number, 0.25)  # through the other backend: the same burst, no wait
        study.tell(trials[1], 0.5)
        assert taken[0] == before_locks + 1
        assert len(synced) == before_syncs  # the tells' fsync waits for the burst's end
        # written at once: a reader of the file (a third backend) sees every record already
        seen = optuna.load_study(study_name="s", storage=open_storage(path)).get_trials()
        assert [t.state for t in seen] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    assert taken[0] == before_locks + 1 and len(synced) == before_syncs + 1
    with suite.journal.burst(study._storage):  # nothing durable: no fsync; nothing written: no lock
        pass
    with suite.journal.burst(study._storage):
        trials[2].set_user_attr("b", 2)
    assert taken[0] == before_locks + 2 and len(synced) == before_syncs + 1
    study.tell(trials[2], 1.0)  # outside a burst: a lock and an fsync of its own
    assert taken[0] == before_locks + 3 and len(synced) == before_syncs + 2
    (_, _, last) = optuna.load_study(study_name="s", storage=open_storage(path)).get_trials()
    assert last.user_attrs == {"a": 1, "b": 2} and last.value == 1.0


def test_another_thread_writes_into_a_burst_without_waiting_for_its_end(tmp_path, monkeypatch):
    taken = _count_locks(monkeypatch)
    study = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path / "optuna.journal")))
    first, second = study.ask(), study.ask()
    with suite.journal.burst(study._storage):
        first.set_user_attr("a", 1)  # the burst holds the lock now
        locks = taken[0]
        writer = threading.Thread(target=second.set_user_attr, args=("b", 2))
        writer.start()
        writer.join(timeout=120)  # a guard only: a writer that waited for the burst would never end
        assert not writer.is_alive()
        assert taken[0] == locks  # its record went through the burst's lock
    assert [t.user_attrs for t in study.get_trials()] == [{"a": 1}, {"b": 2}]


def test_a_tuning_writes_its_journal_in_bursts_and_the_off_switch_takes_a_lock_per_record(
        tmp_path, monkeypatch, cli):
    counts = {}
    for burst in ("1", "0"):
        monkeypatch.setenv(suite.journal.BURST_ENV, burst)
        taken = _count_locks(monkeypatch)
        journal = tmp_path / burst / "optuna.journal"
        cli("tune", "--problem", "linreg", "--batch-size", "16", "--trials", "8", "--budget", "epochs:2",
            "--reevaluate", "1", "--storage", journal, "--tracking-uri", f"sqlite:///{tmp_path}/{burst}.db")
        records = len(journal.read_text().splitlines())
        counts[burst] = (taken[0], records)
        monkeypatch.undo()
    assert counts["0"][0] >= counts["0"][1]  # every record took the lock
    assert counts["1"][0] * 3 < counts["1"][1]  # a population's proposals, reports and tells in bursts
