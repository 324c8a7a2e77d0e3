"""The stacked contract is documented (as test_hooks_documented checks the hooks): every name
suite.stacked exports and every method a plugin may override appears in docs/plugins.md §7, and
§7's averager example, as written, averages every row as its per-run form does."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest
import torch

import suite.stacked
from suite.stacked import StackContext

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def section_7() -> str:
    text = GUIDE.read_text()
    return text[text.index("## 7. Stacked implementations"):text.index("## 8. ")]


def overridable() -> list[tuple[str, str]]:
    """(class, member) for the public methods and properties of every class suite.stacked
    exports (its own, not inherited; ``__len__`` included), RowsFailed aside."""
    out = []
    for name in suite.stacked.__all__:
        cls = getattr(suite.stacked, name)
        if not inspect.isclass(cls) or issubclass(cls, Exception):
            continue
        for member, value in vars(cls).items():
            if (not member.startswith("_") or member == "__len__") and (callable(value) or isinstance(
                    value, property | staticmethod | classmethod)):
                out.append((name, member))
    return out


@pytest.mark.parametrize("name", suite.stacked.__all__)
def test_every_exported_name_is_documented_in_section_7(name):
    assert re.search(rf"\b{re.escape(name)}\b", section_7()), f"docs/plugins.md §7 must document {name}"


@pytest.mark.parametrize(("cls", "member"), overridable(), ids=[f"{c}.{m}" for c, m in overridable()])
def test_every_method_a_plugin_may_override_is_documented_in_section_7(cls, member):
    assert re.search(rf"`[^`]*\b{re.escape(member)}\b[^`]*`", section_7()), \
        f"docs/plugins.md §7 must say how {cls}.{member} is called"


def test_the_call_conventions_state_shapes_dtypes_and_counts():
    text = section_7()
    for fact in ("float32 unless `dtype` says otherwise", "`lr`: `[K]` **float64**", "`lr`: `[K]` **float32**",
                 "optimizer steps taken so far, this one included", "have no `__init__` to call",
                 "calls `super().__init__()`", "`[K, B]` int64 training indices", "It does not carry"):
        assert fact in text, fact


def averager_example() -> types.ModuleType:
    (code,) = re.findall(r"<!-- file: suite-averaging/suite_averaging.py -->\n```python\n(.*?)```", section_7(), re.S)
    module = types.ModuleType("suite_averaging")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    return module


def test_the_averager_example_as_written_averages_each_row_with_its_own_eta():
    example = averager_example()
    etas = [0.0, 1.0, 3.5, 9.0]
    g = torch.Generator().manual_seed(0)
    models = [torch.nn.Linear(3, 2) for _ in etas]
    per_run = [example.make_polyak(types.SimpleNamespace(model=m), eta) for m, eta in zip(models, etas, strict=True)]
    initial = [torch.stack([list(m.parameters())[i].detach() for m in models]) for i in range(2)]
    problem = types.SimpleNamespace(params=initial)
    stack = StackContext(torch.device("cpu"), specs=[types.SimpleNamespace(params_of=lambda f, e=e: {"eta": e})
                                                    for e in etas], ctxs=[None] * len(etas), problem=problem)
    stacked = example.polyak_stack(per_run, stack)
    for step in range(1, 21):
        with torch.no_grad():
            for m in models:
                for p in m.parameters():
                    p.add_(torch.randn(p.shape, generator=g))
        for avg, m in zip(per_run, models, strict=True):
            avg.update_parameters(m)
        stacked.update([torch.stack([list(m.parameters())[i].detach() for m in models]) for i in range(2)], step)
    for k, avg in enumerate(per_run):
        for mine, theirs in zip(stacked.params, avg.module.parameters(), strict=True):
            torch.testing.assert_close(mine[k], theirs.detach(), rtol=1e-5, atol=1e-6)
    uniform = stacked.params[0][0]  # eta = 0: the plain mean of the 20 iterates
    assert not torch.allclose(uniform, stacked.params[0][3])  # the rows' own etas made different averages
