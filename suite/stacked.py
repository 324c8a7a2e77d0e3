"""The stacked contract: how a component trains K configurations at once as one batched model.

A component opts in by registering ``stacked=adapter``. The stacked engine first builds every
spec of a stack exactly as the per-run loop does (the same factories, so the same data,
initialisation and random generators), then hands each family's adapter the K per-run objects
and a :class:`StackContext`::

    adapter(objects: list, stack: StackContext) -> Stacked...

and trains what the adapters return. Tensors carry a leading dimension K (one row per spec);
hyperparameters are K-vectors (:meth:`StackContext.hyper`). Each family returns:

* problem: a :class:`StackedProblem` (:func:`module_stack` stacks any ``nn.Module`` problem
  that keeps :class:`suite.Problem`'s default loss and validation loss, with its
  ``model_metrics`` and ``final_metrics``);
* sampler: a :class:`StackedSampler` (:func:`sampler_stack` iterates the per-run samplers);
* optimizer: a :class:`StackedOptimizer`;
* scheduler: a :class:`StackedScheduler` (:class:`ProxyScheduler` steps the per-run torch
  schedulers, each over its own spec's optimizer used as a light proxy, and reads their lrs);
* averager: a :class:`StackedAverager`, or ``None`` for no averaging.

A stacked implementation must give each row the same numbers as the per-run one (the
conformance kit checks it). It must not synchronise with the host between evaluations (no
``.item()``, ``float()`` or ``.cpu()`` on device tensors in ``batch_loss``, ``step`` or
``update``). An adapter that can tell which rows an exception concerns raises
:class:`RowsFailed`; any other exception fails every row the component serves.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from suite.context import BuildContext
from suite.contract import split_batch
from suite.errors import PluginContractError, RowsFailed


@dataclass
class StackContext:
    """What a stacked adapter is given besides the per-run objects: one row per spec."""

    device: torch.device
    specs: list[Any]  # RunSpec per row
    ctxs: list[BuildContext]  # the per-run BuildContext of each row, as the loop filled it
    problem: StackedProblem | None = None  # set once the problem is stacked
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """K, the number of rows."""
        return len(self.specs)

    def hyper(self, family: str, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
        """The K-vector of hyperparameter ``family.name`` over the rows, on the stack's device."""
        return torch.tensor([s.params_of(family)[name] for s in self.specs], dtype=dtype, device=self.device)

    rows: slice | list[int] | None = None  # in a subset's context: which rows of the whole stack it holds

    def subset(self, rows: slice | Sequence[int]) -> StackContext:
        """The context of some rows: those sharing one scheduler component (any positions), or a
        block of consecutive rows sharing an optimizer or averager component (a slice; a stack
        may mix them, and the block's parameters are views of those rows)."""
        if isinstance(rows, slice):
            return StackContext(self.device, self.specs[rows], self.ctxs[rows], self.problem, self.extra, rows)
        rows = list(rows)
        return StackContext(self.device, [self.specs[r] for r in rows], [self.ctxs[r] for r in rows], self.problem,
                            self.extra, rows)

    def initial_params(self) -> list[Tensor]:
        """The stacked problem's initial parameters, ``[K, ...]``, of this context's rows."""
        params = self.problem.params
        return list(params) if self.rows is None else [p[self.rows] for p in params]

    def data_rows(self) -> tuple[list[int], Tensor]:
        """For problems whose data depends only on the problem's parameters and the seed:
        one representative row per distinct seed, and for every row the index of its data set."""
        index: dict[int, int] = {}
        reps: list[int] = []
        for r, spec in enumerate(self.specs):
            if spec.seed not in index:
                index[spec.seed] = len(reps)
                reps.append(r)
        return reps, torch.tensor([index[s.seed] for s in self.specs], dtype=torch.long, device=self.device)


