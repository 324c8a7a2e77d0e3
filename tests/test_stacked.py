"""The stacked engine: a spec trained in a stack gives the same run as alone through the loop.

Tolerances: every logged metric within 1e-4 relative (absolute 1e-6 near zero) for linreg,
logistic, mean and nqm; 1e-3 relative for mlp (``vmap``'s batched matrix products may sum in
another order, and a network amplifies such differences over training; measured: ~2e-7 here).
"""

from __future__ import annotations

import contextlib
import math
import types

import pytest
import torch

from suite import Param, hookimpl
from suite.engine.loop import StopRun, train
from suite.engine.units import plan_units, run_unit
from suite.errors import SpecError
from suite.registry import Registry, get_registry
from suite.specs.spec import resolve_spec
from suite.stacked import proxy_scheduler
from suite.tracking.tracker import Tracker
from suite.vocab import TAG_ENGINE, TAG_STACK

SMALL = {"problem.n": 200}


def spec(components=None, overrides=None, registry=None, **kw):
    kw.setdefault("batch_size", 16)
    if "steps" not in kw:
        kw.setdefault("epochs", 3)
    return resolve_spec(registry or get_registry(), components=components or {}, overrides=overrides or {}, **kw)


def assert_same_run(got, ref, rel=1e-4):
    assert got.status == ref.status, (got.status, got.reason, got.error, ref.status, ref.reason)
    assert [s for s, _ in got.history] == [s for s, _ in ref.history]
    for (step, a), (_, b) in zip(got.history, ref.history, strict=True):
        assert a.keys() == b.keys(), (step, sorted(a), sorted(b))
        for k in a:
            assert math.isclose(a[k], b[k], rel_tol=rel, abs_tol=1e-6), (got.spec.name, step, k, a[k], b[k])


def assert_stack_matches_loop(specs, rel=1e-4, registry=None):
    """Train ``specs`` as one stack; each row must equal the spec trained alone by the loop."""
    registry = registry or get_registry()
    assert plan_units(specs, registry) == [list(range(len(specs)))]
    results = dict(run_unit(specs, "cpu", registry, engine="stacked"))
    assert sorted(results) == list(range(len(specs)))
    stacks = {r.stack for r in results.values()}
    assert len(stacks) == 1 and None not in stacks
    for i, s in enumerate(specs):
        assert results[i].engine == "stacked"
        ref = train(s, "cpu", registry)
        assert ref.status == "completed" or ref.status == results[i].status
        assert_same_run(results[i], ref, rel)
        assert results[i].final_params.keys() == ref.final_params.keys()
    return results


# -- equivalence, family by family -------------------------------------------------------------
def test_linreg_sgd_momentum_and_seeds():
    assert_stack_matches_loop([spec(overrides={**SMALL, "optimizer.lr": lr, "optimizer.momentum": m}, seed=s)
                               for lr in (0.01, 0.1) for m in (0.0, 0.9) for s in (0, 1)])


def test_sgd_nesterov_and_weight_decay_mixed_in_one_stack():
    assert_stack_matches_loop([
        spec(overrides={**SMALL, "optimizer.lr": 0.05, "optimizer.momentum": m, "optimizer.nesterov": n,
                        "optimizer.weight_decay": wd}, seed=s)
        for m, n in ((0.9, True), (0.5, False), (0.0, False)) for wd in (0.0, 1e-2) for s in (0, 3)
    ])


def test_precond_power_momentum_weight_decay():
    assert_stack_matches_loop([
        spec({"optimizer": "precond"}, {**SMALL, "optimizer.lr": 0.05, "optimizer.p": p, "optimizer.momentum": m,
                                        "optimizer.weight_decay": wd}, seed=s)
        for p in (0.0, 0.5) for m in (0.0, 0.9) for wd in (0.0, 1e-2) for s in (0, 1)
    ])


