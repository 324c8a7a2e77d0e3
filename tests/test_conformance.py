"""The conformance kit, run as plugin authors run it: `pytest --suite-plugin=DIST`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import pip_install_target, run_pytest, suite_cmd, write_plugin_package

pytestmark = pytest.mark.slow

BROKEN = '''
import torch
from suite import Param, Space, hookimpl


class NaNStep(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.fill_(float("nan"))


class DoubledLR:
    """A stacked optimizer that steps with twice its rows' learning rates."""

    def __init__(self, inner):
        self.inner = inner

    def step(self, params, grads, lr):
        self.inner.step(params, grads, 2 * lr)


def wrong_stack(optimizers, stack):
    from suite.builtin.stacked_components import sgd_stack
    return DoubledLR(sgd_stack(optimizers, stack))


@hookimpl
def suite_register_optimizers(register):
    register(name="wrongstack", factory=lambda ctx: torch.optim.SGD(ctx.model.parameters(), lr=0.01),
             description="its stacked implementation doubles the lr", stacked=wrong_stack)
    register(name="wrongtype", factory=lambda ctx, lr: {"lr": lr}, description="returns a dict",
             params=[Param("lr", 0.1, low=0, low_inclusive=False)])
    register(name="nanstep", factory=lambda ctx: NaNStep(ctx.model.parameters(), lr=0.1),
             description="turns every weight into NaN")
    register(name="baddefault",
             factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr),
             description="default outside its space",
             params=[Param("lr", 5.0, low=0, low_inclusive=False, space=Space.log(1e-4, 1.0))])
    register(name="unseeded",
             factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr * float(torch.rand(()) + 0.5)),
             description="draws its lr from global state", params=[Param("lr", 0.01, low=0, low_inclusive=False)])
'''


def test_builtins_and_both_plugin_packages_pass_the_kit(tmp_path):
    res = run_pytest("--suite-plugin=sgd-suite", "--suite-plugin=suite-adaptive", "--suite-plugin=suite_realdata",
                     cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert " passed" in res.stdout and "failed" not in res.stdout
    # every component of the three distributions was checked
    listed = json.loads(suite_cmd("list", "--format", "json").stdout)
    mine = [d for d in listed if d["distribution"] in ("sgd-suite", "suite-adaptive", "suite-realdata")]
    res = run_pytest("--suite-plugin=sgd-suite", "--suite-plugin=suite-adaptive", "--suite-plugin=suite-realdata",
                     "--collect-only", cwd=tmp_path)
    for d in mine:
        assert f"test_factory_builds_torch_type[{d['family']}:{d['name']}]" in res.stdout


def test_a_broken_plugin_fails_the_kit_saying_what_to_fix(tmp_path):
    env = pip_install_target(write_plugin_package(tmp_path / "src", "suite-broken", "suite_broken", BROKEN),
                             tmp_path / "site")
    res = run_pytest("--suite-plugin=suite-broken", "-rf", env=env, cwd=tmp_path)
    out = res.stdout
    assert res.returncode == 1, out
    assert ("optimizer 'wrongtype' (suite-broken): suite run would refuse it: returned dict; "
            "an optimizer factory must return a torch.optim.Optimizer") in out
    assert "optimizer 'nanstep' (suite-broken): produced a non-finite or exploding loss" in out
    assert ("optimizer 'baddefault' (suite-broken): default lr=5.0 lies outside its search space "
            "log[0.0001, 1]; move the default into the space or widen the space") in out
    assert "optimizer 'unseeded' (suite-broken): two runs with the same seed differ" in out
    assert "optimizer 'wrongstack' (suite-broken): stacked implementation differs from the per-run one" in out
    assert "test_stacked_matches_per_run[optimizer:unseeded] SKIPPED" not in out  # skips are not failures
    assert "empty parameter set" not in out  # the problem checks, which apply to none of its components
    assert "FAILED" in out and "test_registration_fields[optimizer:nanstep] " not in out.split("short test summary")[-1]


def test_unknown_distribution_is_a_usage_error(tmp_path):
    res = run_pytest("--suite-plugin=no-such-dist", cwd=tmp_path)
    assert res.returncode != 0
    assert "no components registered by that distribution" in res.stdout + res.stderr


def test_a_plugin_whose_import_fails_is_listed_as_broken_and_the_rest_works(tmp_path, workdir):
    code = "import numpy_but_misspelt_dependency\n"
    env = pip_install_target(write_plugin_package(tmp_path / "src", "suite-crash", "suite_crash", code),
                             tmp_path / "site")
    listed = suite_cmd("list", env=env)
    assert listed.returncode == 0
    assert "broken plugin suite_crash (suite-crash): ModuleNotFoundError: No module named " \
           "'numpy_but_misspelt_dependency'" in listed.stderr
    data = json.loads(suite_cmd("list", "--format", "json", env=env).stdout)
    assert {"family": "broken", "name": "suite_crash", "distribution": "suite-crash"}.items() <= \
        next(d for d in data if d["family"] == "broken").items()
    assert suite_cmd("run", "--epochs", "1", "--quiet", env=env, cwd=workdir).returncode == 0


CONTRACT_BREAKER = '''
import torch
from torch.utils.data import RandomSampler
from suite import Param, hookimpl


