"""The stacked engine: a stack of compatible specs trained as one batched model.

Every spec is first built by :func:`suite.engine.loop.build`, exactly as the per-run loop
builds it (same data, initialisation and random generators), then each family's stacked
adapter (:mod:`suite.stacked`) turns the K per-run objects into one batched component. The
training loop below mirrors :func:`suite.engine.loop._train_loop` step for step (evaluation
schedule, epoch/step scheduler intervals, averager update then ``on_step`` then the scheduler,
train-loss windows, divergence rule), with one forward, backward and update per step for the
whole stack. Metrics stay on the device until an evaluation, which copies them to the host in
one transfer.

Rows end on their own: a row that diverges is recorded as diverged (with its parameters at that
point) and frozen, one whose ``on_eval`` raises :class:`StopRun` is stopped, one whose component
raised is failed; the others go on. Frozen rows are left in the batch (their numbers are no
longer read) rather than compacted away; where the problem allows it, a step with few rows left
computes the gradients of those rows only (:mod:`suite.engine.shed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from suite.engine.loop import Built, RunResult, StopRun, TrainClock, build, divergence, eval_schedule
from suite.engine.shed import Shedder
from suite.errors import PluginContractError
from suite.exec.signals import interrupted
from suite.registry import FAMILIES, Registry, get_registry
from suite.specs.spec import RunSpec
from suite.stacked import BlockAverager, BlockOptimizer, RowsFailed, StackContext, StackedScheduler

UnitEval = Callable[[int, int, dict[str, float]], None]


def stackable(spec: RunSpec, registry: Registry) -> bool:
    """Whether every component of ``spec`` has a stacked implementation."""
    return all(registry.get(f, spec.component(f)).stacked is not None for f in FAMILIES)


def stack_key(spec: RunSpec) -> tuple:
    """Specs with equal keys can share a stack: the same problem and sampler (with their
    parameters), batch size, budget, evaluation schedule and divergence rule. The optimizer,
    scheduler and averager (components and hyperparameters) and the seed may differ: a stack's
    rows are ordered by :func:`block_key`, and each block of rows sharing an optimizer or an
    averager component is served by that component's stacked implementation."""
    return (
        spec.problem, tuple(sorted(spec.params_of("problem").items())),
        spec.sampler, tuple(sorted(spec.params_of("sampler").items())),
        spec.batch_size, spec.epochs, spec.steps, spec.eval_every, spec.eval_growth, spec.diverge_factor,
    )


def block_key(spec: RunSpec) -> tuple[str, str]:
    """The order of a stack's rows: rows with the same optimizer, then averager, component are
    consecutive, so that each component updates a view of its rows."""
    return spec.optimizer, spec.averager


def stack_id(specs: Sequence[RunSpec]) -> str:
    """A short id naming a stack (MLflow tag ``suite.stack``): a hash of its specs' hashes."""
    return hashlib.sha256(",".join(s.hash for s in specs).encode()).hexdigest()[:12]


def _fail(result: RunResult, exc: BaseException) -> None:
    result.status = "failed"
    result.error = f"{type(exc).__name__}: {exc}"
    result.reason = result.error
    result.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@dataclass
class _Row:
    """One spec of the stack: its place in the unit, its per-run build and its state."""

    index: int
    built: Built
    active: bool = True
    last_val: float = math.nan


@dataclass
class _SchedulerGroup:
    """The rows that share one scheduler component."""

    scheduler: StackedScheduler
    positions: list[int]
    interval: str


