"""The engine: builds a run's components from its RunSpec and trains, yielding metrics.

The engine knows neither MLflow nor Optuna. It reports each evaluation through a callback
(``on_eval(step, metrics)``; raising :class:`StopRun` from it stops the run, which is how a
pruner stops a trial) and returns a :class:`RunResult`. :func:`run_specs` is the boundary that
takes *several* specs, so a vectorised engine can replace the loop without touching dispatch
or tracking.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import Sampler

from suite.context import BuildContext, derive_seed, one_thread
from suite.contract import (
    article,
    batch_violation,
    first_batches,
    loss_violation,
    problem_violations,
    signature_violation,
    split_batch,
    where,
)
from suite.engine.lazy_dynamo import keep_dynamo_lazy
from suite.errors import PluginContractError, SpecError, StopRun, SuiteError
from suite.exec.signals import interrupted
from suite.problem import Problem
from suite.registry import FAMILIES, Registry, get_registry
from suite.specs.spec import NO_SAMPLER, RunSpec, check_representable

keep_dynamo_lazy()  # building torch.optim optimizers no longer imports torch._dynamo (seconds)

EvalCallback = Callable[[int, dict[str, float]], None]
NQM_DEFAULT_EVALS = 50  # evaluations over a run of a problem without epochs


@dataclass
class RunResult:
    """What a run produced. ``status`` is ``completed``, ``diverged``, ``stopped`` or ``failed``.

    ``engine`` is the engine that trained it (``loop`` or ``stacked``) and ``stack`` the id of
    the stack it was trained in (``None`` for the loop). A stacked run's ``seconds`` is its share
    of the stack's wall time (the stack's time until the run ended, divided by the stack size).
    ``clock`` holds, at each evaluated step, the seconds spent training so far, evaluations
    excluded (a stacked run's: its share of its stack's, likewise); it is logged as the metric
    ``train_seconds``, apart from ``history``, which is deterministic.
    """

    spec: RunSpec
    status: str = "completed"
    reason: str = ""
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    final_params: dict[str, dict[str, list]] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    device: str = "cpu"
    seconds: float = 0.0
    engine: str = "loop"
    stack: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    clock: list[tuple[int, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        """The last evaluation's metrics (empty if the run never evaluated)."""
        return self.history[-1][1] if self.history else {}


class TrainClock:
    """Wall-clock seconds spent training, evaluations excluded: :meth:`lap` as an evaluation
    starts, :meth:`resume` once it is done. ``share`` scales the time (a stack's rows: 1/K)."""

    def __init__(self, device: torch.device, share: float = 1.0) -> None:
        self.device, self.share, self.total = device, share, 0.0
        self.since = time.perf_counter()

    def lap(self) -> float:
        """The seconds trained so far (waiting for the device's queued work first)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.total += (time.perf_counter() - self.since) * self.share
        return self.total

    def resume(self) -> None:
        self.since = time.perf_counter()


@dataclass
class Built:
    """A run's components, built and ready to train."""

    ctx: BuildContext
    problem: Problem
    sampler: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scheduler_interval: str
    averager: torch.optim.swa_utils.AveragedModel | None


FACTORY_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "problem": ((Problem,), "a suite.Problem"),
    "sampler": ((Sampler,), "a torch.utils.data.Sampler of index lists"),
    "optimizer": ((torch.optim.Optimizer,), "a torch.optim.Optimizer"),
    "scheduler": ((LRScheduler, ReduceLROnPlateau), "a torch.optim.lr_scheduler.LRScheduler or ReduceLROnPlateau"),
    "averager": ((AveragedModel, type(None)), "a torch.optim.swa_utils.AveragedModel, or None"),
}


def check_factory_result(comp: Any, obj: Any) -> None:
    """Raise :class:`PluginContractError` unless ``obj`` is the torch type the family requires."""
    types, text = FACTORY_TYPES[comp.family]
    if not isinstance(obj, types):
        raise PluginContractError(
            f"{where(comp)} returned {type(obj).__name__}; {article(comp.family)} factory must return {text}"
        )


