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
    """Pool runner: train ``task``'s specs on the worker's device; emit ``start`` for each spec,
    ``eval`` per evaluation and ``done`` with each :class:`suite.engine.loop.RunResult`."""
    from suite.engine.units import run_unit
    from suite.specs.spec import RunSpec

    specs = [RunSpec.from_json(s) for s in task.specs_json]
    for index in task.indices:
        env.emit("start", index)

    def on_eval(j: int, step: int, metrics: dict) -> None:
        env.emit("eval", task.indices[j], step, metrics)

    for j, result in run_unit(specs, env.local, env.registry, on_eval, engine=task.engine):
        result.device = env.device
        env.emit("done", task.indices[j], result)
