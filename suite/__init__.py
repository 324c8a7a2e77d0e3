"""sgd-suite: a benchmark suite for stochastic-gradient methods.

Public API for plugin authors::

    from suite import hookimpl, Param, Space, Problem, BuildContext

Plugins implement one or more of the hooks in :mod:`suite.hookspecs` and are announced
through the ``suite.plugins`` entry-point group.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pluggy

PROJECT_NAME = "suite"
ENTRY_POINT_GROUP = "suite.plugins"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for plugin hook implementations: ``@hookimpl def suite_register_optimizers(register)``."""

try:
    __version__ = version("sgd-suite")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from suite.context import BuildContext  # noqa: E402
from suite.params import DATA_SEED, Param, Space  # noqa: E402
from suite.problem import Problem  # noqa: E402

__all__ = [
    "BuildContext",
    "DATA_SEED",
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "Param",
    "Problem",
    "Space",
    "__version__",
    "hookimpl",
]
