"""A tracking server's writes, overlapped: MLflow's supported ``log_batch(synchronous=False)``.

On an ``http(s)://`` store every write is a request, so a unit of work (a stack's runs, a
population) waits for one round trip after another. Where :func:`wanted` says so, inside
:meth:`~suite.tracking.queue.WriteQueue.batched`, the queue hands a run's params, metrics and tags
here instead: :meth:`ServerWrites.log_batch` submits them to MLflow's async logging queue (its
thread pool, ``MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE``, 10 by default, sends several runs' batches
at once) and keeps the ``RunOperations`` it returns; artifacts (a request each, which MLflow
has no async call for) go to two threads of this module (:meth:`ServerWrites.call`); a run's
status is kept back (:meth:`ServerWrites.set_status`). :meth:`ServerWrites.drain` waits for each
batch's own completion (not MLflow's ``flush()``, which restarts the logging thread and so costs
up to a second) and for the artifacts, and only then sets the statuses (several at once):
**completed means written**, a run whose writes failed is not set to its final status (it stays
``RUNNING``, for the next invocation to reap), and the first failure is raised as the original
MLflow error, as a synchronous write would raise it.

It is on by default for a server across a network (a host other than this machine's loopback),
where round trips bound the writes: ``make perf`` row i' (a 20 ms round trip) measures it faster
than the synchronous writes. On a server of this machine (``localhost``, ``127.*``, ``::1``) the
writes stay synchronous: there the server's own CPU, not the round trip, bounds them, and the
overlap measured no faster (row i). ``SUITE_TRACKING_ASYNC=1`` turns it on for every server,
``0`` off for every server (docs/performance.md).

Imports: MLflow only through the client it is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from suite.tracking.records import RUNNING
from suite.tracking.ui import is_server

ASYNC_ENV = "SUITE_TRACKING_ASYNC"  # 1: every tracking server's writes overlap, 0: none's (unset: remote ones')
LOOPBACK = ("localhost", "::1")  # with 127.*: a server on this machine
THREADS = 2  # artifacts and statuses sent at once (8 were no faster on a local server, docs/performance.md)


def wanted(tracking_uri: str) -> bool:
    """Whether a store's writes are overlapped here: a tracking server (``http(s)://``) on another
    host, or any tracking server with :data:`ASYNC_ENV` ``1``; none with it ``0``."""
    if not is_server(tracking_uri):
        return False
    setting = os.environ.get(ASYNC_ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    host = (urlsplit(tracking_uri).hostname or "").lower()
    return not (host in LOOPBACK or host.startswith("127."))


class ServerWrites:
    """The batches submitted and the statuses kept back since the last :meth:`drain`."""

    def __init__(self) -> None:
        self._ops: list[tuple[str, Any]] = []  # (run id, RunOperations or Future) in submission order
        self._statuses: dict[str, tuple[str, int | None]] = {}  # run id -> (status, end time), the latest
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> bool:
        """Whether anything waits for :meth:`drain`."""
        return bool(self._ops or self._statuses)

    def log_batch(self, client: Any, run_id: str, **batch: Any) -> None:
        """Submit one ``log_batch`` (``metrics``, ``params``, ``tags``: MLflow's entities) without waiting."""
        self._ops.append((run_id, client.log_batch(run_id, synchronous=False, **batch)))

    def call(self, run_id: str, write: Callable[..., Any], *args: Any) -> None:
        """Make one other write of the run (an artifact) in a thread, without waiting."""
        self._ops.append((run_id, self._threads().submit(write, *args)))

    def set_status(self, run_id: str, status: str, end_time: int | None) -> None:
        """Set the run's status once its batches are written (:meth:`drain`)."""
        self._statuses[run_id] = (status, end_time)

    def drain(self, client: Any) -> None:
        """Wait for every submitted batch, then set the statuses of the runs whose batches were
        all written; raise the first failure (after setting what can be set)."""
        ops, self._ops = self._ops, []
        statuses, self._statuses = self._statuses, {}
        failed: dict[str, BaseException] = {}
        for run_id, op in ops:
            try:
                _wait(op)
            except Exception as exc:  # noqa: BLE001 - raised below, after what can be written is
                failed.setdefault(run_id, exc)
        settings = [(run_id, self._threads().submit(_set_status, client, run_id, *status))
                    for run_id, status in statuses.items()
                    if run_id not in failed]  # a run whose data is not all in the store is not shown finished
        for run_id, future in settings:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - as above
                failed.setdefault(run_id, exc)
        if failed:
            raise next(iter(failed.values()))

    def close(self) -> None:
        """End the threads (after :meth:`drain`)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="suite-server-writes")
        return self._pool


def _set_status(client: Any, run_id: str, status: str, end_time: int | None) -> None:
    if status == RUNNING:
        client.update_run(run_id, status=RUNNING)  # reopened: its end time kept
    else:
        client.set_terminated(run_id, status, end_time=end_time)


def _wait(op: Any) -> None:
    """Wait for one ``RunOperations``; a failure is raised as the call's own error where its
    futures can be read (``RunOperations.wait`` wraps them all in one message), else as MLflow's."""
    if isinstance(op, Future):
        op.result()
        return
    futures = getattr(op, "_operation_futures", None)
    if not isinstance(futures, list) or not all(hasattr(f, "result") for f in futures):
        op.wait()
        return
    for future in futures:
        future.result()  # raises the batch's own exception