def build(spec: RunSpec, device: str | torch.device = "cpu", registry: Registry | None = None,
          problems: dict | None = None) -> Built:
    """Build every component of ``spec`` in order: problem, sampler, optimizer, scheduler,
    averager. Raises :class:`SuiteError` for a configuration that cannot work.

    ``problems`` (the stacked engine's) caches problems by problem, parameters and seed: specs
    that differ only in other components then share one problem object (a problem is a
    deterministic function of its parameters and seed; the stacked engine only reads it)."""
    registry = registry or get_registry()
    device = torch.device(device)
    data_seed = spec.params_of("problem").get("data_seed")
    ctx = BuildContext(seed=spec.seed, device=device, batch_size=spec.batch_size, spec=spec,
                       data_seed=spec.seed if data_seed is None else data_seed)

    def make(family: str) -> Any:
        comp = registry.get(family, spec.component(family))
        obj = comp.build(ctx, spec.params_of(family))
        check_factory_result(comp, obj)
        return comp, obj

    key = (spec.problem, tuple(sorted(spec.params_of("problem").items())), spec.seed)
    if problems is not None and key in problems:
        problem = problems[key]
    else:
        _, problem = make("problem")
        problem.to(device)
        if problems is not None:
            problems[key] = problem
    ctx.problem, ctx.model, ctx.n = problem, problem.model, problem.n_train
    ctx.generator = torch.Generator().manual_seed(derive_seed(spec.seed, "sampling"))

    if problem.n_train is None:
        if spec.sampler != NO_SAMPLER:
            raise PluginContractError(
                f"{where(registry.get('problem', spec.problem))} has no finite data set (train=None) but was given "
                f"sampler {spec.sampler!r}; register the problem with dataset=False so its runs take sampler "
                f"{NO_SAMPLER!r}"
            )
        if spec.steps is None:
            raise SpecError(f"problem {spec.problem!r} has no finite data set: give its budget in --steps")
        sampler = None
        ctx.steps_per_epoch = spec.eval_every or max(1, spec.steps // NQM_DEFAULT_EVALS)
    else:
        if spec.batch_size > problem.n_train:
            raise SpecError(
                f"--batch-size={spec.batch_size} is out of range: problem {spec.problem!r} has "
                f"{problem.n_train} training examples"
            )
        _, sampler = make("sampler")
        ctx.steps_per_epoch = len(sampler)
        if ctx.steps_per_epoch < 1:
            raise SpecError(f"sampler {spec.sampler!r} yields no batch of size {spec.batch_size}")
    ctx.total_steps = spec.steps if spec.steps is not None else spec.epochs * ctx.steps_per_epoch
    ctx.total_epochs = spec.epochs if spec.epochs is not None else math.ceil(ctx.total_steps / ctx.steps_per_epoch)

    _, optimizer = make("optimizer")
    ctx.optimizer = optimizer
    sched_comp, scheduler = make("scheduler")
    _, averager = make("averager")
    return Built(ctx, problem, sampler, optimizer, scheduler, sched_comp.interval or "epoch", averager)


def preflight(specs: Iterable[RunSpec], registry: Registry | None = None) -> set[str] | None:
    """Build each distinct configuration once on the CPU, so a configuration that cannot work
    (batch size larger than the data, a budget the problem cannot use, a factory that refuses
    its arguments) is reported before anything runs or is logged. Any other exception is a bug
    inside a plugin: it is left for the run itself to record (failed, with its traceback), so
    it does not stop the other runs of a grid.

    Returns the names of the metrics the runs log (each configuration evaluated once at its
    start), or None where a configuration could not be evaluated."""
    with one_thread():  # thousands of small builds: threads only wait for each other (suite.context.one_thread)
        return _preflight(specs, registry or get_registry())


def _preflight(specs: Iterable[RunSpec], registry: Registry) -> set[str] | None:
    seen: set[str] = set()
    metrics: set[str] | None = set()
    for spec in specs:
        key = spec.with_seed(0).hash
        if key in seen:
            continue
        seen.add(key)
        for family in FAMILIES:
            comp = registry.get(family, spec.component(family))
            wrong = signature_violation(comp)
            if wrong:
                raise PluginContractError(f"{where(comp)}: {wrong}")
        try:
            built = build(spec, "cpu", registry)
        except SuiteError:
            raise
        except (ValueError, TypeError) as exc:
            raise SpecError(f"run {spec.name} cannot be built: {exc}") from None
        except Exception:  # a bug inside a plugin: the run records it with its traceback, the grid goes on
            metrics = None
            continue
        for p in built.problem.model.parameters():  # the hyperparameters against the dtype they act on
            check_representable(spec, p.dtype)
            break
        try:
            check_built(built, registry)
            if metrics is not None:
                metrics |= logged_metrics(built)
        except SuiteError:
            raise
        except Exception:  # as above: the run itself records the plugin's exception
            metrics = None
            continue
    return metrics


def logged_metrics(built: Built) -> set[str]:
    """The names of the metrics a run of ``built`` logs (its first evaluation's, and what the
    tracker and steps-to-target add)."""
    from suite.engine.target import TARGET_METRICS

    names = set(_evaluate(built, 0, 0.0, 0.0))
    names |= {f"best_{k}" for k in ("val_loss", "avg_val_loss") if k in names}
    if built.ctx.spec.target is not None:
        names |= {name for name, _, _ in TARGET_METRICS}
    return names


def check_built(built: Built, registry: Registry) -> None:
    """Raise :class:`PluginContractError` (naming the component and its distribution) where a
    built run's problem or sampler breaks the contract (:mod:`suite.contract`)."""
    spec = built.ctx.spec
    problem_comp = registry.get("problem", spec.problem)
    wrong = problem_violations(built.problem)
    if wrong:
        raise PluginContractError(f"{where(problem_comp)}: {wrong[0]}")
    wrong_loss = loss_violation(built.problem, built.ctx.batch_size)
    if wrong_loss:
        raise PluginContractError(f"{where(problem_comp)}: {wrong_loss}")
    if built.sampler is not None:
        sampler_comp = registry.get("sampler", spec.sampler)
        for batch in first_batches(built.sampler):
            wrong_batch = batch_violation(batch, built.ctx.n)
            if wrong_batch:
                raise PluginContractError(f"{where(sampler_comp)}: {wrong_batch}")
            if split_batch(batch)[1] is not None and not takes_weights(built.problem):
                raise PluginContractError(
                    f"{where(sampler_comp)} yields weighted batches, but problem {spec.problem!r} overrides "
                    "batch_loss without example_losses: it cannot weight its examples"
                )


def takes_weights(problem: Problem) -> bool:
    """Whether a weighted sampler can feed ``problem``: it keeps the default loss of a batch or
    gives its own per-example losses."""
    cls = type(problem)
    return cls.batch_loss is Problem.batch_loss or cls.example_losses is not Problem.example_losses


@dataclass
class Batch:
    """One mini-batch: training-set indices and, from a weighted sampler, one weight per index."""

    indices: torch.Tensor
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.indices)


