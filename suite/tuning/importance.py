"""Optuna's hyperparameter importances, imported without scikit-learn.

``optuna.importance`` imports the module of its fANOVA evaluator, which imports scikit-learn's
``RandomForestRegressor`` at import time (inside Optuna's ``try_import``): 1.5 s measured here with
``python -X importtime``, a sixth of the default ``suite tune --problem logistic``, paid by every
process that draws a study's importance plot. The suite's plot asks for Optuna's PED-ANOVA
evaluator (:func:`evaluator`, Optuna's own default), which needs numpy only.

:func:`load` imports ``optuna.importance`` with ``sklearn`` marked absent in ``sys.modules`` for
the length of that one import, so Optuna's ``try_import`` records it missing, then takes the mark
away: scikit-learn stays importable for everything else (only Optuna's fANOVA evaluator, which the
suite does not use, reports it missing in this process). Checked, never assumed: if that import
fails with the mark (an Optuna that needs scikit-learn outright), what it left half-imported is
dropped and ``optuna.importance`` is imported as usual. ``SUITE_EAGER_SKLEARN=1`` imports it as
usual (docs/speed.md).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

MODULE = "optuna.importance"
BLOCKED = "sklearn"
EAGER_ENV = "SUITE_EAGER_SKLEARN"


def load() -> types.ModuleType:
    """``optuna.importance``, imported without scikit-learn where that works (see the module docstring)."""
    if MODULE in sys.modules or BLOCKED in sys.modules or os.environ.get(EAGER_ENV, "").strip() == "1":
        return importlib.import_module(MODULE)
    try:
        with _absent(BLOCKED):
            return importlib.import_module(MODULE)
    except ImportError:  # this Optuna needs scikit-learn at import time: the ordinary import
        _forget(MODULE)
        return importlib.import_module(MODULE)


def evaluator() -> Any:
    """Optuna's PED-ANOVA importance evaluator (numpy only), from :func:`load`'s module."""
    return load().PedAnovaImportanceEvaluator()


@contextlib.contextmanager
def _absent(name: str) -> Iterator[None]:
    """``import name`` (and its submodules) raises ImportError inside the block."""
    sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(name, False) is None:
            del sys.modules[name]


def _forget(name: str) -> None:
    """Drop ``name`` and its submodules from ``sys.modules`` (a failed import's leftovers)."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
