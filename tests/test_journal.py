"""The tuning journal writes every record at once and fsyncs only what must outlive a power cut."""

import os
import threading

import optuna
import pytest
from optuna.storages.journal._storage import JournalOperation
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
    assert not os.path.lexists(path + ".lock")  # let go at the burst's end
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
        writer.join(timeout=120)  # a guard only: a writer that waited would wait out the lock's 30 s grace
        assert not writer.is_alive()
        assert taken[0] == locks  # its record went through the burst's lock
    assert [t.user_attrs for t in study.get_trials()] == [{"a": 1}, {"b": 2}]


def test_a_thread_outside_the_burst_has_its_finished_trial_fsynced_at_once(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(suite.journal.os, "fsync", lambda fd: synced.append(fd))
    study = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path / "optuna.journal")))
    first, second = study.ask(), study.ask()
    with suite.journal.burst(study._storage):
        first.set_user_attr("a", 1)
        before = len(synced)
        teller = threading.Thread(target=study.tell, args=(second, 1.0))
        teller.start()
        teller.join(timeout=120)
        assert not teller.is_alive() and len(synced) == before + 1  # its tell is durable when it returns
        study.tell(first, 0.5)
        assert len(synced) == before + 1  # this thread's tell: at the burst's end
    assert len(synced) == before + 2


def test_a_burst_that_raises_lets_go_of_the_lock_and_keeps_its_records(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(suite.journal.os, "fsync", lambda fd: synced.append(fd))
    path = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(path))
    trial = study.ask()
    before = len(synced)
    with pytest.raises(KeyError), suite.journal.burst(study):
        study.tell(trial, 0.25)
        raise KeyError("a bug in the burst's body")
    assert not os.path.lexists(path + ".lock") and len(synced) == before + 1
    with suite.journal.burst(study):  # a new burst takes the lock again
        study.ask().set_user_attr("b", 2)
    assert not os.path.lexists(path + ".lock")
    trials = optuna.load_study(study_name="s", storage=open_storage(path)).get_trials()
    assert trials[0].value == 0.25 and trials[1].user_attrs == {"b": 2}


def test_a_tuning_writes_its_journal_in_bursts_and_the_off_switch_takes_a_lock_per_record(
        tmp_path, monkeypatch, cli):
    counts, shared_reports = {}, {}
    for burst in ("1", "0"):
        monkeypatch.setenv(suite.journal.BURST_ENV, burst)
        taken = _count_locks(monkeypatch)
        reports: dict[int, set] = {}  # lock taken (its number) -> trials whose pruner reports it covered
        real_append = suite.journal.JournalBackend.append_logs

        def append(self, logs, _reports=reports, _taken=taken, _real=real_append):
            _real(self, logs)
            for log in logs:
                if log["op_code"] == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE:
                    _reports.setdefault(_taken[0], set()).add(log["trial_id"])

        monkeypatch.setattr(suite.journal.JournalBackend, "append_logs", append)
        journal = tmp_path / burst / "optuna.journal"
        cli("tune", "--problem", "linreg", "--batch-size", "16", "--trials", "8", "--budget", "epochs:2",
            "--reevaluate", "1", "--storage", journal, "--tracking-uri", f"sqlite:///{tmp_path}/{burst}.db")
        assert not journal.with_name(journal.name + ".lock").exists()
        counts[burst] = (taken[0], len(journal.read_text().splitlines()))
        shared_reports[burst] = max(map(len, reports.values()))
        monkeypatch.undo()
    assert counts["0"][0] >= counts["0"][1] and shared_reports["0"] == 1  # every record took the lock
    assert counts["1"][0] * 3 < counts["1"][1]  # a population's proposals, reports and tells in bursts
    assert shared_reports["1"] > 1  # one evaluation's reports of several trials under one lock
