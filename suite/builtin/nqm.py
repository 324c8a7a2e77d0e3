"""The noisy quadratic model (``shared/reference/nqm.md``) and its theoretical risk.

:class:`NQMProblem` is a problem without a data set; :class:`NQMTheory` wires a
:class:`suite.theory.MomentTracker` to a run's optimizer and averager, so an ``nqm`` run logs
``theory_risk`` next to its measured risk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from suite import BuildContext, Problem
from suite.builtin.averager_factories import swa_start_step
from suite.builtin.optimizer_factories import DiagonalPreconditioned
from suite.context import derive_seed
from suite.theory import MomentTracker, best_steps_to_target


class NQMModel(nn.Module):
    """The NQM's parameters θ (one vector)."""

    def __init__(self, theta0: Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta0.clone())

    def forward(self, x: Tensor | None = None) -> Tensor:
        return self.theta


class NQMProblem(Problem):
    """The noisy quadratic model (``shared/reference/nqm.md``): L(θ) = ½ Σ h_i (θ_i − θ*_i)².

    A mini-batch of size B has gradient H(θ − θ*) + ε, ε_i ~ N(0, c_i / B), c = noise · h. The
    optimum θ* is 0 unless given (weight decay then pulls away from it). There is no data set
    (``n_train is None``): the engine feeds dummy index batches of size B. ``val_loss`` is the
    exact risk.
    """

    def __init__(self, h: Tensor, noise: float, theta0: Tensor, theta_star: Tensor | None = None) -> None:
        star = torch.zeros_like(h) if theta_star is None else theta_star.to(h.dtype)
        super().__init__(
            NQMModel(theta0), loss_fn=None,  # type: ignore[arg-type]
            curvature=[h], optimum=[star],
        )
        self.star_cpu = star.double()
        self.centred = theta_star is None or not bool(theta_star.any())  # θ* = 0: the closed forms apply as they are
        self.h_cpu = h.double()
        self.c_cpu = noise * self.h_cpu
        self.noise = noise
        self.theta0 = theta0.double()

    @property
    def h(self) -> Tensor:
        return self.curvature[0]

    def sgd_steps_to_target(self, batch_size: int, target: float) -> float | None:
        """The closed-form optimum of ``shared/reference/nqm.md`` (:func:`suite.theory.best_steps_to_target`)."""
        steps, _ = best_steps_to_target(self.h_cpu.numpy(), self.c_cpu.numpy(), batch_size, target)
        return steps

    def batch_loss(self, model: nn.Module, indices: Tensor, generator: torch.Generator | None) -> Tensor:
        """½Σhθ² + ε·θ with ε ~ N(0, c/B) drawn from ``generator``: its gradient is Hθ + ε, and
        its value is an unbiased estimate of the risk."""
        theta = model.theta
        batch = len(indices)
        eps = torch.randn(self.h_cpu.shape, generator=generator, dtype=torch.float64) * (self.c_cpu / batch).sqrt()
        eps = eps.to(device=theta.device, dtype=theta.dtype)
        if self.centred:
            return 0.5 * (self.h * theta**2).sum() + (eps * theta).sum()
        return 0.5 * (self.h * (theta - self.optimum[0]) ** 2).sum() + (eps * theta).sum()

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        if self.centred:
            return float(0.5 * (self.h * model.theta.double() ** 2).sum())
        return float(0.5 * (self.h.double() * (model.theta.double() - self.optimum[0].double()) ** 2).sum())

    def learned_params(self, model: nn.Module) -> dict[str, Tensor]:
        return {"theta": model.theta.detach().cpu()}

    # -- theory: follow E[risk | θ₀] for the lr each step actually used -----------------
    def _theory_for(self, ctx: Any) -> NQMTheory | None:
        """The run's theory, set up on first use (``None`` where the theory does not apply)."""
        if not hasattr(self, "_theory"):
            self._theory = NQMTheory.for_run(self, ctx)
        return self._theory

    def on_step(self, step: int, context: Any) -> None:
        theory = self._theory_for(context)
        if theory is not None:
            theory.step(step, context)

    def extra_metrics(self, model: nn.Module, step: int, context: Any) -> dict[str, float]:
        """``theory_risk`` (and ``theory_avg_risk`` for an EMA/SWA average): the risk the
        closed forms of :mod:`suite.theory` predict for this run's optimizer, lr sequence and
        averager, given its θ₀. Absent for an optimizer the theory does not cover."""
        theory = self._theory_for(context)
        return theory.metrics() if theory is not None else {}


