"""The store's writer process: a local sqlite store's transactions, on a core of their own.

Why: a stacked grid of 256 runs logs 91,000 metric values, and sqlite takes about 0.5 s to insert
them into MLflow's ``metrics`` table (a six-column primary key and two more indexes), plus 0.2 s
of Python building the rows. In the training process that is a quarter of the grid's wall time.
A thread cannot take it off the training's path: the GIL passes between the two for every row
(measured: training and writing side by side in threads took as long as one after the other).
A process can, on the second core.

How: :class:`WriterProcess` starts ``python -m suite.tracking.writer`` (the standard library,
:mod:`suite.tracking.direct` and :mod:`suite.tracking.records`; neither torch nor MLflow), hands it
batches of :class:`~suite.tracking.records.PendingRun` records, and gets one acknowledgement per
batch, in order. The child writes as :meth:`DirectStore.write` does (one transaction), so the
rows are exactly those of a write in the training process; every batch that came while it was
writing goes into its next transaction (:func:`merge_runs`), so a writer that falls behind
writes bigger batches, which cost less per row, and catches up.

- **Failures are handled where they always were.** After a batch fails, the child writes nothing
  more and reports every later batch as not written; the tracker takes all of them back and
  writes them itself (:meth:`WriterProcess.wait`), where the failure is raised as before.
- **Signals** (Ctrl-C, SIGTERM) are the training process's to handle: the child ignores them and
  writes what it is sent while the parent marks its runs interrupted.
- **When its parent dies** (even by ``kill -9``) the child writes every batch it has received
  in full, then exits: the end of its input tells it, and on Linux ``PR_SET_PDEATHSIG`` sends
  it SIGUSR1, which only wakes it (its input may stay open in a process the parent left).
  Only a batch the parent was still sending is lost, and nothing in it was reported written
  (:meth:`WriterProcess.when_written`); runs left ``RUNNING`` are reaped as interrupted by the
  next invocation.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import pickle
import select
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from suite.exec.signals import ignore_stop_signals, wake_on_parent_death
from suite.tracking.records import PendingRun, RunParam

Batch = list[PendingRun]


def wire(records: Sequence[PendingRun]) -> Batch:
    """``records`` ready to pickle, their metric values as four columns and their params as plain
    tuples (a named tuple pickles through a Python call each: 90 ms for a stack's 45,000 values,
    the columns 3 ms; ``make bench``'s 250,000 params took 1.3 s of its tracking, sampled)."""
    return [replace(r, metrics=list(zip(*r.metrics, strict=True)) if r.metrics else r.metrics,  # type: ignore[arg-type]
                    params=list(map(tuple, r.params))) if r.metrics or r.params else r
            for r in records]


def unwire(records: Batch) -> Batch:
    """The records :func:`wire` sent, their metric values rows and their params
    :class:`~suite.tracking.records.RunParam` again."""
    for r in records:
        if r.metrics:
            r.metrics = list(zip(*r.metrics, strict=True))  # type: ignore[arg-type]
        if r.params:
            r.params = list(itertools.starmap(RunParam, r.params))
    return records


def merge_runs(records: Sequence[PendingRun]) -> list[PendingRun]:
    """Records of several batches, in order, as one batch: one record per run, later writes last."""
    merged: dict[str, PendingRun] = {}
    for r in records:
        have = merged.get(r.run_id)
        if have is None:
            merged[r.run_id] = replace(r, create_tags=dict(r.create_tags), params=list(r.params),
                                       metrics=list(r.metrics), tags=dict(r.tags), artifacts=dict(r.artifacts))
            continue
        absorb(have, r)
    return list(merged.values())


def absorb(have: PendingRun, r: PendingRun) -> None:
    """Add ``r``, a later record of the same run, to ``have`` (in place)."""
    have.create = have.create or r.create
    have.create_tags.update(r.create_tags)
    have.params += r.params
    have.metrics += r.metrics
    have.tags.update(r.tags)
    if r.status is not None:
        have.status, have.end_time = r.status, r.end_time
    have.artifacts.update(r.artifacts)


class WriterProcess:
    """The parent's side of one writer process for one sqlite store (see the module docstring).

    :meth:`submit` never waits for the child (a sender thread feeds its pipe); :meth:`poll` and
    :meth:`wait` run the callbacks of batches the child has written, in the calling thread."""

    def __init__(self, db_path: Path, artifact_root: str) -> None:
        acks, child_acks = os.pipe()  # answers on a pipe of their own: nothing the child prints can mix in
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(db_path), artifact_root, str(os.getpid()), str(child_acks)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(child_acks,),
            )
        except BaseException:
            os.close(acks)
            raise
        finally:
            os.close(child_acks)
        self._acks = os.fdopen(acks, "rb")
        self._seqs = itertools.count(1)  # a batch's number, sent with it and answered with it
        self._batches: dict[int, Batch] = {}  # seq -> records, until the child has written them
        self._pending: set[int] = set()  # seqs sent and not answered yet
        self._refused: set[int] = set()  # seqs the child did not write (it writes nothing after a failure)
        # (the last seq it waits for, callback), in the order of their seqs
        self._callbacks: deque[tuple[int, Callable[[], None]]] = deque()
        self._cond = threading.Condition()
        self._outbox: deque[bytes | None] = deque()
        self._closed = False
        self._ended = False  # the child has exited
        threading.Thread(target=self._send, name="suite-writer-send", daemon=True).start()
        threading.Thread(target=self._receive, name="suite-writer-receive", daemon=True).start()

    @property
    def failed(self) -> bool:
        """Whether the child has refused a batch (then it writes nothing more)."""
        with self._cond:
            return bool(self._refused)

    @property
    def idle(self) -> bool:
        """Whether every batch submitted has been answered."""
        with self._cond:
            return not self._pending

    def submit(self, experiment_id: str, records: Sequence[PendingRun]) -> None:
        """Hand ``records`` to the child, to be written in one transaction (with what else is
        waiting for the child then).

        The steps are ordered so that a ``KeyboardInterrupt`` between any two of them (a second
        Ctrl-C) leaves nothing to wait for that will not come: a batch is waited for only once
        it is in the outbox, and its records are kept before that, to be handed back."""
        batch = list(records)
        seq = next(self._seqs)
        data = pickle.dumps((seq, experiment_id, wire(batch)), protocol=pickle.HIGHEST_PROTOCOL)
        with self._cond:
            self._batches[seq] = batch
            if self._ended:  # nobody to write it: not written
                self._refused.add(seq)
            else:
                self._outbox.append(data)
                self._pending.add(seq)
            self._cond.notify_all()

    def when_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from :meth:`poll` or :meth:`wait`) once everything submitted so far
        is written; now if it is."""
        with self._cond:
            if self._batches:
                self._callbacks.append((next(reversed(self._batches)), callback))  # the newest batch
                return
        callback()

    def poll(self) -> None:
        """Run the callbacks of the batches written since the last call (never waits; its cost
        does not grow with the batches still to write: the child answers them in order)."""
        calls = []
        with self._cond:
            oldest = next(iter(self._batches), math.inf)  # the oldest batch not written yet
            while self._callbacks and self._callbacks[0][0] < oldest:
                calls.append(self._callbacks.popleft()[1])
        for cb in calls:
            cb()

    def wait(self) -> tuple[Batch, list[Callable[[], None]]]:
        """Wait until every batch is answered; run the callbacks of those written. Return the
        records not written (a batch that failed and every one after it, in order) and the
        callbacks that wait for them; after a failure the child is stopped."""
        with self._cond:
            while self._pending:
                self._cond.wait()
            refused = sorted(self._refused)
            records = [r for seq in refused for r in self._batches.pop(seq)]
            self._refused.clear()
            first = refused[0] if refused else math.inf  # the refused batches are the last ones
            waiting = [cb for last, cb in self._callbacks if last >= first]
            self._callbacks = deque((last, cb) for last, cb in self._callbacks if last < first)
        self.poll()
        if refused:
            self.close()
        return records, waiting

    def close(self) -> None:
        """End the child's input; it exits once it has answered what it was sent."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._outbox.append(None)
                self._cond.notify_all()

    # -- the two threads ------------------------------------------------------------------------
    def _send(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        while True:
            with self._cond:
                while not self._outbox:
                    self._cond.wait()
                data = self._outbox.popleft()
            try:
                if data is None:
                    stdin.close()
                    return
                stdin.write(len(data).to_bytes(8, "little"))
                stdin.write(data)
                stdin.flush()
            except (OSError, ValueError):  # the child is gone: _receive reports every batch unwritten
                return

    def _receive(self) -> None:
        while True:
            try:
                seq, ok = pickle.load(self._acks)
            except Exception:  # noqa: BLE001 - end of input, or a child that died mid-answer
                break
            with self._cond:
                self._pending.discard(seq)
                if ok:
                    self._batches.pop(seq, None)
                else:
                    self._refused.add(seq)
                self._cond.notify_all()
        with self._cond:  # the child has exited: what it did not write is not written
            self._refused.update(self._batches)
            self._pending.clear()
            self._ended = True
            self._outbox.append(None)  # and the sender stops
            self._cond.notify_all()
        self._acks.close()
        self.proc.wait()


# -- the child ------------------------------------------------------------------------------------
PIPE_BYTES = 1 << 20  # the input pipe's size where Linux lets it grow (what is in it is drained on the parent's death)


class _Inbox:
    """The child's input: length-prefixed pickles on a pipe, read as far as they have come."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.eof = fd, bytearray(), False
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError, AttributeError):  # Linux only; a bigger pipe holds a bigger backlog
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    def read_available(self) -> None:
        """Read what the pipe holds now (never waits); note its end."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, PIPE_BYTES)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
            self.buf += chunk

    def messages(self) -> list[Any]:
        """The complete messages read so far (a message the parent was cut off in stays unread)."""
        out, at = [], 0
        while len(self.buf) - at >= 8:
            size = int.from_bytes(self.buf[at : at + 8], "little")
            if len(self.buf) - at - 8 < size:
                break
            out.append(pickle.loads(self.buf[at + 8 : at + 8 + size]))
            at += 8 + size
        del self.buf[:at]
        return out


def _groups(messages: list[Any]) -> Iterator[tuple[str, list[int], Batch]]:
    """Consecutive messages of one experiment as one batch: ``(experiment id, seqs, records)``."""
    for experiment_id, run in itertools.groupby(messages, key=lambda m: m[1]):
        run = list(run)
        records = [r for _, _, batch in run for r in unwire(batch)]
        yield experiment_id, [seq for seq, _, _ in run], merge_runs(records) if len(run) > 1 else records


def main(argv: Sequence[str]) -> None:
    """The child: write what it reads from stdin, everything that came while it was writing in
    one transaction; answer ``(seq, written)`` per batch on the file descriptor it is given.
    When its parent dies (the input ends, or SIGUSR1 comes) it writes every batch it has
    received in full, then exits."""
    db_path, artifact_root, parent, acks = argv
    ignore_stop_signals()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    wake_on_parent_death(int(parent), wake_w)
    from suite.tracking.direct import DirectStore

    store = DirectStore(Path(db_path), artifact_root)
    inbox, out = _Inbox(sys.stdin.fileno()), os.fdopen(int(acks), "wb")
    failed = orphan = False
    while True:
        inbox.read_available()
        messages = inbox.messages()
        if not messages:
            if inbox.eof or orphan:
                break
            select.select([inbox.fd, wake_r], [], [])
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            orphan = orphan or os.getppid() != int(parent)  # then: what is in the pipe, and no more
            continue
        for experiment_id, seqs, records in _groups(messages):
            if not failed:
                try:
                    store.write(experiment_id, records)
                except Exception:  # noqa: BLE001 - the parent writes it again itself, and reports the failure
                    failed = True
            try:
                for seq in seqs:
                    pickle.dump((seq, not failed), out)
                out.flush()
            except OSError:  # the parent is gone: nobody to answer, and the rest is still written
                orphan = True
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