SCHEDULES = [
    ("constant", [{}, {"scheduler.warmup_steps": 2}]),
    ("step", [{"scheduler.step_size": 1, "scheduler.gamma": 0.5}, {"scheduler.warmup_steps": 1}]),
    ("exponential", [{"scheduler.gamma": 0.8}, {"scheduler.warmup_steps": 1}]),
    ("inverse_time", [{}, {"scheduler.warmup_steps": 2}]),
    ("cosine", [{"scheduler.eta_min": 0.001}, {"scheduler.warmup_steps": 1}]),
    ("plateau", [{"scheduler.patience": 0, "scheduler.factor": 0.5},
                 {"scheduler.patience": 1, "scheduler.threshold": 0.5}]),
]


@pytest.mark.parametrize("scheduler,variants", SCHEDULES, ids=[s for s, _ in SCHEDULES])
def test_every_scheduler_with_warmup(scheduler, variants):
    results = assert_stack_matches_loop([
        spec({"scheduler": scheduler}, {**SMALL, **v, "optimizer.lr": lr}, seed=s, epochs=5)
        for v in variants for lr in (0.01, 0.1) for s in (0, 1)
    ])
    lrs = {m["lr"] for r in results.values() for _, m in r.history}
    assert len(lrs) > (2 if scheduler != "constant" else 1)  # the schedule (or warm-up) moved the lr


def test_plateau_decays_on_its_own_rows_loss():
    results = assert_stack_matches_loop([
        spec({"scheduler": "plateau"}, {**SMALL, "scheduler.patience": 0, "scheduler.threshold": t,
                                        "optimizer.lr": 0.05}, seed=0, epochs=6)
        for t in (0.0, 0.9)
    ])
    final_lrs = [r.history[-1][1]["lr"] for r in results.values()]
    assert final_lrs[0] != final_lrs[1]  # same data, different thresholds: different decays


def test_different_schedulers_share_a_stack():
    assert_stack_matches_loop([spec({"scheduler": s}, SMALL, seed=1, epochs=4)
                               for s in ("constant", "cosine", "plateau", "step")])


@pytest.mark.parametrize("averager,variants", [
    ("ema", [{"averager.decay": 0.9}, {"averager.decay": 0.99}]),
    ("swa", [{"averager.start": 0.0}, {"averager.start": 0.5}]),
])
def test_averagers(averager, variants):
    results = assert_stack_matches_loop([spec({"averager": averager}, {**SMALL, **v, "optimizer.momentum": 0.9}, seed=s)
                                         for v in variants for s in (0, 1)])
    assert all("avg_val_loss" in m and "avg_dist_to_opt" in m for r in results.values() for _, m in r.history)


def test_optimizers_and_averagers_of_every_kind_share_one_stack():
    """The lecture's comparisons at one batch size (optimizer × averager) train as one stack:
    its rows are ordered by component, each block is updated by its own component's stacked
    implementation, and every row is the run its spec gives alone; averaged metrics and
    parameters only where there is an average."""
    hyper = {**SMALL, "optimizer.lr": 0.05, "optimizer.momentum": 0.9}
    specs = [spec({"optimizer": opt, "averager": avg}, {**hyper, **extra}, seed=s)
             for opt, extra in (("precond", {"optimizer.p": 0.5}), ("sgd", {})) for avg in ("ema", "none", "swa")
             for s in (0, 1)]
    results = assert_stack_matches_loop(specs)
    for i, s in enumerate(specs):
        averaged = s.averager != "none"
        assert all(("avg_val_loss" in m) == averaged for _, m in results[i].history)
        assert ("averaged" in results[i].final_params) == averaged