class NQMTheory:
    """A :class:`suite.theory.MomentTracker` wired to one run's optimizer and averager."""

    def __init__(self, tracker: MomentTracker, optimizer: torch.optim.Optimizer, blend: Callable[[int], float]) -> None:
        self.tracker = tracker
        self.optimizer = optimizer
        self.blend = blend  # the average's γ_t at step t (1: not updated, 0: copied)

    @classmethod
    def for_run(cls, problem: NQMProblem, ctx: Any) -> NQMTheory | None:
        """The theory of a run of ``sgd`` (heavy-ball, no Nesterov) or ``precond``, with the
        ``none``, ``ema`` or ``swa`` averager, its moments those of θ − θ*; ``None`` for anything
        else, and for weight decay towards 0 with an optimum θ* ≠ 0 (that needs first moments)."""
        opt, spec = ctx.optimizer, ctx.spec
        if opt is None or spec is None:
            return None
        group = opt.param_groups[0]
        if not problem.centred and group["weight_decay"]:
            return None
        h = problem.h_cpu.numpy()
        if type(opt) is torch.optim.SGD:
            if group["nesterov"] or group["dampening"] or group.get("maximize"):
                return None
            scale: Any = 1.0
        elif isinstance(opt, DiagonalPreconditioned):
            scale = h ** -group["p"]
        else:
            return None
        averager, avg_params = spec.averager, spec.params_of("averager")
        if averager == "ema":
            decay = avg_params["decay"]
            blend: Callable[[int], float] = lambda t: 0.0 if t == 1 else decay  # noqa: E731
        elif averager == "swa":
            start = swa_start_step(avg_params["start"], ctx.total_steps)
            blend = lambda t: 1.0 if t <= start else (t - start - 1) / (t - start)  # noqa: E731
        else:
            blend = lambda t: 1.0  # noqa: E731
        tracker = MomentTracker(
            h, problem.c_cpu.numpy(), ctx.batch_size, (problem.theta0 - problem.star_cpu).numpy(),
            momentum=group["momentum"],
            weight_decay=group["weight_decay"], scale=scale, average=averager in ("ema", "swa"),
        )
        return cls(tracker, opt, blend)

    def step(self, step: int, ctx: Any) -> None:
        self.tracker.step(float(self.optimizer.param_groups[0]["lr"]), self.blend(step))

    def metrics(self) -> dict[str, float]:
        out = {"theory_risk": self.tracker.risk()}
        avg = self.tracker.average_risk()
        if avg is not None:
            out["theory_avg_risk"] = avg
        return out


def make_nqm(ctx: BuildContext, dim: int, noise: float, optimum: float = 0.0) -> NQMProblem:
    """The NQM with h_i = 1/i (i = 1..dim), C = noise · H, θ₀ ~ N(0, I) from the init seed and
    θ* ~ N(0, optimum² I) from the optimum seed (θ* = 0 when ``optimum`` is 0)."""
    from suite.builtin.sizes import check_fits

    check_fits("nqm", 16 * dim * 8, f"dim={dim}")  # a dozen float64 vectors of dim (h, C, θ, noise, ...)
    h = 1.0 / torch.arange(1, dim + 1, dtype=torch.float32)
    g = torch.Generator().manual_seed(derive_seed(ctx.seed, "init"))
    theta0 = torch.randn(dim, generator=g)
    star = None
    if optimum:
        star = optimum * torch.randn(dim, generator=torch.Generator().manual_seed(derive_seed(ctx.seed, "optimum")))
    return NQMProblem(h, noise, theta0, star)
