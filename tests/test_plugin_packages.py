"""The two plugin packages in plugins/, installed editable by the Makefile."""

from __future__ import annotations

import pytest
import torch

from suite.engine.loop import build, train
from suite.registry import get_registry
from suite.specs.spec import resolve_spec


def _spec(**kw):
    args = dict(batch_size=16, epochs=2, seed=0)
    args.update(kw)
    return resolve_spec(get_registry(), **args)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("adagrad", torch.optim.Adagrad), ("rmsprop", torch.optim.RMSprop)])
def test_adaptive_optimizers_are_torchs_own(name, cls):
    comp = get_registry().get("optimizer", name)
    assert comp.distribution == "suite-adaptive"
    assert comp.param("lr").space.kind == "log"
    built = build(_spec(components={"optimizer": name}, overrides={"optimizer.lr": "0.02"}))
    assert type(built.optimizer) is cls and built.optimizer.param_groups[0]["lr"] == 0.02


def test_adam_weight_decay_is_l2_not_decoupled():
    """The lecture's caution: Adam's weight decay enters the gradient; AdamW's decays the weight."""
    assert "not decoupled" in get_registry().get("optimizer", "adam").description.replace("NOT", "not")
    w = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad = torch.tensor([0.0])
    adam = torch.optim.Adam([w], lr=0.1, weight_decay=0.5)
    adam.step()  # normalised step of the l2 gradient: moves by ~lr, not by lr*λ*w
    assert w.item() == pytest.approx(0.9, abs=1e-3)
    v = torch.nn.Parameter(torch.tensor([1.0]))
    v.grad = torch.tensor([0.0])
    built = build(_spec(components={"optimizer": "adamw"},
                        overrides={"optimizer.lr": "0.1", "optimizer.weight_decay": "0.5"}))
    torch.optim.AdamW([v], **{k: built.optimizer.defaults[k] for k in ("lr", "weight_decay", "betas", "eps")}).step()
    assert v.item() == pytest.approx(1 - 0.1 * 0.5)  # (1-αλ)w


@pytest.mark.parametrize("problem, n_features", [("breast_cancer", 30), ("digits", 64), ("diabetes", 10)])
def test_real_data_problems_are_standardised_with_a_fixed_split(problem, n_features):
    comp = get_registry().get("problem", problem)
    assert comp.distribution == "suite-realdata"
    a = build(_spec(components={"problem": problem}, seed=0)).problem
    b = build(_spec(components={"problem": problem}, seed=1)).problem
    assert a.X_train.shape[1] == n_features
    assert torch.equal(a.X_val, b.X_val)  # the split does not move with the run seed
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))  # the init does
    mean, std = a.X_train.mean(0), a.X_train.std(0)
    live = std > 0.5  # digits has constant border pixels, left at 0
    assert mean.abs().max() < 1e-4 and torch.allclose(std[live], torch.ones_like(std[live]), atol=1e-4)


def test_real_data_problems_learn():
    for problem, lr in (("breast_cancer", "0.1"), ("digits", "0.1"), ("diabetes", "0.05")):
        result = train(_spec(components={"problem": problem}, overrides={"optimizer.lr": lr}, epochs=3))
        first, last = result.history[0][1]["val_loss"], result.final["val_loss"]
        assert result.status == "completed" and last < 0.8 * first, (problem, first, last)
    diabetes = train(_spec(components={"problem": "diabetes"}, overrides={"optimizer.lr": "0.05"}, epochs=30))
    start, end = diabetes.history[0][1]["dist_to_opt"], diabetes.final["dist_to_opt"]
    assert end < start / 5  # it knows its least-squares optimum, and SGD approaches it