@pytest.mark.parametrize("sampler", ["shuffle", "replacement", "full"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_samplers(sampler, drop_last):
    assert_stack_matches_loop([spec({"sampler": sampler}, {"problem.n": 190, "sampler.drop_last": drop_last}, seed=s)
                               for s in (0, 1, 2)])


def test_eval_every_and_step_budget():
    assert_stack_matches_loop([spec(overrides=SMALL, seed=s, eval_every=7, steps=40) for s in (0, 1)])


@pytest.mark.parametrize("eval_every", [None, 9])
def test_geometric_evaluation_schedule(eval_every):
    """eval_growth (steps-to-target's schedule): every step at first, then 5% apart, capped by eval_every."""
    results = assert_stack_matches_loop(
        [spec(overrides=SMALL, seed=s, eval_growth=0.05, eval_every=eval_every, steps=60) for s in (0, 1)])
    steps = [step for step, _ in results[0].history]
    assert steps[:21] == list(range(21)) and steps[-1] == 60 and len(steps) < 60


def test_logistic_with_val_acc():
    results = assert_stack_matches_loop([spec({"problem": "logistic"}, {"problem.n": 200, "optimizer.lr": lr}, seed=s)
                                         for lr in (0.1, 1.0) for s in (0, 1, 2)])
    assert all("val_acc" in m for r in results.values() for _, m in r.history)


def test_mean():
    assert_stack_matches_loop([spec({"problem": "mean"}, {"optimizer.lr": lr, "problem.d": 3}, seed=s)
                               for lr in (0.1, 0.5) for s in (0, 1)])


@pytest.mark.parametrize("averager", ["none", "ema", "swa"])
@pytest.mark.parametrize("optimizer,params", [
    ("sgd", {"optimizer.momentum": 0.9}),
    ("sgd", {"optimizer.nesterov": True, "optimizer.momentum": 0.5}),  # no theory for Nesterov
    ("precond", {"optimizer.p": 0.5, "optimizer.momentum": 0.5}),
])
def test_nqm_with_theory_risk(averager, optimizer, params):
    results = assert_stack_matches_loop([
        spec({"problem": "nqm", "averager": averager, "optimizer": optimizer}, {"optimizer.lr": lr, **params},
             seed=s, steps=60, batch_size=4)
        for lr in (0.1, 0.5) for s in (0, 1)
    ])
    has_theory = not params.get("optimizer.nesterov")
    assert all(("theory_risk" in m) == has_theory for r in results.values() for _, m in r.history)


def test_nqm_theory_in_a_stack_of_every_optimizer_and_averager():
    results = assert_stack_matches_loop([
        spec({"problem": "nqm", "averager": avg, "optimizer": opt}, {"optimizer.lr": 0.3, "optimizer.momentum": 0.5,
                                                                     **extra}, seed=s, steps=60, batch_size=4)
        for opt, extra in (("precond", {"optimizer.p": 0.5}), ("sgd", {})) for avg in ("ema", "none", "swa")
        for s in (0, 1)
    ])
    for r in results.values():
        assert all("theory_risk" in m and ("theory_avg_risk" in m) == (r.spec.averager != "none") for _, m in r.history)


def test_nqm_rows_with_and_without_theory_in_one_stack():
    assert_stack_matches_loop([
        spec({"problem": "nqm", "scheduler": "cosine"}, {"optimizer.lr": 0.3, "optimizer.nesterov": n,
                                                         "optimizer.momentum": 0.5}, seed=s, steps=50, eval_every=10)
        for n in (True, False) for s in (0, 1)
    ])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_mlp(task):
    assert_stack_matches_loop([spec({"problem": "mlp"}, {"problem.task": task, "problem.n": 300, "problem.width": 8,
                                                         "optimizer.lr": lr}, seed=s)
                               for lr in (0.05, 0.2) for s in (0, 1)], rel=1e-3)


# -- rows end on their own ---------------------------------------------------------------------
def test_a_diverging_row_is_frozen_and_the_others_go_on():
    specs = [spec(overrides={**SMALL, "optimizer.lr": lr}, seed=0, epochs=6) for lr in (0.05, 50.0, 0.1)]
    results = assert_stack_matches_loop(specs)
    assert [results[i].status for i in range(3)] == ["completed", "diverged", "completed"]
    assert results[1].history[-1][0] < results[0].history[-1][0]
    assert results[1].final_params["learned"]  # recorded where it stopped, as the loop does


def test_stop_run_from_on_eval_stops_only_its_row():
    specs = [spec(overrides=SMALL, seed=s, epochs=4) for s in (0, 1)]

    def on_eval(i, step, metrics):
        if i == 0 and step > 0:
            raise StopRun("pruned")

    results = dict(run_unit(specs, "cpu", get_registry(), on_eval))
    assert results[0].status == "stopped" and results[0].reason == "pruned"
    assert results[1].status == "completed"
    assert_same_run(results[1], train(specs[1], "cpu"))


def test_each_evaluation_of_the_rows_runs_inside_one_eval_round():
    """``eval_round`` (e.g. one journal lock for a population's reports) is entered once per
    evaluation, around the ``on_eval`` calls of every row still training, and left before training goes on."""
    specs = [spec(overrides=SMALL, seed=s, epochs=4) for s in (0, 1, 2)]
    inside, rounds, calls = [False], [], []

    @contextlib.contextmanager
    def eval_round():
        inside[0] = True
        rounds.append([])
        try:
            yield
        finally:
            inside[0] = False

    def on_eval(i, step, metrics):
        assert inside[0]
        rounds[-1].append((i, step))
        calls.append(i)
        if i == 1 and step > 0:
            raise StopRun("pruned")

    results = dict(run_unit(specs, "cpu", get_registry(), on_eval, eval_round=eval_round))
    steps = [s for s, _ in results[0].history]
    assert len(rounds) == len(steps) and len(calls) == sum(len(r.history) for r in results.values())
    for r, step in zip(rounds, steps, strict=True):
        assert {s for _, s in r} == {step}  # one evaluation step per round
    assert [i for i, _ in rounds[0]] == [0, 1, 2] and [i for i, _ in rounds[-1]] == [0, 2]  # row 1 stopped
    assert_same_run(results[0], train(specs[0], "cpu"))


def _plugin(**hooks):
    plugin = types.new_class("Plugin")()
    for name, fn in hooks.items():
        setattr(plugin, name, hookimpl(fn))
    return plugin


class FlakyLR(torch.optim.lr_scheduler.LRScheduler):
    """A constant lr whose ``fail_at``-th step raises (0: never)."""

    def __init__(self, optimizer, fail_at):
        self.fail_at = fail_at
        super().__init__(optimizer)

    def get_lr(self):
        if self.fail_at and self.last_epoch == self.fail_at:
            raise RuntimeError("flaky scheduler")
        return list(self.base_lrs)


def _test_registry():
    def schedulers(register):
        register(name="flaky", factory=lambda ctx, fail_at: FlakyLR(ctx.optimizer, fail_at), interval="epoch",
                 description="raises at a chosen epoch", params=[Param("fail_at", 0, low=0)], stacked=proxy_scheduler)

    def optimizers(register):
        def make(ctx, lr):
            if lr > 1:
                raise RuntimeError("refuses lr > 1")
            return torch.optim.SGD(ctx.model.parameters(), lr=lr)

        register(name="picky", factory=make, description="refuses lr > 1", params=[Param("lr", 0.01, low=0)],
                 stacked=lambda optimizers, stack: get_registry().get("optimizer", "sgd").stacked(optimizers, stack))
        register(name="unstacked", factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr),
                 description="SGD without a stacked implementation", params=[Param("lr", 0.01, low=0)])

        def brittle(optimizers, stack):
            raise RuntimeError("brittle stacked adapter")

        register(name="brittle", factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr),
                 description="SGD whose stacked adapter raises", params=[Param("lr", 0.01, low=0)], stacked=brittle)

        def stumbling(optimizers, stack):
            impl = get_registry().get("optimizer", "sgd").stacked(optimizers, stack)
            calls = []

            def step(params, grads, lr):
                calls.append(1)
                if len(calls) == 3:
                    raise RuntimeError("stumbled at step 3")
                type(impl).step(impl, params, grads, lr)

            impl.step = step
            return impl

        register(name="stumbling", factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr),
                 description="SGD whose stacked step raises at step 3", params=[Param("lr", 0.01, low=0)],
                 stacked=stumbling)

    def averagers(register):
        ema = get_registry().get("averager", "ema")

        def whole_stack(averagers, stack):  # the contract before stacks mixed averagers: every row's start
            impl = ema.stacked(averagers, stack)
            impl.params = [p.detach().clone() for p in stack.problem.params]
            return impl

        register(name="legacy", factory=ema.factory, description="EMA starting from every row of the stack",
                 params=list(ema.params), stacked=whole_stack)

        def fragile(averagers, stack):
            raise RuntimeError("fragile averager adapter")

        register(name="fragile", factory=ema.factory, description="EMA whose stacked adapter raises",
                 params=list(ema.params), stacked=fragile)

    return Registry.from_entry_points(extra_plugins=[
        (_plugin(suite_register_schedulers=schedulers, suite_register_optimizers=optimizers,
                 suite_register_averagers=averagers), "stack-test", "0.1")])


