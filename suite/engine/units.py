"""Work units: how a list of specs is cut into pieces that one worker trains at once.

A unit is a list of specs that one device trains together: a *stack* of compatible specs
trained as one batched model (the stacked engine, :mod:`suite.engine.stack`), or a single
spec trained by the per-run loop (:mod:`suite.engine.loop`). Dispatch hands whole units to
workers; the engine decides how to train them. ``engine`` is ``auto`` (stack what can be
stacked), ``stacked`` or ``loop``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

from suite.engine.loop import RunResult, build, train
from suite.engine.stack import block_key, stack_key, stackable, train_stack
from suite.errors import SpecError
from suite.registry import Registry, get_registry
from suite.specs.spec import RunSpec

ENGINES = ("auto", "stacked", "loop")
UnitEval = Callable[[int, int, dict[str, float]], None]  # (index in the unit, step, metrics)
MAX_STACK = 4096  # beyond this a stack gains little and its per-row host work grows
MEMORY_SHARE = 0.5  # of the device's free memory (CPU: of the available memory) one stack may use
FALLBACK_MEMORY = 4 << 30


def plan_units(specs: Sequence[RunSpec], registry: Any = None, *, engine: str = "auto",
               stack_size: int | None = None, device: str = "cpu", workers: int = 1) -> list[list[int]]:
    """Cut ``specs`` into work units; returns lists of indices into ``specs``, ordered by their
    lowest index.

    ``auto`` and ``stacked`` group specs with the same :func:`suite.engine.stack.stack_key`
    (problem and its parameters, sampler and its parameters, batch size, budget, evaluation
    schedule, divergence factor), ordered by optimizer then averager component
    (:func:`suite.engine.stack.block_key`), into stacks of at most
    ``stack_size`` specs (default: what fits in ``device``'s memory, see
    :func:`default_stack_size`). A spec with a component that has no stacked implementation is
    a unit of its own and trains through the per-run loop, with ``stacked`` as with ``auto``
    (the loop is the fallback, never an error). ``loop``: every spec is its own unit.
    With ``workers`` > 1 and no ``stack_size``, stacks are split until every worker has a unit
    (a stack's cost grows with its rows, so halves on two workers finish sooner than one whole).
    """
    if engine not in ENGINES:
        raise SpecError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    if stack_size is not None and stack_size < 1:
        raise SpecError(f"--stack-size={stack_size} is out of range: must be at least 1")
    if engine == "loop":
        return [[i] for i in range(len(specs))]
    registry = registry or get_registry()
    groups: dict[tuple, list[int]] = {}
    units: list[list[int]] = []
    for i, spec in enumerate(specs):
        if stackable(spec, registry):
            groups.setdefault(stack_key(spec), []).append(i)
        else:
            units.append([i])
    for members in groups.values():
        members.sort(key=lambda i: block_key(specs[i]))  # stable: seeds and the like keep their order
        size = stack_size or default_stack_size(specs[members[0]], device, registry)
        units += [members[j:j + size] for j in range(0, len(members), size)]
    while stack_size is None and len(units) < workers:
        largest = max(units, key=len)
        if len(largest) < 2:
            break
        units.remove(largest)
        half = (len(largest) + 1) // 2
        units += [largest[:half], largest[half:]]
    return sorted(units, key=min)


def run_unit(specs: Sequence[RunSpec], device: Any = "cpu", registry: Any = None, on_eval: UnitEval | None = None,
             *, engine: str = "auto", eval_round: Callable[[], AbstractContextManager[Any]] | None = None,
             ) -> Iterator[tuple[int, RunResult]]:
    """Train one unit on ``device``; yield ``(index in the unit, result)`` as each spec finishes.

    With ``auto`` or ``stacked``, stackable specs train as stacks (a unit of one stackable spec
    is a stack of one); the others, and every spec with ``loop``, through the per-run loop.
    Exceptions from plugin code become failed results of the specs they concern. ``eval_round``:
    entered around each evaluation of a stack's rows (:func:`suite.engine.stack.train_stack`).
    """
    registry = registry or get_registry()
    if engine == "loop":
        pieces = [[i] for i in range(len(specs))]
    else:
        pieces = plan_units(specs, registry, engine=engine, stack_size=max(1, len(specs)))
    for piece in pieces:
        sub = [specs[i] for i in piece]
        if engine != "loop" and stackable(sub[0], registry):
            cb = (lambda j, step, m, _p=piece: on_eval(_p[j], step, m)) if on_eval else None
            for j, result in train_stack(sub, device, registry, cb, eval_round=eval_round):
                yield piece[j], result
        else:
            i = piece[0]
            cb = (lambda step, m, _i=i: on_eval(_i, step, m)) if on_eval else None
            yield i, train(specs[i], device, registry, cb)


def default_stack_size(spec: RunSpec, device: str | torch.device = "cpu", registry: Registry | None = None) -> int:
    """How many specs like ``spec`` one stack holds on ``device``: a share of its free memory
    divided by an estimate of one row's footprint (data, parameters with gradient, momentum and
    average, and activations of one batch), at most :data:`MAX_STACK`."""
    try:
        problem = build(spec, "cpu", registry).problem
    except Exception:  # the run will report it; size does not matter then
        return MAX_STACK
    data = sum(t.numel() for t in (problem.X_train, problem.y_train, problem.X_val, problem.y_val) if t is not None)
    params = sum(p.numel() for p in problem.model.parameters())
    activations = spec.batch_size * (params / max(1, problem.X_train.shape[-1] if problem.X_train is not None else 1))
    per_row = 4 * (data + 8 * params + 4 * activations + spec.batch_size) + 1024
    return max(1, min(MAX_STACK, int(free_memory(device) * MEMORY_SHARE // per_row)))


def free_memory(device: str | torch.device) -> int:
    """Free bytes on ``device`` (CUDA: ``mem_get_info``; CPU: ``MemAvailable``)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_MEMORY


__all__ = ["ENGINES", "default_stack_size", "plan_units", "run_unit"]
