"""The pluggy registry: loading, lookup errors, duplicate names, misspelt hooks."""

from __future__ import annotations

import types

import pytest

from suite import Param, hookimpl
from suite.errors import (
    DuplicateComponentError,
    UnknownComponentError,
    UnknownParamError,
)
from suite.registry import FAMILIES, Registry, get_registry


def _plugin(**hooks):
    """A plugin object (as a module would be) carrying the given hook implementations."""
    plugin = types.new_class("Plugin")()
    for name, fn in hooks.items():
        setattr(plugin, name, hookimpl(fn))
    return plugin


def test_builtins_arrive_through_the_entry_point_group():
    reg = get_registry()
    for family, name in [("problem", "linreg"), ("sampler", "shuffle"), ("optimizer", "sgd"),
                         ("scheduler", "constant"), ("scheduler", "cosine"), ("averager", "none"),
                         ("averager", "ema")]:
        comp = reg.get(family, name)
        assert comp.distribution == "sgd-suite"
        assert comp.description
    assert not reg.broken


def test_unknown_name_lists_known_and_closest_match():
    with pytest.raises(UnknownComponentError) as err:
        get_registry().get("optimizer", "sgdd")
    msg = str(err.value)
    assert "did you mean 'sgd'" in msg and "known optimizers:" in msg and "\n" not in msg
    assert isinstance(err.value, KeyError)


def test_unknown_param_names_the_component_and_its_params():
    with pytest.raises(UnknownParamError, match=r"optimizer 'sgd' has no hyperparameter 'lrr' \(did you mean 'lr'\?\)"):
        get_registry().get("optimizer", "sgd").resolve({"lrr": "0.1"})


def test_duplicate_name_names_both_distributions():
    def reg_a(register):
        register(name="twin", factory=lambda ctx: None, description="a")

    reg = Registry.from_entry_points(
        extra_plugins=[(_plugin(suite_register_averagers=reg_a), "pkg-a", "1"),
                       (_plugin(suite_register_averagers=reg_a), "pkg-b", "2")]
    )
    with pytest.raises(DuplicateComponentError, match="by pkg-a and by pkg-b"):
        reg.get("averager", "twin")
    assert "ema" in reg.names("averager")  # only the conflicting name fails


def test_misspelt_hook_is_caught_and_reported_as_broken():
    plugin = _plugin(suite_register_optimiser=lambda register: None)
    reg = Registry.from_entry_points(extra_plugins=[(plugin, "typo-pkg", "0.1")])
    broken = [b for b in reg.broken if b.distribution == "typo-pkg"]
    assert broken and "suite_register_optimiser" in broken[0].error
    assert "sgd" in reg.names("optimizer")  # the rest still works


def test_registration_is_validated():
    def bad(register):
        register(name="s", factory=lambda ctx: None, description="no interval")

    reg = Registry.from_entry_points(extra_plugins=[(_plugin(suite_register_schedulers=bad), "p", "1")])
    assert "s" not in reg.names("scheduler")
    assert any("schedulers must say interval='step' or interval='epoch'" in b.error for b in reg.broken)

    def bad_param(register):
        register(name="x", factory=lambda ctx: None, description="d", params=[("lr", 0.1)])

    reg = Registry.from_entry_points(extra_plugins=[(_plugin(suite_register_optimizers=bad_param), "p", "1")])
    assert "x" not in reg.names("optimizer")
    assert any("params must be suite.Param objects" in b.error for b in reg.broken)


def test_every_family_has_a_hook():
    reg = get_registry()
    for family in FAMILIES:
        assert reg.components(family), family


def test_params_coerce_and_validate():
    lr = get_registry().get("optimizer", "sgd").param("lr")
    assert lr.coerce("0.5") == 0.5
    with pytest.raises(ValueError, match=r"optimizer.lr=0.0 is out of range"):
        lr.coerce("0", owner="optimizer")
    with pytest.raises(ValueError, match="not a valid float"):
        lr.coerce("fast", owner="optimizer")
    p = Param("k", 3, low=1)
    with pytest.raises(ValueError, match="not a valid int"):
        p.coerce("2.5")


def _broken_by(hook, hookname: str, distribution: str):
    """The registry with ``hook`` as distribution ``distribution``'s ``hookname``, and that
    distribution's one broken entry."""
    reg = Registry.from_entry_points(extra_plugins=[(_plugin(**{hookname: hook}), distribution, "1")])
    (broken,) = [b for b in reg.broken if b.distribution == distribution]
    return reg, broken


def test_an_out_of_range_default_names_the_component_its_family_and_the_parameter():
    def hook(register):
        register(name="fine", factory=lambda ctx, lr: None, description="d", params=[Param("lr", 0.1, low=0.0)])
        register(name="toobig", factory=lambda ctx, lr: None, description="d",
                 params=[Param("lr", 5.0, low=0.0, high=1.0)])

    reg, broken = _broken_by(hook, "suite_register_optimizers", "range-pkg")
    assert broken.error == ("suite.errors.RegistrationError: optimizer 'toobig' from range-pkg: its default "
                            "optimizer.lr=5.0 is out of range: must be in [0, 1]; move the default into the range or "
                            "widen the range")
    assert "fine" in reg.names("optimizer") and "toobig" not in reg.names("optimizer")


def test_the_description_limit_is_enforced_at_registration():
    from suite.registry import DESCRIPTION_LIMIT

    def hook(register):
        register(name="exact", factory=lambda ctx: None, description="x" * DESCRIPTION_LIMIT)
        register(name="wordy", factory=lambda ctx: None, description="y" * (DESCRIPTION_LIMIT + 1))

    reg, broken = _broken_by(hook, "suite_register_averagers", "wordy-pkg")
    assert broken.error == ("suite.errors.RegistrationError: averager 'wordy' from wordy-pkg: its description has "
                            "121 characters; give a one-line description of at most 120 (suite list shows it on one "
                            "line)")
    assert "exact" in reg.names("averager") and "wordy" not in reg.names("averager")