def per_row(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a K-vector so it broadcasts over a ``[K, ...]`` tensor."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def stack_rows(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    """Stack per-row tensors along a new leading dimension on ``device``."""
    return torch.stack([t.detach().to(device) for t in tensors])


class StackedProblem:
    """K problems trained as one. ``params`` are the initial parameters, one ``[K, ...]`` tensor
    per parameter of the per-run model (in ``model.parameters()`` order), named ``names``.

    Metrics return K-vectors. ``missing`` maps a metric name to the rows that do not log it
    (e.g. ``dist_to_opt`` where a row's problem has no optimum).
    """

    params: list[Tensor]
    names: list[str]
    # True where :meth:`loss_and_grads` of a subset of the rows (their parameters and their
    # ``indices`` rows) equals those rows' losses and gradients in the whole stack: each row's depend
    # on its own parameters and examples alone (no per-row generator or state indexed by position).
    # The engine then trains only the rows still running once few are (suite.engine.shed).
    row_subsets: bool = False

    def __init__(self) -> None:
        self.missing: dict[str, set[int]] = {}

    def batch_loss(self, params: Sequence[Tensor], indices: Tensor) -> Tensor:
        """Each row's mean loss on its training examples ``indices[k]`` (``[K, B]``): a
        differentiable K-vector. Noise draws use the rows' own generators (``ctx.generator``)."""
        raise NotImplementedError

    def loss_and_grads(self, params: Sequence[Tensor], indices: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The K-vector :meth:`batch_loss` (detached) and each parameter's gradient of it (row k's
        gradient of row k's loss). Default: autograd; a problem may compute them in closed form."""
        loss = self.batch_loss(params, indices)
        grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
        return loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    def val_loss(self, params: Sequence[Tensor]) -> Tensor:
        """Each row's validation loss (a K-vector)."""
        raise NotImplementedError

    def dist_to_opt(self, params: Sequence[Tensor]) -> Tensor | None:
        """Each row's distance to its optimum, or ``None`` where no row knows one."""
        return None

    def model_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """Metrics of the stacked models ``params`` alone (K-vectors), as ``Problem.model_metrics``:
        the engine asks them for the parameters and for the averaged ones (``avg_`` prefix)."""
        return {}

    def extra_metrics(self, params: Sequence[Tensor], step: int) -> dict[str, Tensor]:
        """Problem-specific metrics at an evaluation (K-vectors), as ``Problem.extra_metrics``."""
        return {}

    def final_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """Metrics of the trained models ``params`` reported once, when the rows complete
        (K-vectors), as ``Problem.final_metrics`` (e.g. a held-out test split's loss); the engine
        asks them for the parameters and for the averaged ones (``avg_`` prefix)."""
        return {}

    def on_step(self, step: int, lr: Tensor) -> None:
        """After each optimizer step (and the averager's update): ``lr`` is the K-vector of the
        learning rates that step used (float64)."""

    def learned_params(self, params: Sequence[Tensor], row: int) -> dict[str, Tensor]:
        """Row ``row``'s parameters under the names of its ``true_params`` (for the summary)."""
        return {n: p[row].detach().cpu() for n, p in zip(self.names, params, strict=True)}


class StackedSampler:
    """K samplers: each epoch yields ``[K, B]`` index batches on the stack's device."""

    def __len__(self) -> int:
        raise NotImplementedError

    def epoch(self) -> Iterator[Tensor]:
        raise NotImplementedError


class StackedOptimizer:
    """K optimizers: updates ``params`` in place from ``grads`` with the lr K-vector ``lr``."""

    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor], lr: Tensor) -> None:
        raise NotImplementedError


class StackedScheduler:
    """The schedulers of some rows. ``lrs()`` gives their current learning rates (host floats:
    schedules run on the host, the engine copies them into the stack's lr vector); ``step``
    advances the rows ``rows`` (positions among this scheduler's rows), given each one's last
    validation loss (``val_losses``, aligned with ``rows``)."""

    def lrs(self) -> list[float]:
        raise NotImplementedError

    def step(self, rows: Sequence[int], val_losses: Sequence[float]) -> None:
        raise NotImplementedError


class StackedAverager:
    """K iterate averages: ``params`` (``[K, ...]`` tensors) updated after every optimizer step;
    ``step`` counts the optimizer steps taken so far."""

    params: list[Tensor]

    def update(self, params: Sequence[Tensor], step: int) -> None:
        raise NotImplementedError


def _each_block(blocks: list[tuple[slice, Any]], call: Callable[[slice, Any], None]) -> None:
    """``call(rows, impl)`` for every live block; a block that raises is dropped (its rows are no
    longer served) and its rows, or those its :class:`RowsFailed` names, are reported together
    in one :class:`RowsFailed` (positions in the whole stack) once every other block has run."""
    failures: dict[int, BaseException] = {}
    for b, (rows, impl) in enumerate(blocks):
        if impl is None:
            continue
        try:
            call(rows, impl)
        except RowsFailed as failed:
            failures.update({rows.start + j: exc for j, exc in failed.failures.items()})
        except Exception as exc:  # this component: every row of its block fails
            failures.update(dict.fromkeys(range(rows.start, rows.stop), exc))
            blocks[b] = (rows, None)
    if failures:
        raise RowsFailed(failures)


class BlockOptimizer(StackedOptimizer):
    """A stack whose rows use more than one optimizer component: each block of consecutive rows
    sharing one is updated by that component's stacked implementation, on views of its rows
    (``None``: a block whose component failed; its rows are no longer updated). An exception
    fails only its block's rows (:class:`RowsFailed`, positions in the whole stack)."""

    def __init__(self, blocks: Sequence[tuple[slice, StackedOptimizer | None]]) -> None:
        self.blocks = list(blocks)

    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor], lr: Tensor) -> None:
        _each_block(self.blocks, lambda rows, impl: impl.step([p[rows] for p in params], [g[rows] for g in grads],
                                                              lr[rows]))


