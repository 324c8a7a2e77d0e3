"""sgd-suite: a benchmark suite for stochastic-gradient methods.

Public API for plugin authors::

    from suite import hookimpl, Param, Space, Problem, BuildContext

Plugins implement one or more of the hooks in :mod:`suite.hookspecs` and are announced
through the ``suite.plugins`` entry-point group.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import pluggy

PROJECT_NAME = "suite"
ENTRY_POINT_GROUP = "suite.plugins"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for plugin hook implementations: ``@hookimpl def suite_register_optimizers(register)``."""

try:
    __version__ = version("sgd-suite")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from suite.params import DATA_SEED, Param, Space  # noqa: E402

if TYPE_CHECKING:
    from suite.context import BuildContext
    from suite.problem import Problem

_TORCH_NAMES = {"BuildContext": "context", "Problem": "problem"}  # name -> its module in this package


# The notebook API (suite.run, suite.tune, suite.results: DataFrames), imported on first use so that
# ``import suite`` stays light for plugins.
_NOTEBOOK_API = ("run", "tune", "results")


def __getattr__(name: str) -> Any:
    """``BuildContext`` and ``Problem`` need torch, and the notebook API MLflow and pandas: they
    are imported on first use, so that ``suite --help`` and ``suite list`` start without them."""
    if name in _TORCH_NAMES:
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
        globals()[name] = value
        return value
    if name in _NOTEBOOK_API:
        from suite.api import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'suite' has no attribute {name!r}")


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
    "results",
    "run",
    "tune",
]
