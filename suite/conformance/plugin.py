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
    _check_installed(dists)
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
        comps.extend(components_of(dist, registry))  # none: test_distribution_loads_cleanly says why
    family_filter = getattr(metafunc.function, "families", None)
    if family_filter:
        comps = [c for c in comps if c.family in family_filter]
    metafunc.parametrize("component", comps, ids=[f"{c.family}:{c.name}" for c in comps])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Checks that apply to no component of the distributions (a problem check where there is
    no problem) are left out, rather than skipped as an empty parameter set."""
    if not config.getoption("suite_plugin", default=[]):
        return
    from suite.registry import Component

    idle = [item for item in items if "component" in getattr(item, "fixturenames", ())
            and not isinstance(getattr(getattr(item, "callspec", None), "params", {}).get("component"), Component)]
    if idle:
        config.hook.pytest_deselected(items=idle)
        items[:] = [item for item in items if item not in idle]


def _check_installed(dists: list[str]) -> None:
    """A distribution that registered nothing, failed to load nothing and conflicts on no name
    is not installed here: a usage error (one line) naming the distributions that are."""
    from suite.conformance import normalise
    from suite.registry import get_registry

    registry = get_registry()
    known = {c.distribution for c in registry.components()} | {b.distribution for b in registry.broken}
    known |= {d for ds in registry.conflicts.values() for d in ds}
    for dist in dists:
        if normalise(dist) not in {normalise(d) for d in known}:
            raise pytest.UsageError(
                f"--suite-plugin={dist}: no components registered by that distribution (is it installed in this "
                f"environment?); plugin distributions found: {', '.join(sorted(known))}")