def batch_loss(problem: Problem, model: torch.nn.Module, batch: Batch, generator: torch.Generator | None
               ) -> torch.Tensor:
    """The loss a step minimises: the batch's mean loss, or for a weighted batch
    ``mean(w_i * loss_i)`` (with weights ``1 / (n p_i)`` an unbiased estimate of the training loss)."""
    if batch.weights is None:
        return problem.batch_loss(model, batch.indices, generator)
    losses = problem.example_losses(model, batch.indices, generator)
    return (batch.weights.to(losses.dtype) * losses).mean()


def batches(built: Built) -> Iterator[Batch]:
    """One epoch of batches (for a problem without data: ``steps_per_epoch`` dummies)."""
    device = built.ctx.device
    if built.sampler is None:
        dummy = Batch(torch.arange(built.ctx.batch_size, device=device))
        for _ in range(built.ctx.steps_per_epoch):
            yield dummy
        return
    for batch in built.sampler:
        indices, weights = split_batch(batch)
        yield Batch(torch.as_tensor(indices, dtype=torch.long, device=device),
                    None if weights is None else torch.as_tensor(weights, device=device))


def _evaluate(built: Built, step: int, train_loss: float, lr: float) -> dict[str, float]:
    """Metrics at ``step``; ``lr`` is the learning rate of the last step taken (the first step's at 0)."""
    problem, model = built.problem, built.problem.model
    model.eval()
    metrics: dict[str, float] = {}
    if not math.isnan(train_loss):
        metrics["train_loss"] = train_loss
    metrics["val_loss"] = problem.val_loss(model)
    metrics["lr"] = lr
    metrics["epoch"] = step / built.ctx.steps_per_epoch
    d = problem.dist_to_opt(model)
    if d is not None:
        metrics["dist_to_opt"] = d
    metrics.update(problem.model_metrics(model))
    if built.averager is not None:
        avg_model = built.averager.module
        avg_model.eval()
        metrics["avg_val_loss"] = problem.val_loss(avg_model)
        d = problem.dist_to_opt(avg_model)
        if d is not None:
            metrics["avg_dist_to_opt"] = d
        metrics.update({f"avg_{k}": v for k, v in problem.model_metrics(avg_model).items()})
    metrics.update(problem.extra_metrics(model, step, built.ctx))
    model.train()
    return metrics


