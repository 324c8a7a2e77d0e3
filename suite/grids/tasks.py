"""A grid's work unit as a pool task: the specs one worker trains together, and the runner that
trains them there and reports each spec's start, evaluations and result to the parent."""

from __future__ import annotations

from dataclasses import dataclass

from suite.exec.pool import WorkerEnv


@dataclass(frozen=True)
class UnitTask:
    """Specs (as JSON, cheap to pickle) that one worker trains as one unit, with their indices
    in the grid's list of specs to run."""

    specs_json: list[str]
    indices: list[int]
    engine: str = "auto"


def train_unit(task: UnitTask, env: WorkerEnv) -> None:
    """Pool runner: train ``task``'s specs on the worker's device; emit ``start`` once with the
    unit's indices, ``evals`` per evaluation step of the unit (a list of ``(index, step, metrics)``: one event for
    a stack's rows) and ``done`` with each :class:`suite.engine.loop.RunResult`."""
    from suite.engine.evalbatch import EvalBatches
    from suite.engine.units import run_unit
    from suite.specs.spec import RunSpec

    specs = [RunSpec.from_json(s) for s in task.specs_json]
    env.emit("start", list(task.indices))
    batches = EvalBatches(lambda rows: env.emit("evals", [(task.indices[j], step, m) for j, step, m in rows]))
    try:
        for j, result in run_unit(specs, env.local, env.registry, batches.add, engine=task.engine):
            batches.flush()  # a run's evaluations before its end
            result.device = env.device
            env.emit("done", task.indices[j], result)
    finally:  # what was evaluated before an interruption is recorded too
        batches.flush()
