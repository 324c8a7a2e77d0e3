"""Schedulers: each lr sequence against its formula, warm-up, plateau."""

from __future__ import annotations

import math

import pytest

from suite.registry import get_registry
from tests.builtin_helpers import built

LR0 = 0.1


def lr_sequence(name, params, epochs=12, metrics=None):
    """The lr of each epoch 0..epochs-1 as the engine steps the scheduler (once per epoch)."""
    b = built({"scheduler": name}, {"optimizer.lr": LR0, **{f"scheduler.{k}": v for k, v in params.items()}},
              epochs=epochs)
    out = []
    for k in range(epochs):
        out.append(b.optimizer.param_groups[0]["lr"])
        b.optimizer.step()  # no gradients: changes nothing, keeps torch's call order
        if metrics is None:
            b.scheduler.step()
        else:
            b.scheduler.step(metrics[k])
    return out


def assert_seq(got, want):
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_every_builtin_scheduler_states_its_interval():
    for comp in get_registry().components("scheduler"):
        if comp.distribution == "sgd-suite":
            assert comp.interval == "epoch", comp.name


def test_constant():
    assert_seq(lr_sequence("constant", {}), [LR0] * 12)


def test_step_decay():
    assert_seq(lr_sequence("step", {"step_size": 3, "gamma": 0.5}), [LR0 * 0.5 ** (k // 3) for k in range(12)])


def test_step_decay_defaults_to_a_third_of_the_run():
    assert_seq(lr_sequence("step", {}, epochs=9), [LR0 * 0.1 ** (k // 3) for k in range(9)])


def test_exponential_decay():
    assert_seq(lr_sequence("exponential", {"gamma": 0.9}), [LR0 * 0.9**k for k in range(12)])


def test_inverse_time_decay():
    assert_seq(lr_sequence("inverse_time", {"beta": 0.5}), [LR0 / (1 + 0.5 * k) for k in range(12)])


def cosine(k, T, lo=0.0):
    return lo + (LR0 - lo) * (1 + math.cos(math.pi * k / T)) / 2


def test_cosine_with_explicit_and_default_length():
    assert_seq(lr_sequence("cosine", {"T_max": 10, "eta_min": 0.01}, epochs=11),
               [cosine(k, 10, 0.01) for k in range(11)])
    assert_seq(lr_sequence("cosine", {}, epochs=12), [cosine(k, 12) for k in range(12)])


@pytest.mark.parametrize(
    "name, params, after",
    [
        ("constant", {}, lambda j: LR0),
        ("exponential", {"gamma": 0.9}, lambda j: LR0 * 0.9**j),
        ("step", {"step_size": 2, "gamma": 0.5}, lambda j: LR0 * 0.5 ** (j // 2)),
        ("inverse_time", {"beta": 1.0}, lambda j: LR0 / (1 + j)),
        ("cosine", {}, lambda j: cosine(j, 12 - 4)),  # default T_max: the run less the warm-up
    ],
)
def test_linear_warmup_then_the_schedule_from_its_start(name, params, after):
    w = 4
    got = lr_sequence(name, {**params, "warmup_steps": w}, epochs=12)
    want = [LR0 * (k + 1) / (w + 1) for k in range(w)] + [after(k - w) for k in range(w, 12)]
    assert_seq(got, want)


def test_plateau_lowers_the_lr_after_patience_epochs_without_improvement():
    improving = [1.0 / (k + 1) for k in range(8)]
    assert_seq(lr_sequence("plateau", {"patience": 2, "factor": 0.5}, epochs=8, metrics=improving), [LR0] * 8)
    # best at epoch 0, then flat: epochs 1 and 2 are tolerated, the 3rd bad epoch decays
    flat = [1.0] * 8
    got = lr_sequence("plateau", {"patience": 2, "factor": 0.5}, epochs=8, metrics=flat)
    assert_seq(got, [LR0] * 4 + [LR0 / 2] * 3 + [LR0 / 4])


def test_plateau_has_no_warmup():
    from suite.errors import UnknownParamError

    with pytest.raises(UnknownParamError, match="no hyperparameter 'warmup_steps'"):
        lr_sequence("plateau", {"warmup_steps": 2})


def test_engine_logs_the_scheduled_lr_once_per_epoch():
    from suite.engine.loop import train
    from tests.builtin_helpers import spec_of

    spec = spec_of({"problem": "mean", "scheduler": "cosine"},
                   {"optimizer.lr": LR0, "scheduler.warmup_steps": 2}, batch_size=250, epochs=6)
    result = train(spec)
    assert result.status == "completed"
    # logged before training, then at the end of each epoch e: the lr epoch e used
    logged = [m["lr"] for _, m in result.history]
    want = [LR0 / 3, LR0 / 3, 2 * LR0 / 3] + [cosine(j, 4) for j in range(4)]
    assert_seq(logged, want)