def test_an_exception_in_one_specs_component_fails_only_that_spec():
    reg = _test_registry()
    specs = [spec({"scheduler": "flaky", "optimizer": "picky"}, {**SMALL, "scheduler.fail_at": f, "optimizer.lr": lr},
                  registry=reg, seed=0, epochs=4)
             for f, lr in ((0, 0.05), (2, 0.05), (0, 5.0), (0, 0.1))]
    results = dict(run_unit(specs, "cpu", reg, engine="stacked"))
    assert [results[i].status for i in range(4)] == ["completed", "failed", "failed", "completed"]
    assert "flaky scheduler" in results[1].error and "RuntimeError" in results[1].traceback
    assert "refuses lr > 1" in results[2].error
    for i in (0, 3):
        assert_same_run(results[i], train(specs[i], "cpu", reg))
    assert_same_run(results[1], train(specs[1], "cpu", reg))  # the loop fails it at the same point


def test_an_optimizers_adapter_failing_in_a_mixed_stack_fails_only_its_block():
    reg = _test_registry()
    specs = [spec({"optimizer": opt}, SMALL, registry=reg, seed=s) for opt in ("brittle", "sgd") for s in (0, 1)]
    assert plan_units(specs, reg) == [[0, 1, 2, 3]]
    results = dict(run_unit(specs, "cpu", reg, engine="stacked"))
    assert [results[i].status for i in range(4)] == ["failed", "failed", "completed", "completed"]
    assert "brittle stacked adapter" in results[0].error
    for i in (2, 3):
        assert_same_run(results[i], train(specs[i], "cpu", reg))


