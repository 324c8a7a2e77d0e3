"""Each of the five hooks, implemented by a plugin object and driven through the real engine."""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import BatchSampler, SequentialSampler

from suite import Param, Problem, Space, hookimpl
from suite.engine.loop import train
from suite.registry import Registry
from suite.specs.spec import resolve_spec


def make_plugin():
    plugin = types.new_class("HookPlugin")()

    def suite_register_problems(register):
        def make(ctx, n):
            g = torch.Generator().manual_seed(ctx.seed)
            X = torch.randn(n, 2, generator=g)
            y = X @ torch.tensor([[1.0], [-2.0]])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                model = nn.Linear(2, 1, bias=False)
            return Problem(model, nn.MSELoss(), train=(X[:40], y[:40]), val=(X[40:], y[40:]),
                           optimum=[torch.tensor([[1.0, -2.0]])])
        register(name="hook_problem", factory=make, description="noiseless 2-d regression",
                 params=[Param("n", 50, low=41)])

    def suite_register_samplers(register):
        register(name="hook_sequential", description="batches in index order",
                 factory=lambda ctx: BatchSampler(SequentialSampler(range(ctx.n)), ctx.batch_size, False))

    def suite_register_optimizers(register):
        register(name="hook_gd", description="plain SGD",
                 factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr),
                 params=[Param("lr", 0.1, low=0, low_inclusive=False, space=Space.log(1e-3, 1.0))])

    def suite_register_schedulers(register):
        register(name="hook_halving", description="halve the lr every step", interval="step",
                 factory=lambda ctx: LambdaLR(ctx.optimizer, lambda k: 0.5**k))

    def suite_register_averagers(register):
        register(name="hook_mean", description="uniform average", factory=lambda ctx: AveragedModel(ctx.model))

    for fn in (suite_register_problems, suite_register_samplers, suite_register_optimizers,
               suite_register_schedulers, suite_register_averagers):
        setattr(plugin, fn.__name__, hookimpl(fn))
    return plugin


def test_every_hook_feeds_the_engine():
    reg = Registry.from_entry_points(extra_plugins=[(make_plugin(), "hook-dist", "9.9")])
    for family, name in [("problem", "hook_problem"), ("sampler", "hook_sequential"), ("optimizer", "hook_gd"),
                         ("scheduler", "hook_halving"), ("averager", "hook_mean")]:
        assert reg.get(family, name).distribution == "hook-dist"
    spec = resolve_spec(
        reg,
        components=dict(problem="hook_problem", sampler="hook_sequential", optimizer="hook_gd",
                        scheduler="hook_halving", averager="hook_mean"),
        batch_size=10, steps=3, eval_every=1,
    )
    result = train(spec, registry=reg)
    assert result.status == "completed", result.error
    lrs = [m["lr"] for _, m in result.history]
    assert lrs == [0.1, 0.1, 0.05, 0.025]  # lr of the step just taken; the scheduler steps after each step
    assert [s for s, _ in result.history] == [0, 1, 2, 3]
    assert "avg_val_loss" in result.final and "dist_to_opt" in result.final
    assert result.final["val_loss"] < result.history[0][1]["val_loss"]
