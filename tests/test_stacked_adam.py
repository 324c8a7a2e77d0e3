"""suite-adaptive's stacked Adam (``adam``: ℓ2 weight decay; ``adamw``: decoupled): every row, with
its own lr, betas, eps and weight decay, equals ``torch.optim`` run alone; and the worked example
of docs/plugins.md §7 is that implementation, run as written."""

from __future__ import annotations

import math
import re
import types
from pathlib import Path

import pytest
import torch

from suite.engine.loop import train
from suite.engine.units import run_unit
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.stacked import StackContext

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "plugins" / "suite-adaptive" / "suite_adaptive" / "stacked.py"
PARAM_TOL = 1e-6  # relative (absolute 1e-7): stacked parameters against torch.optim's, after 25 steps
ROWS = [dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
        dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
        dict(lr=5e-3, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.3),
        dict(lr=1e-2, betas=(0.95, 0.9999), eps=1e-7, weight_decay=0.05)]


def guide_example() -> str:
    text = (ROOT / "docs" / "plugins.md").read_text()
    (code,) = re.findall(r"<!-- stacked example: suite_adaptive/stacked.py -->\n```python\n(.*?)```", text, re.S)
    return code


def test_the_guides_worked_example_is_the_plugins_stacked_adam():
    assert guide_example() == SOURCE.read_text()  # one stacked Adam, not two


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_the_worked_example_as_written_equals_torch_optim_row_by_row(cls):
    example = types.ModuleType("guide_example")
    exec(compile(guide_example(), "docs/plugins.md", "exec"), example.__dict__)
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (5,)]
    init = [[torch.randn(s, generator=g) for s in shapes] for _ in ROWS]
    alone = [[p.clone().requires_grad_(True) for p in row] for row in init]
    optimizers = [cls(ps, **hp) for ps, hp in zip(alone, ROWS, strict=True)]
    stacked = [torch.stack([row[i] for row in init]) for i in range(len(shapes))]
    stack = StackContext(torch.device("cpu"), specs=[None] * len(ROWS), ctxs=[None] * len(ROWS))
    adam = example.adam_stack(optimizers, stack)
    lr = torch.tensor([hp["lr"] for hp in ROWS], dtype=torch.float32)
    start = [s.clone() for s in stacked]
    for _ in range(25):
        grads = [torch.randn((len(ROWS), *s), generator=g) for s in shapes]
        for k, (ps, opt) in enumerate(zip(alone, optimizers, strict=True)):
            for p, grad in zip(ps, grads, strict=True):
                p.grad = grad[k].clone()
            opt.step()
        adam.step(stacked, grads, lr)
    for k, ps in enumerate(alone):
        for p, s in zip(ps, stacked, strict=True):
            torch.testing.assert_close(s[k], p.detach(), rtol=PARAM_TOL, atol=1e-7)
    for s, s0 in zip(stacked, start, strict=True):
        assert (s - s0).reshape(len(ROWS), -1).abs().amax(dim=1).min() > 1e-4  # every row took steps of its own


def test_stacked_rows_with_different_hyperparameters_each_equal_their_run_alone():
    """Through the engine, in a stack that mixes adam, adamw and sgd rows (blocks of a stack)."""
    rows = [("adam", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0), 0),
            ("adam", dict(lr=3e-2, beta1=0.7, beta2=0.99, eps=1e-6, weight_decay=1e-2), 1),
            ("adamw", dict(lr=2e-2, beta1=0.95, beta2=0.9, eps=1e-7, weight_decay=0.1), 0),
            ("adamw", dict(lr=5e-3, beta1=0.5, beta2=0.999, eps=1e-5, weight_decay=0.0), 2),
            ("sgd", dict(lr=0.05), 0)]
    registry = get_registry()
    specs = [resolve_spec(registry, components={"problem": "linreg", "optimizer": opt},
                          overrides={f"optimizer.{k}": str(v) for k, v in hp.items()},
                          batch_size=16, steps=30, eval_every=10, seed=seed) for opt, hp, seed in rows]
    stacked = dict(run_unit(specs, "cpu", registry, engine="stacked"))
    finals = set()
    for i, spec in enumerate(specs):
        got, ref = stacked[i], train(spec, "cpu")
        assert got.engine == "stacked" and got.status == ref.status == "completed", got.error
        for (_, a), (_, b) in zip(got.history, ref.history, strict=True):
            assert a.keys() == b.keys()
            assert all(math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6) for k in a), (spec.optimizer, a, b)
        finals.add(round(ref.final["val_loss"], 6))
    assert len(finals) == len(specs)  # the rows differ: a broadcast of one row's settings would not pass