def train_stack(
    specs: Sequence[RunSpec],
    device: str | torch.device = "cpu",
    registry: Registry | None = None,
    on_eval: UnitEval | None = None,
    *,
    eval_round: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Iterator[tuple[int, RunResult]]:
    """Train ``specs`` (all stackable, all with one :func:`stack_key`) as one stack on
    ``device``; yield ``(index in specs, result)`` as each row ends. Plugin exceptions fail only
    the rows they concern (see the module docstring). ``eval_round``: a context entered around
    each evaluation's calls of ``on_eval`` for all the rows (e.g. one lock for the writes they make)."""
    registry = registry or get_registry()
    device = torch.device(device)
    start = time.perf_counter()
    sid = stack_id(specs)
    results = [RunResult(spec=s, device=str(device), engine="stacked", stack=sid) for s in specs]

    def done(i: int) -> tuple[int, RunResult]:
        results[i].seconds = (time.perf_counter() - start) / len(specs)
        return i, results[i]

    rows: list[_Row] = []
    problems: dict = {}
    for i, spec in enumerate(specs):
        try:
            rows.append(_Row(i, build(spec, device, registry, problems)))
        except Exception as exc:  # this spec's factories: only this spec fails
            _fail(results[i], exc)
            yield done(i)
    if not rows:
        return
    trainer = _StackTrainer(rows, results, registry, device, on_eval, eval_round)
    try:
        trainer.assemble()
    except Exception as exc:  # a shared component's adapter: every row it serves fails
        for row in rows:
            if row.active:  # (a row a block's adapter failed already keeps its own error)
                _fail(results[row.index], exc)
            yield done(row.index)
        return
    yield from (done(i) for i in trainer.take_finished())
    try:
        for finished in trainer.train():
            yield from (done(i) for i in finished)
    except Exception as exc:  # a shared component raised while training: every live row fails
        for row in rows:
            if row.active:
                row.active = False
                _fail(results[row.index], exc)
        yield from (done(i) for i in trainer.take_finished(all_inactive=True))
        return
    yield from (done(i) for i in trainer.complete())


class _StackTrainer:
    """The stacked components of one stack and its training loop (see :func:`train_stack`)."""

    def __init__(self, rows: list[_Row], results: list[RunResult], registry: Registry, device: torch.device,
                 on_eval: UnitEval | None,
                 eval_round: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self.rows, self.results, self.registry, self.device, self.on_eval = rows, results, registry, device, on_eval
        self.eval_round = eval_round or contextlib.nullcontext
        self.finished: list[int] = []
        self.reported: set[int] = set()
        self.live_changed = True  # a row ended since the shedder last looked

    # -- assembly ---------------------------------------------------------------------------
    def _adapter(self, family: str) -> Callable[..., Any]:
        return self.registry.get(family, self.rows[0].built.ctx.spec.component(family)).stacked

    def assemble(self) -> None:
        rows, device = self.rows, self.device
        builts = [r.built for r in rows]
        stack = StackContext(device, [b.ctx.spec for b in builts], [b.ctx for b in builts])
        self.stack = stack
        self.problem = self._adapter("problem")([b.problem for b in builts], stack)
        stack.problem = self.problem
        self.sampler = None
        if builts[0].sampler is not None:
            self.sampler = self._adapter("sampler")([b.sampler for b in builts], stack)
        self.params = [p.detach().clone().to(device).requires_grad_(True) for p in self.problem.params]
        opt_blocks = self._blocks("optimizer", [b.optimizer for b in builts], stack)
        self.optimizer = opt_blocks[0][1] if len(opt_blocks) == 1 else BlockOptimizer(opt_blocks)
        avg_blocks = self._blocks("averager", [b.averager for b in builts], stack)
        self.averager = (avg_blocks[0][1] if len(avg_blocks) == 1
                         else BlockAverager(avg_blocks, self.params))
        self.no_average = self.averager.without if isinstance(self.averager, BlockAverager) else set()
        self.lr_host = [float(b.optimizer.param_groups[0]["lr"]) for b in builts]
        self.groups: list[_SchedulerGroup] = []
        by_name: dict[str, list[int]] = {}
        for pos, b in enumerate(builts):
            by_name.setdefault(b.ctx.spec.scheduler, []).append(pos)
        for name, positions in by_name.items():
            comp = self.registry.get("scheduler", name)
            try:
                sched = comp.stacked([builts[p].scheduler for p in positions], stack.subset(positions))
            except Exception as exc:  # this scheduler's adapter: only its rows fail
                for p in positions:
                    self._end(p, exc)
                continue
            self.groups.append(_SchedulerGroup(sched, positions, comp.interval or "epoch"))
        self._refresh_lr()

    def _blocks(self, family: str, objects: list[Any], stack: StackContext) -> list[tuple[slice, Any]]:
        """``(rows, stacked implementation)`` for each block of consecutive rows sharing a
        component of ``family``. One block is the whole stack, and its adapter's exception
        fails every row (the caller's); in a stack of several, it fails only its block's rows,
        which are then left as they are."""
        names = [r.built.ctx.spec.component(family) for r in self.rows]
        starts = [i for i in range(len(names)) if i == 0 or names[i] != names[i - 1]]
        if len(starts) == 1:
            return [(slice(0, len(names)), self.registry.get(family, names[0]).stacked(objects, stack))]
        blocks: list[tuple[slice, Any]] = []
        for start, stop in zip(starts, [*starts[1:], len(names)], strict=True):
            rows = slice(start, stop)
            try:
                impl = self.registry.get(family, names[start]).stacked(objects[rows], stack.subset(rows))
                if family == "averager" and impl is not None:
                    _check_block_rows(names[start], impl.params, stop - start)
            except Exception as exc:  # this component's adapter: only its rows fail
                for pos in range(start, stop):
                    self._end(pos, exc)
                impl = None
            blocks.append((rows, impl))
        return blocks

    # -- bookkeeping ------------------------------------------------------------------------
    def _end(self, pos: int, exc: BaseException | None = None) -> None:
        row = self.rows[pos]
        if not row.active:
            return
        row.active = False
        self.live_changed = True
        if exc is not None:
            _fail(self.results[row.index], exc)
        self.finished.append(row.index)

    def _fail_rows(self, failed: RowsFailed) -> None:
        """End the rows a component reported failed (positions in the stack); the others go on."""
        for pos, exc in failed.failures.items():
            self._end(pos, exc)

    def take_finished(self, all_inactive: bool = False) -> list[int]:
        if all_inactive:
            self.finished += [r.index for r in self.rows if not r.active and r.index not in self.finished]
        out = [i for i in self.finished if i not in self.reported]
        self.reported.update(out)
        self.finished = []
        return out

    def _refresh_lr(self) -> None:
        lr = list(self.lr_host)
        for g in self.groups:
            for pos, value in zip(g.positions, g.scheduler.lrs(), strict=True):
                lr[pos] = value
        self.lr_host = lr
        self.lr = torch.tensor(lr, dtype=torch.float32).to(self.device, non_blocking=True)
        self.lr64 = torch.tensor(lr, dtype=torch.float64).to(self.device, non_blocking=True)

    def _step_schedulers(self, interval: str) -> None:
        stepped = False
        for g in self.groups:
            if g.interval != interval:
                continue
            live = [j for j, pos in enumerate(g.positions) if self.rows[pos].active]
            if not live:
                continue
            stepped = True
            try:
                g.scheduler.step(live, [self.rows[g.positions[j]].last_val for j in live])
            except RowsFailed as failed:
                for j, exc in failed.failures.items():
                    self._end(g.positions[j], exc)
            except Exception as exc:  # the component itself: all its live rows fail
                for j in live:
                    self._end(g.positions[j], exc)
        if stepped:
            self._refresh_lr()

    def _final_params(self, pos: int) -> dict[str, dict[str, list]]:
        out = {"learned": _flat(self.problem.learned_params(self.params, pos))}
        if self.averager is not None and pos not in self.no_average:
            out["averaged"] = _flat(self.problem.learned_params(self.averager.params, pos))
        true = self.rows[pos].built.problem.true_params
        if true is not None:
            out["true"] = {k: v.reshape(-1).tolist() for k, v in true.items()}
        return out

    def complete(self) -> list[int]:
        """Mark the rows still live as completed, with their final parameters and metrics."""
        live = [pos for pos, row in enumerate(self.rows) if row.active]
        try:
            final = self._final_metrics() if live else []
        except Exception as exc:  # the problem's final_metrics, shared by every row: as the loop, they fail
            for pos in live:
                self._end(pos, exc)
            return self.take_finished()
        for pos in live:
            result = self.results[self.rows[pos].index]
            result.final_params = self._final_params(pos)
            result.final_metrics = final[pos]
            self._end(pos)
        return self.take_finished()

    @torch.no_grad()
    def _final_metrics(self) -> list[dict[str, float]]:
        """Each row's :meth:`~suite.stacked.StackedProblem.final_metrics` (and ``avg_`` ones of
        the averaged rows), in one host transfer."""
        problem, K = self.problem, len(self.rows)
        tables = dict(problem.final_metrics(self.params))
        if self.averager is not None:
            tables.update({f"avg_{k}": v for k, v in problem.final_metrics(self.averager.params).items()})
        if not tables:
            return [{} for _ in range(K)]
        names = list(tables)
        table = torch.stack([tables[n].detach().reshape(K).to(torch.float64) for n in names]).cpu().tolist()
        missing = {n: set(problem.missing.get(n.removeprefix("avg_"), ()))
                   | (self.no_average if n.startswith("avg_") else set()) for n in names}
        return [{n: table[j][pos] for j, n in enumerate(names) if pos not in missing[n]} for pos in range(K)]

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, step: int, loss_sum: torch.Tensor | None, count: int) -> list[dict[str, float]]:
        problem, K = self.problem, len(self.rows)
        names: list[str] = []
        values: list[torch.Tensor] = []

        def add(name: str, v: torch.Tensor) -> None:
            names.append(name)
            values.append(v.detach().reshape(K).to(torch.float64))

        if loss_sum is not None:
            add("train_loss", loss_sum)
        add("val_loss", problem.val_loss(self.params))
        d = problem.dist_to_opt(self.params)
        if d is not None:
            add("dist_to_opt", d)
        for name, v in problem.model_metrics(self.params).items():
            add(name, v)
        if self.averager is not None:
            add("avg_val_loss", problem.val_loss(self.averager.params))
            d = problem.dist_to_opt(self.averager.params)
            if d is not None:
                add("avg_dist_to_opt", d)
            for name, v in problem.model_metrics(self.averager.params).items():
                add(f"avg_{name}", v)
        for name, v in problem.extra_metrics(self.params, step).items():
            add(name, v)
        table = torch.stack(values).cpu().tolist()  # the one host transfer of an evaluation
        missing = dict(problem.missing)
        missing.update({f"avg_{k}": v for k, v in problem.missing.items()})
        if self.no_average:  # rows of a mixed stack without an average log no averaged metric
            for name in names:
                if name.startswith("avg_"):
                    missing[name] = set(missing.get(name, ())) | self.no_average
        epoch = step / self.rows[0].built.ctx.steps_per_epoch
        out = []
        for pos in range(K):
            m: dict[str, float] = {}
            for j, name in enumerate(names):
                v = table[j][pos]
                if name == "train_loss":
                    v /= count
                    if math.isnan(v):
                        continue
                if pos in missing.get(name, ()):
                    continue
                m[name] = v
                if name == "val_loss":
                    m["lr"] = self.lr_used[pos]
                    m["epoch"] = epoch
            out.append(m)
        return out

    def _report(self, step: int, loss_sum: torch.Tensor | None, count: int) -> None:
        trained = self.clock.lap()
        interrupted()  # a safe point for a stop signal: between two evaluations
        metrics = self._evaluate(step, loss_sum, count)
        with self.eval_round():
            for pos, row in enumerate(self.rows):
                if not row.active:
                    continue
                result, m = self.results[row.index], metrics[pos]
                result.history.append((step, m))
                result.clock.append((step, trained))
                try:
                    if self.on_eval is not None:
                        self.on_eval(row.index, step, m)
                except StopRun as stop:
                    result.status, result.reason = "stopped", stop.reason
                    self._end(pos)
                    continue
                except Exception as exc:  # the caller's callback: as the loop, the run fails
                    self._end(pos, exc)
                    continue
                reason = divergence(result.spec, result.history)
                if reason:
                    result.status, result.reason = "diverged", reason
                    result.final_params = self._final_params(pos)
                    self._end(pos)
                else:
                    row.last_val = m["val_loss"]
        self.clock.resume()

    # -- training ---------------------------------------------------------------------------
    def _batches(self) -> Iterator[torch.Tensor]:
        if self.sampler is not None:
            yield from self.sampler.epoch()
            return
        ctx = self.rows[0].built.ctx
        dummy = torch.arange(ctx.batch_size, device=self.device).expand(len(self.rows), -1)
        for _ in range(ctx.steps_per_epoch):
            yield dummy

    def _live(self) -> bool:
        return any(r.active for r in self.rows)

    def _report_and_reset(self, step: int, loss_sum: torch.Tensor, count: int) -> Generator[list[int], None, bool]:
        """An evaluation inside the loop: report it, yield the rows that ended, and zero the
        training-loss sum; return whether any row is still training (the caller resets its count)."""
        self._report(step, loss_sum, count)
        yield self.take_finished()
        if not self._live():
            return False
        loss_sum.zero_()
        return True

    def train(self) -> Iterator[list[int]]:
        """The loop; yields the rows that ended after each evaluation or scheduler step."""
        ctx = self.rows[0].built.ctx
        spec = ctx.spec
        total_steps, next_eval = ctx.total_steps, eval_schedule(spec)
        per_epoch = spec.eval_every is None and spec.eval_growth is None
        params, problem, optimizer, averager = self.params, self.problem, self.optimizer, self.averager
        self.lr_used = self.lr_host
        self.clock = TrainClock(self.device, 1 / len(self.rows))  # each row's share of the stack's time
        shed = Shedder(problem, len(self.rows), self.device)
        step = 0
        self._report(0, None, 1)
        yield self.take_finished()
        loss_sum = torch.zeros(len(self.rows), device=self.device)
        count = 0
        for _epoch in range(ctx.total_epochs):
            if not self._live():
                return
            for idx in self._batches():
                if self.live_changed:
                    shed.update([r.active for r in self.rows])
                    self.live_changed = False
                loss, grads = shed.loss_and_grads(problem, params, idx)
                self.lr_used = self.lr_host
                with torch.no_grad():
                    try:
                        optimizer.step(params, grads, self.lr)
                    except RowsFailed as failed:  # some rows' component (a block of a mixed stack)
                        self._fail_rows(failed)
                    if averager is not None:
                        try:
                            averager.update(params, step + 1)
                        except RowsFailed as failed:
                            self._fail_rows(failed)
                    problem.on_step(step + 1, self.lr64)
                self._step_schedulers("step")
                loss_sum += loss * idx.shape[1]
                count += idx.shape[1]
                step += 1
                if next_eval(step):
                    if not (yield from self._report_and_reset(step, loss_sum, count)):
                        return
                    count = 0
                if step >= total_steps:
                    break
            if per_epoch and count:
                if not (yield from self._report_and_reset(step, loss_sum, count)):
                    return
                count = 0
            self._step_schedulers("epoch")
            yield self.take_finished()
            if step >= total_steps:
                break
        if count:
            self._report(step, loss_sum, count)
            yield self.take_finished()


def _check_block_rows(name: str, params: Sequence[torch.Tensor], rows: int) -> None:
    """An averager serving a block of a mixed stack must hold that block's rows only."""
    for p in params:
        if p.shape[0] != rows:
            raise PluginContractError(
                f"averager {name!r}: its stacked adapter holds {p.shape[0]} rows where its block of the stack has "
                f"{rows}; take the starting point from stack.initial_params(), not stack.problem.params")


def _flat(params: dict[str, torch.Tensor]) -> dict[str, list]:
    return {k: v.reshape(-1).tolist() for k, v in params.items()}
