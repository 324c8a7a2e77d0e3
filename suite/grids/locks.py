"""Claims: invocations of one grid on one machine share its specs instead of each running all.

Before the parent hands a spec to a worker it *claims* it: an exclusive ``flock`` on the spec's
lock file, one per (tracking store, experiment, spec hash), under ``.suite/locks/`` next to a
``sqlite:///`` store (in the working directory for other stores). The claim is held while the
spec runs and released once its result is in MLflow; the kernel releases it if the process dies.

A spec whose lock another invocation holds is *deferred*: this invocation runs the rest, then
waits for each deferred lock and asks MLflow whether the spec is done (it runs it itself if not,
e.g. when the other invocation was killed). The holder writes a time stamp into the lock file
when it claims and releases, so a spec claimed and released by another invocation after this one
looked at MLflow is looked up again before it is run: no spec runs twice.

There is no server or queue: the lock files are the only shared state, MLflow stays the ledger.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from suite import owners
from suite.exec.signals import interrupted
from suite.stores import sqlite_path

LOCK_DIR = Path(".suite") / "locks"
POLL_S = 0.2
MARGIN_NS = 1_000_000_000  # a stamp this close to our start counts as "after it" (clock resolution)


def lock_dir(tracking_uri: str) -> Path:
    """Where the claims of runs logged to ``tracking_uri`` live."""
    db = sqlite_path(tracking_uri)
    return (db.resolve().parent if db is not None else Path.cwd()) / LOCK_DIR


def store_key(tracking_uri: str) -> str:
    """The tracking store's identity (a sqlite file by its absolute path, whatever the URI's spelling)."""
    db = sqlite_path(tracking_uri)
    return f"sqlite:{db.resolve()}" if db is not None else tracking_uri


class Claims:
    """The specs this invocation holds (see the module docstring). ``since``: when this invocation
    read MLflow's done runs (``time.time_ns()`` taken just before)."""

    def __init__(self, tracking_uri: str, experiment: str, *, since: int | None = None) -> None:
        self.scope = f"{store_key(tracking_uri)}|{experiment}"
        self.since = time.time_ns() if since is None else since
        self.directory: Path | None = lock_dir(tracking_uri)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            self.directory = None  # nowhere to put locks (read-only): every claim succeeds
        self.held: dict[str, int] = {}  # spec hash -> open fd holding its flock
        self.owner = owners.label()  # who holds the claim (host:stamp:pid), for a person reading the file

    def _path(self, spec_hash: str) -> Path:
        assert self.directory is not None
        key = hashlib.sha256(f"{self.scope}|{spec_hash}".encode()).hexdigest()[:24]
        return self.directory / f"{key}.lock"

    def try_claim(self, spec_hash: str) -> bool:
        """Claim ``spec_hash`` unless another process holds it; True if this invocation holds it now."""
        import fcntl

        if spec_hash in self.held or self.directory is None:
            return True
        try:
            fd = os.open(self._path(spec_hash), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.held[spec_hash] = fd
        return True

    def wait(self, spec_hash: str) -> None:
        """Claim ``spec_hash``, waiting while another process holds it (a stop signal interrupts)."""
        while not self.try_claim(spec_hash):
            interrupted()
            time.sleep(POLL_S)

    def touched_since_start(self, spec_hash: str) -> bool:
        """Whether another invocation claimed or released ``spec_hash`` after this one started
        (then MLflow must be asked again whether it is done). Call while holding the claim."""
        fd = self.held.get(spec_hash)
        if fd is None:
            return False
        try:
            text = os.pread(fd, 64, 0).decode(errors="replace")
            stamp = int(text.split()[0])
        except (OSError, ValueError, IndexError):
            return False  # a fresh lock file: nobody had it
        return stamp >= self.since - MARGIN_NS

    def stamp(self, spec_hash: str, event: str) -> None:
        fd = self.held.get(spec_hash)
        if fd is None:
            return
        try:
            line = f"{time.time_ns()} {self.owner} {event}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, line, 0)
        except OSError:
            pass

    def mark_claimed(self, spec_hash: str) -> None:
        """Record that this invocation is about to run ``spec_hash``."""
        self.stamp(spec_hash, "claimed")

    def release(self, spec_hash: str) -> None:
        """Give ``spec_hash`` back (its result is in MLflow, or it was not run)."""
        if spec_hash not in self.held:
            return
        self.stamp(spec_hash, "released")
        os.close(self.held.pop(spec_hash))  # releases the flock

    def release_all(self) -> None:
        for spec_hash in list(self.held):
            self.release(spec_hash)