def test_an_optimizer_raising_mid_training_in_a_mixed_stack_fails_only_its_block():
    reg = _test_registry()
    specs = [spec({"optimizer": opt}, SMALL, registry=reg, seed=s) for opt in ("sgd", "stumbling") for s in (0, 1)]
    assert plan_units(specs, reg) == [[0, 1, 2, 3]]
    results = dict(run_unit(specs, "cpu", reg, engine="stacked"))
    assert [results[i].status for i in range(4)] == ["completed", "completed", "failed", "failed"]
    assert "stumbled at step 3" in results[2].error and "stumbled at step 3" in results[3].traceback
    for i in (0, 1):
        assert_same_run(results[i], train(specs[i], "cpu", reg))


def test_an_averager_holding_every_row_of_a_mixed_stack_fails_its_block_with_a_fix_it_message():
    reg = _test_registry()
    specs = [spec({"averager": avg}, SMALL, registry=reg, seed=s) for avg in ("legacy", "none") for s in (0, 1)]
    results = dict(run_unit(specs, "cpu", reg, engine="stacked"))
    assert [results[i].status for i in range(4)] == ["failed", "failed", "completed", "completed"]
    assert "stack.initial_params()" in results[0].error
    for i in (2, 3):
        assert_same_run(results[i], train(specs[i], "cpu", reg))
    alone = dict(run_unit(specs[:2], "cpu", reg, engine="stacked"))  # the whole stack: its rows are all there
    assert [alone[i].status for i in range(2)] == ["completed", "completed"]


