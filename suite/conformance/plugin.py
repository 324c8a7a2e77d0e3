"""pytest plugin of the conformance kit: ``pytest --suite-plugin=DIST``."""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKS = str(Path(__file__).with_name("checks.py"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sgd-suite conformance kit")
    group.addoption(
        "--suite-plugin", action="append", default=[], metavar="DIST",
        help="run sgd-suite's conformance checks on every component of distribution DIST (repeatable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    dists = config.getoption("suite_plugin", default=[])
    if not dists:
        return
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args = [*config.args, CHECKS]  # the author's own tests run too
    else:
        config.args = [CHECKS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "distribution" in metafunc.fixturenames:
        dists = metafunc.config.getoption("suite_plugin")
        metafunc.parametrize("distribution", dists, ids=dists)
        return
    if "component" not in metafunc.fixturenames:
        return
    from suite.conformance import components_of
    from suite.registry import get_registry

    registry = get_registry()
    comps = []
    for dist in metafunc.config.getoption("suite_plugin"):
        found = components_of(dist, registry)
        if not found:
            dists = sorted({c.distribution for c in registry.components()})
            broken = [f"{b.distribution} ({b.error})" for b in registry.broken]
            raise pytest.UsageError(
                f"--suite-plugin={dist}: no components registered by that distribution; "
                f"plugin distributions found: {', '.join(dists)}"
                + (f"; broken plugins: {'; '.join(broken)}" if broken else "")
            )
        comps.extend(found)
    family_filter = getattr(metafunc.function, "families", None)
    if family_filter:
        comps = [c for c in comps if c.family in family_filter]
    metafunc.parametrize("component", comps, ids=[f"{c.family}:{c.name}" for c in comps])
