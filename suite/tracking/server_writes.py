"""A tracking server's writes, overlapped: MLflow's supported ``log_batch(synchronous=False)``.

On an ``http(s)://`` store every write is a request, so a unit of work (a stack's runs, a
population) would wait for one round trip after another. Inside
:meth:`~suite.tracking.queue.WriteQueue.batched`, the queue hands a run's params, metrics and tags
here instead: :meth:`ServerWrites.log_batch` submits them to MLflow's async logging queue (its
thread pool, ``MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE``, 10 by default, sends several runs' batches
at once) and keeps the ``RunOperations`` it returns; a run's status is kept back
(:meth:`ServerWrites.set_status`). :meth:`ServerWrites.drain` waits for each batch's own
completion (not MLflow's ``flush()``, which restarts the logging thread and so costs up to a
second) and only then sets the statuses: **completed means written**, a run whose batches failed
is not set to its final status (it stays ``RUNNING``, for the next invocation to reap), and the
first failure is raised as the original MLflow error, as a synchronous write would raise it.

``SUITE_TRACKING_ASYNC=0`` turns this off (every write synchronous, as outside ``batched``).

Imports: MLflow only through the client it is given.
"""

from __future__ import annotations

import os
from typing import Any

from suite.tracking.records import RUNNING

ASYNC_ENV = "SUITE_TRACKING_ASYNC"  # 0: a tracking server's writes are synchronous


def wanted(server: bool) -> bool:
    """Whether a store's writes are overlapped here: a tracking server, unless :data:`ASYNC_ENV` is ``0``."""
    return server and os.environ.get(ASYNC_ENV, "1").strip() != "0"


class ServerWrites:
    """The batches submitted and the statuses kept back since the last :meth:`drain`."""

    def __init__(self) -> None:
        self._ops: list[tuple[str, Any]] = []  # (run id, RunOperations) in submission order
        self._statuses: dict[str, tuple[str, int | None]] = {}  # run id -> (status, end time), the latest

    @property
    def pending(self) -> bool:
        """Whether anything waits for :meth:`drain`."""
        return bool(self._ops or self._statuses)

    def log_batch(self, client: Any, run_id: str, **batch: Any) -> None:
        """Submit one ``log_batch`` (``metrics``, ``params``, ``tags``: MLflow's entities) without waiting."""
        self._ops.append((run_id, client.log_batch(run_id, synchronous=False, **batch)))

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
        for run_id, (status, end_time) in statuses.items():
            if run_id in failed:
                continue  # its data is not all in the store: it is not shown finished
            try:
                if status == RUNNING:
                    client.update_run(run_id, status=RUNNING)  # reopened: its end time kept
                else:
                    client.set_terminated(run_id, status, end_time=end_time)
            except Exception as exc:  # noqa: BLE001 - as above
                failed.setdefault(run_id, exc)
        if failed:
            raise next(iter(failed.values()))


def _wait(op: Any) -> None:
    """Wait for one ``RunOperations``; a failure is raised as the call's own error where its
    futures can be read (``RunOperations.wait`` wraps them all in one message), else as MLflow's."""
    futures = getattr(op, "_operation_futures", None)
    if not isinstance(futures, list) or not all(hasattr(f, "result") for f in futures):
        op.wait()
        return
    for future in futures:
        future.result()  # raises the batch's own exception