def test_a_block_that_failed_first_keeps_its_own_error_when_a_shared_adapter_fails_later():
    reg = _test_registry()
    specs = [spec({"optimizer": opt, "averager": "fragile"}, SMALL, registry=reg, seed=0) for opt in ("brittle", "sgd")]
    results = dict(run_unit(specs, "cpu", reg, engine="stacked"))
    assert [results[i].status for i in range(2)] == ["failed", "failed"]
    assert "brittle stacked adapter" in results[0].error  # its own optimizer's, not the averager's
    assert "fragile averager adapter" in results[1].error


def test_a_component_without_stacked_implementation_runs_through_the_loop_in_the_same_unit_list():
    reg = _test_registry()
    specs = [spec(overrides=SMALL, registry=reg, seed=0), spec({"optimizer": "unstacked"}, SMALL, registry=reg, seed=0),
             spec(overrides=SMALL, registry=reg, seed=1)]
    for engine in ("auto", "stacked"):
        units = plan_units(specs, reg, engine=engine)
        assert units == [[0, 2], [1]]
    results = dict(run_unit(specs, "cpu", reg, engine="stacked"))
    assert [results[i].engine for i in range(3)] == ["stacked", "loop", "stacked"]
    assert results[1].stack is None and results[0].stack == results[2].stack
    assert_same_run(results[1], train(specs[1], "cpu", reg))


# -- planning ----------------------------------------------------------------------------------
def test_plan_units_groups_compatible_specs_and_caps_the_stack_size():
    specs = [spec(overrides=SMALL, seed=s, batch_size=b) for b in (8, 16) for s in range(5)]
    assert plan_units(specs, engine="loop") == [[i] for i in range(10)]
    assert plan_units(specs) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert plan_units(specs, stack_size=2) == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]
    with pytest.raises(SpecError, match="unknown engine"):
        plan_units(specs, engine="fast")
    mixed = [spec(overrides=SMALL), spec({"averager": "ema"}, SMALL), spec({"problem": "mean"}),
             spec({"scheduler": "cosine"}, SMALL), spec({"optimizer": "precond"}, SMALL)]
    # one stack per problem; its rows ordered by optimizer, then averager (ema < none), so that
    # each component updates a block of consecutive rows
    assert plan_units(mixed) == [[4, 1, 0, 3], [2]]


def test_a_single_spec_is_a_stack_of_one_on_a_device_string():
    s = spec(overrides=SMALL, seed=4)
    ((i, result),) = list(run_unit([s], "cpu:0"))
    assert i == 0 and result.engine == "stacked" and result.device == "cpu:0"
    assert_same_run(result, train(s, "cpu"))
    ((_, looped),) = list(run_unit([s], "cpu", engine="loop"))
    assert looped.engine == "loop" and looped.stack is None


def test_tracker_tags_the_engine_and_the_stack(tracking_uri, mlflow_client):
    specs = [spec(overrides=SMALL, seed=s, epochs=1) for s in (0, 1)]
    tracker = Tracker("stacked", tracking_uri)
    for _, result in run_unit(specs, "cpu"):
        run_id = tracker.start_run(result.spec, get_registry())
        tracker.finish(run_id, result)
        tags = mlflow_client.get_run(run_id).data.tags
        assert tags[TAG_ENGINE] == "stacked" and tags[TAG_STACK] == result.stack