@torch.no_grad()
def _final_metrics(built: Built) -> dict[str, float]:
    """The problem's ``final_metrics`` of the trained model (and ``avg_`` ones of the average)."""
    problem, model = built.problem, built.problem.model
    model.eval()
    out = dict(problem.final_metrics(model))
    if built.averager is not None:
        built.averager.module.eval()
        out.update({f"avg_{k}": v for k, v in problem.final_metrics(built.averager.module).items()})
    return out


def _param_dict(model: torch.nn.Module, problem: Problem) -> dict[str, list]:
    return {k: v.reshape(-1).tolist() for k, v in problem.learned_params(model).items()}


def train(
    spec: RunSpec,
    device: str | torch.device = "cpu",
    registry: Registry | None = None,
    on_eval: EvalCallback | None = None,
) -> RunResult:
    """Train one run. Exceptions raised by plugin code are caught and returned as a failed
    result with their traceback; :class:`StopRun` from ``on_eval`` ends the run as stopped."""
    result = RunResult(spec=spec, device=str(device))
    start = time.perf_counter()
    try:
        built = build(spec, device, registry)
        _train_loop(built, result, on_eval)
        problem = built.problem
        result.final_params["learned"] = _param_dict(problem.model, problem)
        if built.averager is not None:
            result.final_params["averaged"] = _param_dict(built.averager.module, problem)
        if problem.true_params is not None:
            result.final_params["true"] = {k: v.reshape(-1).tolist() for k, v in problem.true_params.items()}
        if result.status == "completed":
            result.final_metrics = _final_metrics(built)
    except StopRun as stop:
        result.status, result.reason = "stopped", stop.reason
    except Exception as exc:  # plugin code may raise anything; isolate it
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        result.reason = result.error
        result.traceback = traceback.format_exc()
    result.seconds = time.perf_counter() - start
    return result


