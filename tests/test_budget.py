"""``steps:auto`` asks the problem what it knows (Problem.sgd_steps_to_target); it knows no problem's class."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from suite import Problem
from suite.errors import TuneError
from suite.registry import get_registry
from suite.tuning.budget import AUTO_EPOCHS, AUTO_FACTOR, AUTO_MIN_STEPS_DATA, Budget, auto_budget
from suite.tuning.objective import Objective

TARGET = Objective.parse("steps-to-target:0.1")


class Declares(Problem):
    """A plugin's problem with a closed form: SGD needs 400 / B steps (never, past B = 64)."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(1, 1), nn.MSELoss())

    def sgd_steps_to_target(self, batch_size: int, target: float) -> float | None:
        return 400.0 / batch_size if batch_size <= 64 else float("inf")


def registry_of(problem: Problem) -> SimpleNamespace:
    comp = SimpleNamespace(resolve=lambda params: params, build=lambda ctx, params: problem)
    return SimpleNamespace(get=lambda family, name: comp)


def test_a_problem_that_declares_the_closed_form_gets_a_budget_from_it():
    budget = auto_budget(registry_of(Declares()), {"problem": "mine"}, {}, 4, TARGET)
    assert budget == Budget("steps", AUTO_FACTOR * 100)


def test_a_target_no_lr_reaches_is_a_one_line_error():
    with pytest.raises(TuneError, match="cannot reach the target"):
        auto_budget(registry_of(Declares()), {"problem": "mine"}, {}, 128, TARGET)


def test_a_problem_without_a_closed_form_gets_epochs_of_its_data():
    data = Problem(nn.Linear(1, 1), nn.MSELoss(), train=(torch.zeros(1000, 1), torch.zeros(1000, 1)))
    steps = auto_budget(registry_of(data), {"problem": "data"}, {}, 10, TARGET)
    assert steps == Budget("steps", max(AUTO_MIN_STEPS_DATA, AUTO_EPOCHS * 100))


def test_the_nqm_declares_the_closed_form_optimum():
    from suite.theory import best_steps_to_target

    comp = get_registry().get("problem", "nqm")
    problem = comp.build(SimpleNamespace(seed=0, device=torch.device("cpu"), batch_size=8), comp.resolve({}))
    steps, _ = best_steps_to_target(problem.h_cpu.numpy(), problem.c_cpu.numpy(), 8, 0.1)
    assert problem.sgd_steps_to_target(8, 0.1) == steps and steps > 0