def test_nqm_with_an_optimum_away_from_zero():
    """θ* ~ N(0, s²I): the stack matches the loop; the risk and the distance are measured from θ*; the
    closed form (the moments of θ − θ*) is logged without weight decay and, with it, not at all."""
    results = assert_stack_matches_loop([
        spec({"problem": "nqm"}, {"problem.dim": 20, "problem.optimum": 0.5, "optimizer.lr": 0.5,
                                  "optimizer.weight_decay": wd}, seed=s, steps=60, batch_size=4, eval_every=10)
        for wd in (0.0, 0.1) for s in (0, 1)
    ])
    centred = train(spec({"problem": "nqm"}, {"problem.dim": 20, "optimizer.lr": 0.5}, seed=0, steps=60,
                         batch_size=4, eval_every=10), "cpu")
    for r in results.values():
        start = r.history[0][1]
        assert start["val_loss"] != centred.history[0][1]["val_loss"]  # the same θ0, another optimum
        if r.spec.param("optimizer.weight_decay") == 0.0:
            assert start["theory_risk"] == pytest.approx(start["val_loss"], rel=1e-6)  # E[risk | θ0] at step 0
        else:
            assert all("theory_risk" not in m for _, m in r.history)


@pytest.mark.parametrize("optimum", ["0", "0.1"])
def test_the_nqm_stacks_closed_form_gradient_is_autograds_exactly(optimum):
    """The NQM stack's loss and gradient h(θ − θ*) + ε, in closed form, are bitwise those autograd
    gives for its ``batch_loss`` on the same noise draws, centred (θ* = 0) or not."""
    from suite.builtin.stacked_problems import nqm_stack
    from suite.engine.loop import build
    from suite.stacked import StackContext, StackedProblem

    def stack():  # a fresh build: every row's generator at its start
        builts = [build(resolve_spec(get_registry(), components={"problem": "nqm"},
                                     overrides={"problem.dim": "20", "problem.optimum": optimum}, seed=seed,
                                     batch_size=8, steps=3)) for seed in (0, 1, 2)]
        ctx = StackContext(torch.device("cpu"), [b.ctx.spec for b in builts], [b.ctx for b in builts])
        return nqm_stack([b.problem for b in builts], ctx)

    closed, auto = stack(), stack()
    assert closed.centred == (optimum == "0")
    theta = closed.params[0] + torch.linspace(-1, 1, closed.params[0].numel()).view_as(closed.params[0])
    indices = torch.zeros(3, 8, dtype=torch.long)
    scale = closed.noise_scale
    for _ in range(3):  # successive draws of each row's generator
        # the noise: what each row's generator gives randn, as the run alone draws it (nqm.NQMProblem)
        copies = [torch.Generator().set_state(g.get_state()) for g in closed.generators]
        drawn = torch.stack([torch.randn(closed.h.shape, generator=g, dtype=torch.float64) for g in copies])
        loss, (grad,) = closed.loss_and_grads([theta.clone().requires_grad_()], indices)
        ref_loss, (ref_grad,) = StackedProblem.loss_and_grads(auto, [theta.clone().requires_grad_()], indices)
        assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad)
        assert not grad.requires_grad and not loss.requires_grad
        assert all(torch.equal(c.get_state(), g.get_state()) for c, g in zip(copies, closed.generators, strict=True))
        expected = 0.5 * (closed.h * (theta if closed.centred else theta - closed.star) ** 2).sum(-1) + (
            (drawn * scale).float() * theta).sum(-1)
        assert torch.equal(loss, expected)


def test_a_diverging_nqm_stack_says_so_without_numpy_warnings():
    """A stack whose rows at an lr far past the stable edge diverge while another row trains on: the
    diverged rows' closed-form moments go on overflowing to inf and nan, as the loop's losses would,
    without a RuntimeWarning on the user's screen."""
    import warnings

    specs = [resolve_spec(get_registry(), components={"problem": "nqm", "optimizer": "sgd", "averager": averager},
                          overrides={"problem.dim": "10", "optimizer.lr": lr, "optimizer.momentum": "0.9"},
                          seed=seed, batch_size=8, steps=1000, eval_every=20)
             for seed, averager, lr in ((0, "none", "50"), (1, "ema", "50"), (2, "ema", "0.01"))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        results = dict(run_unit(specs, "cpu", get_registry(), engine="stacked"))
    assert [results[i].status for i in range(3)] == ["diverged", "diverged", "completed"], \
        [r.reason or r.error for r in results.values()]
    assert all(r.engine == "stacked" for r in results.values())
