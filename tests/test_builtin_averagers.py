"""Averagers: the EMA blend and the SWA average, as the engine updates them."""

from __future__ import annotations

import pytest
import torch

from tests.builtin_helpers import built


def feed(b, values):
    """Set the model's w to each value in turn and update the averager as the engine does after
    each step; returns the average after each update."""
    w = b.problem.model.w
    out = []
    for v in values:
        with torch.no_grad():
            w.fill_(v)
        b.averager.update_parameters(b.problem.model)
        out.append(float(b.averager.module.w.detach()))
    return out


def averager(name, params, **kw):
    return built({"problem": "mean", "averager": name}, {f"averager.{k}": v for k, v in params.items()},
                 batch_size=2, **kw)


def test_ema_blend():
    # torch copies the first iterate, then w̃ ← γw̃ + (1−γ)w with γ = 0.9
    got = feed(averager("ema", {"decay": 0.9}), [2.0, 3.0, 4.0])
    assert got == pytest.approx([2.0, 0.9 * 2.0 + 0.1 * 3.0, 0.9 * 2.1 + 0.1 * 4.0])


def test_swa_is_the_uniform_average_from_its_start():
    # a run of 4 steps with start 0.5: the first 2 updates are skipped, then mean(w3, w4)
    b = averager("swa", {"start": 0.5}, steps=4)
    w0 = float(b.averager.module.w.detach())
    assert feed(b, [10.0, 20.0, 1.0, 2.0]) == pytest.approx([w0, w0, 1.0, 1.5])


def test_swa_from_zero_averages_every_iterate():
    assert feed(averager("swa", {"start": 0.0}, steps=4), [1.0, 2.0, 6.0, 3.0]) == pytest.approx([1, 1.5, 3, 3])
