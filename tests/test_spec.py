"""RunSpec: resolution, validation, identity."""

from __future__ import annotations

import pytest

from suite.errors import SpecError, SuiteError
from suite.registry import get_registry
from suite.specs.spec import RunSpec, parse_assignment, resolve_spec


def _spec(**kw):
    args = dict(batch_size=32, epochs=5, seed=1)
    args.update(kw)
    return resolve_spec(get_registry(), **args)


def test_defaults_are_filled_and_hash_is_stable():
    a = _spec()
    b = _spec(overrides={"optimizer.lr": "0.01"})  # the default, given explicitly
    assert a == b and a.hash == b.hash
    assert a.param("optimizer.momentum") == 0.0
    assert a.param("problem.n") == 1000
    assert _spec(seed=2).hash != a.hash


def test_json_round_trip():
    s = _spec(components={"scheduler": "cosine", "averager": "ema"}, overrides={"averager.decay": "0.9"})
    again = RunSpec.from_json(s.to_json())
    assert again == s and again.hash == s.hash and hash(again) == hash(s)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(overrides={"optimizer.lr": "0"}), "optimizer.lr=0.0 is out of range"),
        (dict(overrides={"optimizer.momentum": "1"}), r"optimizer.momentum=1.0 is out of range: must be in \[0, 1\)"),
        (dict(batch_size=0), "batch-size=0 is out of range"),
        (dict(epochs=0), "epochs=0 is out of range"),
        (dict(epochs=None, steps=0), "steps=0 is out of range"),
        (dict(epochs=None), "exactly one budget"),
    ],
)
def test_out_of_range(kw, match):
    with pytest.raises(SuiteError, match=match):
        _spec(**kw)


@pytest.mark.parametrize("text", ["optimizer.lr", "lr=0.1", "optimiser.lr=0.1", "optimizer.=1", "optimizer.lr="])
def test_malformed_set(text):
    with pytest.raises(SpecError, match="malformed --set"):
        parse_assignment(text)
