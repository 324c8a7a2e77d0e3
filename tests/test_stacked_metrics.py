"""A problem's own metrics survive stacking: ``model_metrics`` (and their ``avg_`` twins) at every
evaluation and ``final_metrics`` at the end, through ``suite.stacked.module_stack``; and the
conformance kit says what to implement where a stacked problem drops one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from suite import Param, Problem, hookimpl
from suite.conformance import stacks
from suite.engine.loop import train
from suite.engine.units import run_unit
from suite.registry import Registry
from suite.specs.spec import resolve_spec
from suite.stacked import ModuleStack, module_stack
from suite.tuning.objective import Objective


class Regression(Problem):
    """Least squares whose runs log a mean absolute error besides the loss."""

    def __init__(self, seed: int, n: int) -> None:
        g = torch.Generator().manual_seed(1234)  # one data set for every run seed
        X = torch.randn(n + 40, 3, generator=g)
        y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n + 40, 1, generator=g)
        torch.manual_seed(seed)
        super().__init__(nn.Linear(3, 1), nn.MSELoss(), train=(X[:n], y[:n]), val=(X[n:n + 20], y[n:n + 20]))
        self.X_test, self.y_test = X[n + 20:], y[n + 20:]

    @torch.no_grad()
    def model_metrics(self, model: nn.Module) -> dict[str, float]:
        return {"val_mae": float((model(self.X_val) - self.y_val).abs().mean())}

    @torch.no_grad()
    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        return {"test_mae": float((model(self.X_test) - self.y_test).abs().mean())}


class UnreadableTest(Regression):
    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        raise RuntimeError("the test split is unreadable")


class ForgetfulStack(ModuleStack):
    """A stacked problem of one's own that does not return the model's metrics (the old behaviour)."""

    def model_metrics(self, params):
        return {}


class Plugin:
    @hookimpl
    def suite_register_problems(self, register):
        params = [Param("n", 80, "training examples", low=20)]
        register(name="maereg", factory=lambda ctx, n: Regression(ctx.seed, n), params=params,
                 description="least squares logging val_mae and test_mae", stacked=module_stack)
        register(name="forgetful", factory=lambda ctx, n: Regression(ctx.seed, n), params=params,
                 description="its stacked implementation drops val_mae",
                 stacked=lambda problems, stack: ForgetfulStack(problems, stack))
        register(name="unreadable", factory=lambda ctx, n: UnreadableTest(ctx.seed, n), params=params,
                 description="its final_metrics raises", stacked=module_stack)


@pytest.fixture(scope="module")
def registry():
    return Registry.from_entry_points(extra_plugins=[(Plugin(), "test-metrics", "0.1")])


def _specs(registry, problem):
    rows = [("sgd", "none", {"optimizer.lr": "0.05"}, 0), ("sgd", "ema", {"optimizer.lr": "0.1"}, 1),
            ("adam", "none", {"optimizer.lr": "0.02"}, 2), ("adam", "ema", {"optimizer.lr": "0.01"}, 0)]
    return [resolve_spec(registry, components={"problem": problem, "optimizer": opt, "averager": avg},
                         overrides=hp, batch_size=8, steps=12, eval_every=4, seed=seed)
            for opt, avg, hp, seed in rows]


def test_model_and_final_metrics_survive_stacking(registry):
    specs = _specs(registry, "maereg")
    stacked = dict(run_unit(specs, "cpu", registry, engine="stacked"))
    objective = Objective.parse("final:val_mae:min")
    for i, spec in enumerate(specs):
        got, ref = stacked[i], train(spec, "cpu", registry)
        assert got.engine == "stacked" and got.status == ref.status == "completed", got.error
        want = {"val_mae", "avg_val_mae"} if spec.averager == "ema" else {"val_mae"}
        assert want <= ref.final.keys() and not {"avg_val_mae"} - want & ref.final.keys()
        for (_, a), (_, b) in zip(got.history, ref.history, strict=True):
            assert a.keys() == b.keys()
            assert all(math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6) for k in a)
        assert got.final_metrics.keys() == ref.final_metrics.keys() == (
            {"test_mae", "avg_test_mae"} if spec.averager == "ema" else {"test_mae"})
        assert all(math.isclose(got.final_metrics[k], ref.final_metrics[k], rel_tol=1e-5)
                   for k in got.final_metrics)
        assert objective.value(got) == pytest.approx(objective.value(ref), rel=1e-5)


def test_the_kit_says_what_to_implement_for_a_dropped_metric(registry):
    specs = _specs(registry, "forgetful")[:1]
    stacked = dict(run_unit(specs, "cpu", registry, engine="stacked"))
    message = stacks.mismatch(stacked[0], train(specs[0], "cpu", registry))  # the kit's comparison of a row
    assert message.startswith("logs ['epoch', 'lr', 'val_loss'] at step 0, alone ['epoch', 'lr', 'val_loss', "
                              "'val_mae']; "), message
    assert "the stack does not log val_mae: return each from the problem's stacked implementation" in message
    assert "model_metrics(params)" in message and "final_metrics(params)" in message


def test_final_metrics_that_raise_fail_the_run_in_both_engines(registry):
    specs = _specs(registry, "unreadable")[:2]
    stacked = dict(run_unit(specs, "cpu", registry, engine="stacked"))
    for i, spec in enumerate(specs):
        for result in (stacked[i], train(spec, "cpu", registry)):
            assert result.status == "failed" and result.error == "RuntimeError: the test split is unreadable"