class BlockAverager(StackedAverager):
    """A stack whose rows use more than one averager component, ``none`` included: each block
    of consecutive rows sharing one is averaged by that component's stacked implementation.
    ``params`` are ``[K, ...]``: a row without an average shows its current parameters, and
    ``without`` names those rows, whose averaged metrics are not logged. An exception fails only
    its block's rows, as in :class:`BlockOptimizer`."""

    def __init__(self, blocks: Sequence[tuple[slice, StackedAverager | None]], current: Sequence[Tensor]) -> None:
        self.blocks = list(blocks)
        self.current = list(current)
        self.without = {r for rows, impl in self.blocks if impl is None
                        for r in range(rows.start, rows.stop)}
        self._params: list[Tensor] | None = None  # assembled once per optimizer step at most

    def update(self, params: Sequence[Tensor], step: int) -> None:
        self._params = None  # the rows' parameters moved (this is called after every optimizer step)
        _each_block(self.blocks, lambda rows, impl: impl.update([p[rows] for p in params], step))

    @property
    def params(self) -> list[Tensor]:  # type: ignore[override]
        if self._params is None:
            self._params = [torch.cat([impl.params[i] if impl is not None else cur[rows].detach()
                                       for rows, impl in self.blocks]) for i, cur in enumerate(self.current)]
        return self._params


# -- generic adapters --------------------------------------------------------------------------
class ProxyScheduler(StackedScheduler):
    """Any torch scheduler, stacked: each row keeps its own scheduler over its own per-run
    optimizer, which the engine never steps and uses as a light proxy holding that row's lr.
    ``ReduceLROnPlateau`` gets its own row's validation loss. An exception fails only its row.
    Rows whose schedules cannot differ (same scheduler hyperparameters and initial lrs, not
    metric-driven) share one scheduler: it is stepped once for all of them."""

    def __init__(self, schedulers: Sequence[Any], stack: StackContext | None = None) -> None:
        self.schedulers = list(schedulers)
        self.optimizers = [s.optimizer for s in self.schedulers]
        for opt in self.optimizers:
            opt._opt_called = True  # the proxy is never stepped: no "scheduler before optimizer" warning
        self.leader = list(range(len(self.schedulers)))  # row -> the row whose scheduler it follows
        if stack is not None:
            first: dict[tuple, int] = {}
            for r, (sched, spec) in enumerate(zip(self.schedulers, stack.specs, strict=True)):
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    continue
                key = (type(sched), spec.scheduler, tuple(sorted(spec.params_of("scheduler").items())),
                       tuple(g["lr"] for g in sched.optimizer.param_groups),
                       tuple(g.get("initial_lr") for g in sched.optimizer.param_groups))
                self.leader[r] = first.setdefault(key, r)

    def lrs(self) -> list[float]:
        own = [float(opt.param_groups[0]["lr"]) for opt in self.optimizers]
        return [own[leader] for leader in self.leader]

    def step(self, rows: Sequence[int], val_losses: Sequence[float]) -> None:
        failures: dict[int, BaseException] = {}
        stepped: dict[int, BaseException | None] = {}
        for r, val in zip(rows, val_losses, strict=True):
            leader = self.leader[r]
            if leader not in stepped:
                sched = self.schedulers[leader]
                try:
                    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        sched.step(val)
                    else:
                        sched.step()
                    stepped[leader] = None
                except Exception as exc:  # a plugin's scheduler: isolate its rows
                    stepped[leader] = exc
            if stepped[leader] is not None:
                failures[r] = stepped[leader]
        if failures:
            raise RowsFailed(failures)


