"""Every hook is documented and has a test (as datasette checks its own hooks)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from suite import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = list(hookspecs.FAMILIES.values())


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    spec = getattr(hookspecs, hook)
    assert inspect.getdoc(spec), f"{hook} needs a docstring in suite/hookspecs.py"
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{hook}(register)`" in guide, f"{hook} needs a section in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    here = Path(__file__).name
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != here]
    users = [p.name for p in tests if hook in p.read_text()]
    assert users, f"no test exercises {hook}"


def test_no_undocumented_hooks():
    declared = {name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("suite_")}
    assert declared == set(HOOKS)
