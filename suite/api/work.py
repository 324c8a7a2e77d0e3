"""``suite worker``: storage workers (:mod:`suite.distributed.worker`) on every device entry,
through the one process pool. Each worker process logs its own runs to the MLflow server recorded
in each study (a shared tracking server: there is no single local writer to protect)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from suite.distributed.grid_study import GridTrialRunner
from suite.distributed.worker import RunnerFactory, WorkerContext, run_worker, sharing_on
from suite.exec.pool import Pool, WorkerEnv
from suite.stores import HeartbeatPolicy
from suite.tuning.slots import TuneTrialRunner


def finish_study(tracker: Any, study: Any, plan: Any, parent_run_id: str) -> None:
    """A tuning study worked on by ``suite worker``s is done: log its outcome to its parent run."""
    from suite.tuning import winners
    from suite.tuning.tracking import finish_study_parent

    summary = winners.summarize(study, plan, None)
    figs = winners.study_figures(study)
    finish_study_parent(tracker, parent_run_id, summary, figs)
    winners.close_all(figs)


def tune_runner(study: Any, ctx: WorkerContext) -> TuneTrialRunner:
    """The runner of a tuning study's trials in ``suite worker``: runs logged straight to the
    study's MLflow experiment, its outcome logged when it is done."""
    return TuneTrialRunner(study, ctx, on_close=finish_study)


KINDS: dict[str, RunnerFactory] = {"grid": GridTrialRunner, "tune": tune_runner}


@dataclass(frozen=True)
class WorkTask:
    """What one storage worker works on."""

    storage: str
    studies: tuple[str, ...]
    tracking_uri: str | None
    quiet: bool
    policy: HeartbeatPolicy
    wait: bool
    engine: str = "auto"
    stack_size: int | None = None


def storage_worker(task: WorkTask, env: WorkerEnv) -> str:
    """Pool runner: one storage worker on this device until nothing is left; its summary line."""
    ctx = WorkerContext(device=env.local, tracking_uri=task.tracking_uri, quiet=task.quiet,
                        echo=lambda line: env.emit("echo", line), engine=task.engine, stack_size=task.stack_size)
    from suite.tracking.diagnose import storage_named

    with storage_named(task.storage):  # a failing Optuna storage is named in the worker's trouble line
        return run_worker(task.storage, task.studies, ctx, heartbeat_policy=task.policy, wait=task.wait,
                          runners=KINDS, shared=sharing_on()).line()


class _EchoHandler:
    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo, self.lines, self.troubles = echo, {}, []

    def on_event(self, tid: int, device: str, kind: str, args: tuple) -> None:
        if kind == "echo":
            self.echo(args[0])

    def on_done(self, tid: int, result: Any) -> None:
        self.lines[tid] = result

    def on_lost(self, tid: int, device: str, why: str) -> None:
        self.troubles.append(f"worker on {device}: {why}")


def check_studies(studies: Sequence[str]) -> None:
    """Refuse a blank ``--study`` name (one line, exit code 2)."""
    from suite.stores import check_name

    for name in studies:
        check_name(name, "--study")


def work(storage: str, studies: Sequence[str], devices: Sequence[str], *, tracking_uri: str | None = None,
         quiet: bool = False, policy: HeartbeatPolicy | None = None, wait: bool = False,
         echo: Callable[[str], None] = print, engine: str = "auto", stack_size: int | None = None) -> WorkLines:
    """One storage worker per device entry (in this process when there is one), each until no
    work is left (or forever with ``wait``); returns their summary lines, then one line per
    worker that died or raised (those also in ``.troubles``)."""
    task = WorkTask(storage, tuple(studies), tracking_uri, quiet, policy or HeartbeatPolicy(), wait, engine, stack_size)
    handler = _EchoHandler(echo)
    Pool(devices, storage_worker, name="suite-storage-worker").run([task] * len(devices), handler)
    lines = WorkLines([handler.lines[t] for t in sorted(handler.lines)] + handler.troubles)
    lines.troubles = list(handler.troubles)
    return lines


class WorkLines(list):
    """What :func:`work` says: a line per worker, then one per worker that died or raised
    (``troubles``, also kept apart: the command exits 1 when there are any)."""

    troubles: list[str]