def proxy_scheduler(schedulers: Sequence[Any], stack: StackContext) -> ProxyScheduler:
    """The stacked adapter for any ``torch.optim.lr_scheduler`` scheduler (register it as
    ``stacked=suite.stacked.proxy_scheduler``)."""
    return ProxyScheduler(schedulers, stack)


class SamplerStack(StackedSampler):
    """Any index sampler, stacked: iterates each row's own sampler every epoch (the batches of
    all rows must have the same sizes, which holds for rows sharing ``n``, batch size and the
    sampler's parameters)."""

    def __init__(self, samplers: Sequence[Any], stack: StackContext) -> None:
        self.samplers = list(samplers)
        self.device = stack.device

    def __len__(self) -> int:
        return len(self.samplers[0])

    def epoch(self) -> Iterator[Tensor]:
        per_row = [list(s) for s in self.samplers]
        if per_row and per_row[0] and split_batch(per_row[0][0])[1] is not None:
            raise PluginContractError("a weighted sampler (batches of (indices, weights)) has no stacked "
                                      "implementation: register it without stacked=, so its runs train in the loop")
        for batches in zip(*per_row, strict=True):
            yield torch.tensor(batches, dtype=torch.long).to(self.device, non_blocking=True)


def sampler_stack(samplers: Sequence[Any], stack: StackContext) -> SamplerStack:
    """The stacked adapter for any sampler of index lists (``stacked=suite.stacked.sampler_stack``)."""
    return SamplerStack(samplers, stack)


