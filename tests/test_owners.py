"""Owners of runs and trials: a label names one process for good (its host, boot and start time,
and pid), so that a run left RUNNING is reaped once its process is gone, even when another
process holds its pid now (after a reboot, or when pids wrap around)."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from suite import owners
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.tracking.tracker import Tracker

needs_proc = pytest.mark.skipif(not os.path.exists(owners.BOOT_ID), reason="needs Linux's /proc")


@pytest.fixture
def live():
    """A live process of this host (it waits on its stdin), ended after the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


def reused(label: str) -> str:
    """The label as a process that held the same pid before would have left it: another start."""
    host, stamp, pid = label.split(":")
    boot, start = stamp.split(".")
    return f"{host}:{boot}.{int(start) + 1}:{pid}"


def rebooted(label: str) -> str:
    """The label as a process of an earlier boot with the same pid and start tick would have left it."""
    host, stamp, pid = label.split(":")
    boot, start = stamp.split(".")
    return f"{host}:{'0' * len(boot)}.{start}:{pid}"


@needs_proc
def test_one_label_is_built_and_read_back(live):
    label = owners.label(live.pid)
    owner = owners.parse(label)
    assert owner == owners.Owner(platform.node(), live.pid, owner.stamp) and owner.stamp
    assert label.rpartition(":")[2] == str(live.pid)  # the pid stays last, where host:pid had it
    assert owners.label() == owners.label(os.getpid())
    assert owners.parse("not a label") is None and owners.parse("") is None


@needs_proc
def test_a_reused_pid_or_another_boot_is_not_the_owner(live):
    label = owners.label(live.pid)
    assert not owners.gone(label)  # the process runs
    assert owners.gone(reused(label))  # its pid, but another process
    assert owners.gone(rebooted(label))  # its pid and start tick, but before a reboot
    live.stdin.close()
    live.wait(timeout=60)
    assert owners.gone(label)


def test_old_host_pid_labels_are_still_read(live):
    old = f"{platform.node()}:{live.pid}"
    assert owners.parse(old) == owners.Owner(platform.node(), live.pid, None)
    assert not owners.gone(old)  # a pid that exists is taken as the owner, as before
    live.stdin.close()
    live.wait(timeout=60)
    assert owners.gone(old)


def test_labels_of_other_hosts_are_never_gone():
    assert not owners.gone(f"{platform.node()}-elsewhere:1")
    assert not owners.gone(f"{platform.node()}-elsewhere:abcdef012345.1:1")
    assert not owners.gone("optuna-study")  # the parent run of a study has no process owner


@needs_proc
def test_a_run_whose_owners_pid_was_reused_is_reaped_and_a_live_ones_is_not(workdir, live):
    uri = f"sqlite:///{workdir}/mlflow.db"
    tracker = Tracker("reap", uri)
    spec = resolve_spec(get_registry(), components={"problem": "linreg"}, batch_size=32, epochs=1, seed=0)
    orphan, alive = tracker.start_run(spec, get_registry()), tracker.start_run(spec, get_registry())
    label = owners.label(live.pid)
    with sqlite3.connect(workdir / "mlflow.db") as db:  # as if the live process had logged one, and
        # a process that held its pid before (then was killed) the other
        for run_id, owner in ((orphan, reused(label)), (alive, label)):
            db.execute("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'suite.owner'", (owner, run_id))
    assert Tracker("reap", uri).reap_orphans() == [orphan]
    client = MlflowClient(uri)
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(orphan).data.tags["suite.status"] == "interrupted"
    assert client.get_run(alive).info.status == "RUNNING"