def _train_loop(built: Built, result: RunResult, on_eval: EvalCallback | None) -> None:
    spec, ctx = result.spec, built.ctx
    problem, model, optimizer = built.problem, built.problem.model, built.optimizer
    total_steps = ctx.total_steps
    eval_every = spec.eval_every
    next_eval = eval_schedule(spec)

    lr_used = float(optimizer.param_groups[0]["lr"])
    clock = TrainClock(ctx.device)

    def report(step: int, train_loss: float) -> bool:
        result.clock.append((step, clock.lap()))
        interrupted()  # a safe point for a stop signal: between two evaluations
        metrics = _evaluate(built, step, train_loss, lr_used)
        result.history.append((step, metrics))
        if on_eval is not None:
            on_eval(step, metrics)
        reason = divergence(spec, result.history)
        if reason:
            result.status, result.reason = "diverged", reason
            return False
        clock.resume()
        return True

    step = 0
    model.train()
    if not report(0, float("nan")):
        return
    loss_sum = torch.zeros((), device=ctx.device)
    loss_count = 0
    last_val = result.history[-1][1]["val_loss"]
    for _epoch in range(ctx.total_epochs):
        for idx in batches(built):
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(problem, model, idx, ctx.generator)
            loss.backward()
            lr_used = float(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if built.averager is not None:
                built.averager.update_parameters(model)
            problem.on_step(step + 1, ctx)
            if built.scheduler_interval == "step":
                _step_scheduler(built.scheduler, last_val)
            loss_sum += loss.detach() * len(idx)
            loss_count += len(idx)
            step += 1
            if next_eval(step):
                if not report(step, float(loss_sum) / loss_count):
                    return
                last_val = result.history[-1][1]["val_loss"]
                loss_sum.zero_()
                loss_count = 0
            if step >= total_steps:
                break
        if eval_every is None and spec.eval_growth is None and loss_count:
            if not report(step, float(loss_sum) / loss_count):
                return
            last_val = result.history[-1][1]["val_loss"]
            loss_sum.zero_()
            loss_count = 0
        if built.scheduler_interval == "epoch":
            _step_scheduler(built.scheduler, last_val)
        if step >= total_steps:
            break
    if loss_count:  # a last partial evaluation window
        report(step, float(loss_sum) / loss_count)


def eval_schedule(spec: RunSpec) -> Callable[[int], bool]:
    """Whether to evaluate after ``step`` steps (besides epoch ends when neither ``eval_every``
    nor ``eval_growth`` is set): every ``eval_every`` steps, or on the geometric schedule of
    ``eval_growth`` (see :class:`RunSpec`)."""
    if spec.eval_growth is None:
        every = spec.eval_every
        return lambda step: every is not None and step % every == 0
    growth, cap, last = spec.eval_growth, spec.eval_every, [0]

    def due(step: int) -> bool:
        gap = max(1, math.floor(growth * last[0]))
        if step - last[0] < (gap if cap is None else min(gap, cap)):
            return False
        last[0] = step
        return True

    return due


def divergence(spec: RunSpec, history: Sequence[tuple[int, dict[str, float]]]) -> str | None:
    """Why a run with this evaluation ``history`` has diverged, or ``None``: a non-finite loss,
    or a validation loss past ``spec.diverge_factor`` times its start. (An ``on_eval`` callback
    can ask this before deciding anything else, e.g. a pruner.)"""
    step, metrics = history[-1]
    watched = [metrics["val_loss"]] + ([metrics["train_loss"]] if "train_loss" in metrics else [])
    if not all(math.isfinite(v) for v in watched):
        return f"non-finite loss at step {step}"
    start_loss = history[0][1]["val_loss"]
    if start_loss > 0 and metrics["val_loss"] > spec.diverge_factor * start_loss:
        return (f"val_loss {metrics['val_loss']:.3g} grew past {spec.diverge_factor:g}x its start "
                f"({start_loss:.3g}) at step {step}")
    return None


def _step_scheduler(scheduler: Any, val_loss: float) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def run_specs(
    specs: Sequence[RunSpec],
    device: str | torch.device = "cpu",
    registry: Registry | None = None,
    on_eval: Callable[[RunSpec, int, dict[str, float]], None] | None = None,
) -> Iterator[RunResult]:
    """Run several specs on one device, yielding each result as it finishes.

    This is the engine's boundary for dispatch: a vectorised engine that trains many specs in
    one pass can replace this function without changing its callers.
    """
    for spec in specs:
        cb = (lambda step, m, _s=spec: on_eval(_s, step, m)) if on_eval else None
        yield train(spec, device, registry, cb)