def make_ints(ctx):
    return RandomSampler(range(ctx.n), generator=ctx.generator)


def make_mismatch(ctx, lr):
    return torch.optim.SGD(ctx.model.parameters(), lr=lr)


@hookimpl
def suite_register_samplers(register):
    register(name="ints", factory=make_ints, description="yields single indices")


@hookimpl
def suite_register_optimizers(register):
    register(name="mismatch", factory=make_mismatch, description="declares rate, takes lr",
             params=[Param("rate", 0.1, low=0, low_inclusive=False)])
    register(name="adam", factory=make_mismatch, description="a second adam", params=[Param("lr", 0.1)])


def suite_register_schedulers(register):
    register(name="forgotten", factory=lambda ctx: None, description="no hookimpl", interval="step")
'''


def test_every_contract_violation_is_one_fix_it_message_and_a_refused_run(tmp_path, workdir):
    env = pip_install_target(
        write_plugin_package(tmp_path / "src", "suite-breaker", "suite_breaker", CONTRACT_BREAKER), tmp_path / "site")
    # -rN: no short summary, whose lines repeat a message or not depending on the terminal width
    out = run_pytest("--suite-plugin=suite-breaker", "-rN", env=env, cwd=tmp_path).stdout
    ints = ("sampler 'ints' (suite-breaker): suite run would refuse it: yields single indices")
    assert ints in out and "Traceback" not in out and "During handling" not in out
    assert out.count("its factory(ctx, lr) does not match its declared hyperparameters (rate)") == 4  # 4 checks
    assert out.count("suite_register_schedulers has no @hookimpl, so it registers nothing") == 1
    assert out.count("optimizer 'adam' is registered twice: by suite-adaptive and by suite-breaker") == 1

    refused = suite_cmd("run", "--sampler", "ints", "--epochs", "1", env=env, cwd=workdir)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("Error: sampler 'ints' from suite-breaker: yields single indices")
    assert not (workdir / "mlflow.db").exists()  # refused before anything was logged

    listed = suite_cmd("list", env=env, cwd=workdir)
    assert listed.returncode == 0 and "sgd" in listed.stdout
    assert "conflict: optimizer 'adam' is registered twice: by suite-adaptive and by suite-breaker" in listed.stderr
    assert "has no @hookimpl" in listed.stderr
    clash = suite_cmd("run", "--optimizer", "adam", "--epochs", "1", env=env, cwd=workdir)
    assert clash.returncode == 2 and "registered twice: by suite-adaptive and by suite-breaker" in clash.stderr
    assert suite_cmd("run", "--epochs", "1", "--quiet", env=env, cwd=workdir).returncode == 0


WRONG_STACKS = '''
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from suite import Param, Space, hookimpl
from suite.stacked import StackedAverager, StackedOptimizer, per_row


class RowZeroSGD(StackedOptimizer):
    """Mutant: every row steps with row 0's lr, momentum and weight decay."""

    def __init__(self, optimizers, stack):
        group = optimizers[0].param_groups[0]
        self.lr, self.momentum, self.decay = group["lr"], group["momentum"], group["weight_decay"]
        self.buffers = None

    def step(self, params, grads, lr):
        first = self.buffers is None
        self.buffers = self.buffers or []
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + self.decay * p
            if first:
                self.buffers.append(g.clone())
            else:
                self.buffers[i].mul_(self.momentum).add_(g)
            p.sub_(self.lr * self.buffers[i])


class EMA(StackedAverager):
    """An EMA of the iterates; ``decay`` is a K-vector, or (mutant) row 0's value for every row."""

    def __init__(self, stack, decay):
        self.params = [p.detach().clone() for p in stack.initial_params()]
        self.rate = 1 - decay

    def update(self, params, step):
        for avg, p in zip(self.params, params):
            avg.lerp_(p.detach(), 1.0 if step == 1 else per_row(self.rate, avg) if torch.is_tensor(self.rate)
                      else self.rate)