class ModuleStack(StackedProblem):
    """Any finite problem that keeps :class:`suite.Problem`'s default ``batch_loss``,
    ``val_loss`` and ``dist_to_opt``, stacked with ``torch.func``: the K models' parameters
    are stacked (``stack_module_state``) and one ``vmap`` of ``functional_call`` runs all rows.
    Rows sharing a seed share their data set (all rows share one where ``data_follows_seed`` is
    false: a subclass for a problem whose data depend only on its parameters says so).

    The problem's ``model_metrics`` and ``final_metrics`` are carried: where its class overrides
    them, each row's parameters are loaded into that row's per-run model and its own method is
    called (:meth:`per_row_metrics`; a subclass overrides :meth:`model_metrics` or
    :meth:`final_metrics` with a vmapped computation where it has one)."""

    data_follows_seed = True

    def __init__(self, problems: Sequence[Any], stack: StackContext) -> None:
        super().__init__()
        from torch.func import functional_call, stack_module_state, vmap

        first = problems[0]
        device = stack.device
        self.device = device
        self.problems = list(problems)
        models = [p.model for p in problems]
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.params = [params[n].detach().to(device) for n in self.names]
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        if self.data_follows_seed:
            reps, self.data_row = stack.data_rows()
        else:
            reps, self.data_row = [0], torch.zeros(stack.size, dtype=torch.long, device=device)
        self.X = stack_rows([problems[r].X_train for r in reps], device)
        self.y = stack_rows([problems[r].y_train for r in reps], device)
        self.X_val = stack_rows([problems[r].X_val for r in reps], device)
        self.y_val = stack_rows([problems[r].y_val for r in reps], device)
        base = copy.deepcopy(first.model).to("meta")
        loss_fn = first.loss_fn

        def forward(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(base, (p, b), (x,))

        def row_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return loss_fn(forward(p, b, x), y)

        self._forward = vmap(forward)
        self._loss = vmap(row_loss)
        optima = [p.optimum for p in problems]
        self.missing["dist_to_opt"] = {r for r, o in enumerate(optima) if o is None}
        known = [o for o in optima if o is not None]
        self.optimum = None
        if known:
            fill = known[0]
            self.optimum = [stack_rows([(o or fill)[i] for o in optima], device) for i in range(len(fill))]

    def _pd(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        return dict(zip(self.names, params, strict=True))

    def outputs(self, params: Sequence[Tensor], X: Tensor) -> Tensor:
        """The K models' outputs on ``X`` (``[K, N, ...]``)."""
        return self._forward(self._pd(params), self.buffers, X)

    def loss_on(self, params: Sequence[Tensor], X: Tensor, y: Tensor) -> Tensor:
        """Each row's mean loss on its own examples ``X[k]``, ``y[k]`` (a K-vector)."""
        return self._loss(self._pd(params), self.buffers, X, y)

    def batch_loss(self, params: Sequence[Tensor], indices: Tensor) -> Tensor:
        rows = self.data_row[:, None]
        return self.loss_on(params, self.X[rows, indices], self.y[rows, indices])

    def val_loss(self, params: Sequence[Tensor]) -> Tensor:
        return self.loss_on(params, self.X_val[self.data_row], self.y_val[self.data_row])

    def dist_to_opt(self, params: Sequence[Tensor]) -> Tensor | None:
        if self.optimum is None:
            return None
        sq = sum(((p - o) ** 2).reshape(len(p), -1).sum(1).double() for p, o in zip(params, self.optimum, strict=True))
        return sq.sqrt()

    def model_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """The per-run problems' ``model_metrics``, row by row (:meth:`per_row_metrics`)."""
        return self.per_row_metrics("model_metrics", params)

    def final_metrics(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """The per-run problems' ``final_metrics``, row by row (:meth:`per_row_metrics`)."""
        return self.per_row_metrics("final_metrics", params)

    @torch.no_grad()
    def per_row_metrics(self, method: str, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """``problem.<method>(model)`` of each row's per-run problem, with the row's parameters
        loaded into its per-run model (in eval mode, as the loop evaluates), as K-vectors
        (float64). A metric some rows do not return is NaN there and listed in ``missing``.
        Nothing is evaluated where the problem's class keeps :class:`suite.Problem`'s method."""
        from suite.problem import Problem

        if all(getattr(type(p), method) is getattr(Problem, method) for p in self.problems):
            return {}
        rows: list[dict[str, float]] = []
        for r, problem in enumerate(self.problems):
            model = problem.model
            for p, stacked in zip(model.parameters(), params, strict=True):
                p.copy_(stacked[r])
            was_training = model.training
            model.eval()
            rows.append(dict(getattr(problem, method)(model)))
            model.train(was_training)
        names = list(dict.fromkeys(name for row in rows for name in row))
        out = {}
        for name in names:
            out[name] = torch.tensor([float(row.get(name, math.nan)) for row in rows], dtype=torch.float64,
                                     device=self.device)
            self.missing[name] = {r for r, row in enumerate(rows) if name not in row}
        return out

    def learned_params(self, params: Sequence[Tensor], row: int) -> dict[str, Tensor]:
        """Row ``row``'s parameters, named by its own problem's ``learned_params``."""
        return learned_through_model(self.problems[row], params, row)


def module_stack(problems: Sequence[Any], stack: StackContext) -> ModuleStack:
    """The stacked adapter for finite ``nn.Module`` problems using the default loss and
    validation loss (``stacked=suite.stacked.module_stack``); it carries the problem's
    ``model_metrics`` and ``final_metrics`` (see :class:`ModuleStack`)."""
    return ModuleStack(problems, stack)


def learned_through_model(problem: Any, params: Sequence[Tensor], row: int) -> dict[str, Tensor]:
    """Row ``row``'s parameters loaded into its per-run model, named by ``problem.learned_params``."""
    with torch.no_grad():
        for p, stacked in zip(problem.model.parameters(), params, strict=True):
            p.copy_(stacked[row])
    return problem.learned_params(problem.model)


__all__ = [
    "ModuleStack",
    "ProxyScheduler",
    "RowsFailed",
    "SamplerStack",
    "StackContext",
    "StackedAverager",
    "StackedOptimizer",
    "StackedProblem",
    "StackedSampler",
    "StackedScheduler",
    "learned_through_model",
    "module_stack",
    "per_row",
    "proxy_scheduler",
    "sampler_stack",
    "stack_rows",
]