def row_zero_ema(averagers, stack):
    return EMA(stack, stack.specs[0].params_of("averager")["decay"])


def per_row_ema(averagers, stack):
    return EMA(stack, stack.hyper("averager", "decay"))


def make_sgd(ctx, lr, momentum, weight_decay):
    return torch.optim.SGD(ctx.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_ema(ctx, decay):
    return AveragedModel(ctx.model, multi_avg_fn=get_ema_multi_avg_fn(decay))


DECAY = [Param("decay", 0.9, low=0.0, high=1.0, high_inclusive=False, space=Space.uniform(0.5, 0.95))]


@hookimpl
def suite_register_optimizers(register):
    register(name="rowzero_sgd", factory=make_sgd, description="SGD whose stack broadcasts row 0's values",
             params=[Param("lr", 0.05, low=0.0, low_inclusive=False, space=Space.log(1e-3, 0.3)),
                     Param("momentum", 0.5, low=0.0, high=1.0, high_inclusive=False, space=Space.uniform(0.0, 0.9)),
                     Param("weight_decay", 0.01, low=0.0, space=Space.log(1e-3, 0.1))],
             stacked=RowZeroSGD)


@hookimpl
def suite_register_averagers(register):
    register(name="rowzero_ema", factory=make_ema, description="EMA whose stack uses row 0's decay",
             params=DECAY, stacked=row_zero_ema)
    register(name="per_row_ema", factory=make_ema, description="EMA with each row's own decay",
             params=DECAY, stacked=per_row_ema)
'''


def test_the_kit_fails_stacks_that_broadcast_one_rows_values_and_names_the_hyperparameter(tmp_path):
    """Mutation test of the kit's stacked check: an optimizer whose stack gives every row row 0's
    hyperparameters, and an averager whose stack uses row 0's decay, both fail it (each naming the
    hyperparameter and how to fix it); the same averager reading its rows' own decays passes."""
    env = pip_install_target(write_plugin_package(tmp_path / "src", "suite-wrongstacks", "suite_wrongstacks",
                                                  WRONG_STACKS), tmp_path / "site")
    res = run_pytest("--suite-plugin=suite-wrongstacks", "-k", "stacked", "-rN", env=env, cwd=tmp_path)
    out = res.stdout
    assert res.returncode == 1, out
    assert "2 failed, 1 passed" in out, out
    sgd = next(line for line in out.splitlines() if "optimizer 'rowzero_sgd' (suite-wrongstacks): stacked "
               "implementation differs from the per-run one" in line)
    assert "it trains as if optimizer.lr=" in sgd and "instead of its own" in sgd, sgd
    assert "read each row's own values, from stack.hyper(family, name)" in sgd
    ema = next(line for line in out.splitlines() if "averager 'rowzero_ema' (suite-wrongstacks): stacked "
               "implementation differs from the per-run one" in line)
    assert "it trains as if averager.decay=" in ema and "avg_val_loss" in ema, ema
    assert "the adapter gives one row's decay to every row" in ema


CLASH = '''
import torch
from suite import Param, hookimpl


@hookimpl
def suite_register_optimizers(register):
    register(name="adam", factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr),
             description="a second adam", params=[Param("lr", 0.1, low=0.0, low_inclusive=False)])
'''


def test_the_kit_names_a_conflict_with_both_distributions_and_a_broken_one_in_one_line(tmp_path):
    clash = pip_install_target(write_plugin_package(tmp_path / "src", "suite-clash", "suite_clash", CLASH),
                               tmp_path / "site")
    crash = pip_install_target(write_plugin_package(tmp_path / "src2", "suite-crash", "suite_crash",
                                                    "import no_such_dependency_here\n"), tmp_path / "site2")
    env = {"PYTHONPATH": f"{clash['PYTHONPATH']}:{crash['PYTHONPATH']}"}
    res = run_pytest("--suite-plugin=suite-clash", "--suite-plugin=suite-crash", "-rN", env=env, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert ("suite-clash: optimizer 'adam' is registered twice: by suite-adaptive and by suite-clash; uninstall one "
            "of them or rename the component") in out
    assert "suite-crash: plugin suite_crash: ModuleNotFoundError: No module named 'no_such_dependency_here'" in out
    assert "2 failed" in out and "no components registered" not in out
    assert "pluggy" not in out and "Traceback" not in out and "ERROR" not in out
    assert "skipped" not in out and "empty parameter set" not in out  # checks without a component are left out
